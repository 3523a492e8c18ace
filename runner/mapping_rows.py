"""Mapping rules as table rows, for the mapping page's editor, and back again without loss.

A row per rule, every cell text or a tick box:

| column      | holds                                                                  | example                      |
|-------------|------------------------------------------------------------------------|------------------------------|
| target      | the dotted path in the payload we send                                 | `billToContact.firstName`    |
| source      | source path(s), first non-empty wins; a JSON list or string also works | `firstName, companyName`     |
| value       | a constant instead of a source                                         | `1`, `Posted`, `"007"`       |
| transform   | the steps, in order, separated by `|` (see below)                      | `trim | upper`               |
| default     | used when the result is empty                                          | `Accounts`                   |
| required / create_only / flows_back | tick boxes                                     |                              |
| each        | for a list rule: the source list mapped element by element             | `item.items`                 |
| fields      | a list rule's own rules, as rows (the page edits them in a nested table) |                            |

`value`, `default` and step arguments read as JSON when they parse as JSON (`1`, `true`, `null`,
`{"a": 1}`, `"1"` for the text 1) and as plain text otherwise (`Posted`).

A transform step is written

    trim                                  a step without parameters
    date:%Y-%m-%d                         a step and its main parameter (the first required one, else the first)
    lookup {"table": "x", "fallback": "keep"}   a step and every parameter as a JSON object
    {"name": "lookup", "table": "x"}      the step object exactly as the spec holds it

and a cell starting with `[` is the whole transform as JSON. Text that must keep surrounding spaces or
holds `|`, quotes or brackets is written as a JSON string: `concat:", "`.

Lossless: `rows_to_rules(rules_to_rows(rules), base=rules) == rules` for any rules with text targets and
true/false flags (every spec `validate_spec` accepts, and most it refuses). Without `base` the
result means the same (`semantic(...)` is equal) but takes the compact forms (`"trim"` rather than
`[{"name": "trim"}]`); with it, every cell whose meaning did not change keeps the base rule's form, so
saving an edit changes only what the person changed.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from runner.mapping_transforms import TRANSFORMS, steps

TEXT_COLUMNS = ("target", "source", "value", "transform", "default", "each")
FLAG_COLUMNS = ("required", "create_only", "flows_back")
COLUMNS = ("target", "source", "value", "transform", "default", *FLAG_COLUMNS, "each", "fields")
# The order keys take in a rule made from a row (the order the built-in mappings write them in).
KEY_ORDER = ("target", "each", "source", "value", "transform", "default", *FLAG_COLUMNS, "fields")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
STEP = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?::(?P<arg>.*)|(?P<params>\{.*\}))?", re.DOTALL)
UNSAFE_BARE = frozenset('|"{}[]')  # characters that make text need JSON quotes in a cell
SEPARATOR = " | "


class CellError(ValueError):
    """One cell that cannot be read; the caller names the row and the target."""


# --- rules → rows ------------------------------------------------------------------------------------
def rules_to_rows(rules: Sequence[Any]) -> list[dict[str, Any]]:
    """A row per rule (a list rule's own rules as rows in its `fields`)."""
    return [rule_to_row(rule) for rule in rules]


def rule_to_row(rule: Any) -> dict[str, Any]:
    rule = rule if isinstance(rule, Mapping) else {}
    row: dict[str, Any] = {
        "target": rule["target"] if isinstance(rule.get("target"), str) else "",
        "source": format_source(rule["source"]) if "source" in rule else "",
        "value": format_constant(rule["value"]) if "value" in rule else "",
        "transform": format_steps(rule.get("transform")),
        "default": format_constant(rule["default"]) if "default" in rule else "",
    }
    row.update({flag: bool(rule.get(flag)) for flag in FLAG_COLUMNS})
    row["each"] = format_source(rule["each"]) if "each" in rule else ""
    row["fields"] = rules_to_rows(rule["fields"]) if isinstance(rule.get("fields"), list) else None
    return row


def format_source(source: Any) -> str:
    """`"a"` → `a`; `["a", "b"]` → `a, b`; anything a comma list cannot hold → JSON."""
    paths = [source] if isinstance(source, str) else source
    if isinstance(paths, list) and paths and all(isinstance(p, str) and _bare_path(p) for p in paths):
        return ", ".join(paths)
    return _dumps(source)


def format_constant(value: Any) -> str:
    """Text as itself when it cannot be mistaken for JSON, everything else as JSON."""
    if isinstance(value, str) and _bare_text(value) and _strict_json(value) is _NOT_JSON:
        return value
    return _dumps(value)


def format_steps(transform: Any) -> str:
    """A rule's `transform` in the step syntax (see the module docstring)."""
    if transform is None:
        return ""
    items = transform if isinstance(transform, list) else [transform]
    if not all(isinstance(item, str | dict) for item in items):
        return _dumps(transform)
    return SEPARATOR.join(_format_step(item) for item in items)


def _format_step(step: str | dict[str, Any]) -> str:
    if isinstance(step, str):
        return step if NAME.fullmatch(step) else _dumps({"name": step})
    name = step.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return _dumps(step)
    params = {k: v for k, v in step.items() if k != "name"}
    if not params:
        return name
    main = main_param(name)
    if main is not None and list(params) == [main]:
        arg = _format_arg(name, main, params[main])
        if arg:
            return f"{name}:{arg}"
    return f"{name} {_dumps(params)}"


def _format_arg(name: str, param: str, value: Any) -> str:
    if _text_param(name, param):
        return value if isinstance(value, str) and _bare_text(value) else _dumps(value)
    return format_constant(value)


# --- rows → rules ------------------------------------------------------------------------------------
def rows_to_rules(
    rows: Sequence[Mapping[str, Any]], *, base: Sequence[Any] | None = None, where: str = ""
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rules the rows describe, and a problem per cell that cannot be read ("row 3 · name: ...").

    Blank rows (a row added and left empty) are skipped; a row without a target is a problem. With
    `base` (the rules the rows were made from), unchanged cells keep the base rule's exact form.
    """
    rules: list[dict[str, Any]] = []
    problems: list[str] = []
    by_target = {
        r["target"]: r for r in base or [] if isinstance(r, Mapping) and isinstance(r.get("target"), str)
    }
    for index, raw in enumerate(rows):
        row = clean_row(raw)
        label = f"{where}row {index + 1}"
        if _blank(row):
            continue
        if not row["target"]:
            problems.append(f"{label}: give the target field this rule fills")
            continue
        label = f"{label} · {row['target']}"
        base_rule = by_target.get(row["target"])
        rule, cell_problems = _row_to_rule(row, label, base_rule)
        problems.extend(cell_problems)
        rules.append(_restore(rule, base_rule))
    return rules, problems


def clean_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the editor hands it back (None, NaN, numbers typed in text cells) made regular."""
    clean: dict[str, Any] = {}
    for column in TEXT_COLUMNS:
        value = row.get(column)
        clean[column] = "" if _missing(value) else str(value).strip()
    for flag in FLAG_COLUMNS:
        value = row.get(flag)
        clean[flag] = False if _missing(value) else bool(value)
    fields = row.get("fields")
    clean["fields"] = list(fields) if isinstance(fields, list | tuple) else None
    return clean


def _row_to_rule(
    row: dict[str, Any], label: str, base: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    rule: dict[str, Any] = {"target": row["target"]}
    problems: list[str] = []
    readers = {
        "each": parse_source,
        "source": parse_source,
        "value": parse_constant,
        "transform": parse_steps,
        "default": parse_constant,
    }
    for column, read in readers.items():
        if row[column]:
            try:
                rule[column] = read(row[column])
            except CellError as exc:
                problems.append(f"{label}: {column}: {exc}")
    rule.update({flag: True for flag in FLAG_COLUMNS if row[flag]})
    if row["each"] or row["fields"] is not None:
        base_fields = base.get("fields") if base is not None else None
        nested, nested_problems = rows_to_rules(
            row["fields"] or [],
            base=base_fields if isinstance(base_fields, list) else None,
            where=f"{row['target']}[] ",
        )
        rule["fields"] = nested
        problems.extend(nested_problems)
    return rule, problems


def parse_source(text: str) -> str | list[str] | Any:
    """`a` → `"a"`; `a, b` → `["a", "b"]`; a JSON string or list as written."""
    text = text.strip()
    if text[:1] in ('"', "["):
        return _loads(text, "a path, paths separated by commas, or a JSON list of paths")
    paths = [part.strip() for part in text.split(",") if part.strip()]
    return paths[0] if len(paths) == 1 else paths


def parse_constant(text: str) -> Any:
    """JSON when the text is JSON, else the text itself."""
    found = _strict_json(text)
    if found is not _NOT_JSON:
        return found
    if text[:1] in ('"', "{", "["):
        _loads(text, "JSON (it starts like JSON), or plain text without quotes and brackets")
    return text


def parse_steps(text: str) -> Any:
    """The step syntax (see the module docstring) to a rule's `transform`: one step without parameters
    → its name; otherwise a list of names and step objects."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("["):
        return _loads(text, "a JSON list of steps")
    parsed = [_parse_step(part.strip(), index) for index, part in enumerate(_split_steps(text), start=1)]
    return parsed[0] if len(parsed) == 1 and isinstance(parsed[0], str) else parsed


def _parse_step(text: str, index: int) -> str | dict[str, Any]:
    if not text:
        raise CellError(f"step {index} is empty (two '|' in a row?)")
    if text.startswith("{"):
        step = _loads(text, 'a step object such as {"name": "trim"}')
        if not isinstance(step, dict):
            raise CellError(f"step {index} must be a JSON object")
        return step
    match = STEP.fullmatch(text)
    if match is None:
        raise CellError(
            f"cannot read step {index} {text!r}: write a name (trim), name:argument (date:%Y-%m-%d) or "
            'name {"parameter": value}'
        )
    name, arg, params = match.group("name"), match.group("arg"), match.group("params")
    if params is not None:
        extra = _loads(params, "a JSON object of parameters")
        if not isinstance(extra, dict) or "name" in extra:
            raise CellError(f"step {index}: the parameters of {name} must be a JSON object without 'name'")
        return {"name": name, **extra}
    if arg is None:
        return name
    if name not in TRANSFORMS:
        raise CellError(f"unknown transform {name!r} (known: {', '.join(TRANSFORMS)})")
    main = main_param(name)
    if main is None:
        raise CellError(f"{name} takes no argument (write just {name})")
    arg = arg.strip()
    if not arg:
        raise CellError(f"{name}: give its {main} after the colon, or drop the colon")
    if _text_param(name, main):
        value = _loads(arg, "a JSON string") if arg[:1] in ('"', "{", "[") else arg
    else:
        value = parse_constant(arg)
    return {"name": name, main: value}


def _split_steps(text: str) -> list[str]:
    """Split on `|` outside JSON strings, objects and lists."""
    parts, current, depth, in_string, escaped = [], [], 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if in_string or depth != 0:
        raise CellError("a quote or bracket is not closed")
    parts.append("".join(current))
    return parts


# --- meaning -----------------------------------------------------------------------------------------
def semantic(rules: Any) -> Any:
    """Rules reduced to what they mean: source lists, step lists of objects, flags only when set.
    Two rule lists with equal `semantic` map every record the same way."""
    if not isinstance(rules, list):
        return rules
    return [_semantic_rule(rule) for rule in rules]


def _semantic_rule(rule: Any) -> Any:
    if not isinstance(rule, Mapping):
        return rule
    out: dict[str, Any] = {}
    for key, value in rule.items():
        normal = _normal(key, value)
        if normal is not _ABSENT:
            out[key] = normal
    return out


def _normal(key: str, value: Any) -> Any:
    if key in FLAG_COLUMNS:
        return True if value is True else _ABSENT if value is False or value is None else value
    if key == "source":
        return [value] if isinstance(value, str) else value
    if key == "transform":
        normal = steps(value)
        return normal or _ABSENT
    if key == "fields":
        return semantic(value)
    return _canonical_json(value)


def _restore(rule: dict[str, Any], base: Mapping[str, Any] | None) -> dict[str, Any]:
    """`rule` with every key whose meaning equals the base rule's in the base rule's form, keys in the
    base's order (new keys after)."""
    if base is None:
        return {key: rule[key] for key in _ordered(rule)}
    out: dict[str, Any] = {}
    for key in [*base.keys(), *(k for k in _ordered(rule) if k not in base)]:
        mine = _normal(key, rule[key]) if key in rule else _ABSENT
        theirs = _normal(key, base[key]) if key in base else _ABSENT
        if mine == theirs and key in base:
            out[key] = copy.deepcopy(base[key])
        elif key in rule:
            out[key] = rule[key]
    return out


def _ordered(rule: Mapping[str, Any]) -> list[str]:
    return sorted(rule, key=lambda k: KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER))


# --- transform parameters ----------------------------------------------------------------------------
def main_param(name: str) -> str | None:
    """The parameter `name:argument` sets: the transform's first required parameter, else its first."""
    known = TRANSFORMS.get(name)
    if known is None or not known.params:
        return None
    return next((p for p, spec in known.params.items() if spec.required), next(iter(known.params)))


def step_syntax(name: str) -> str:
    """How a step is written, for the page's reference table: `trim`, `date:<format>`."""
    main = main_param(name)
    return name if main is None else f"{name}:<{main}>"


def _text_param(name: str, param: str) -> bool:
    known = TRANSFORMS.get(name)
    return known is not None and param in known.params and known.params[param].kind is str


# --- small helpers -----------------------------------------------------------------------------------
class _Sentinel:
    pass


_NOT_JSON: Any = _Sentinel()
_ABSENT: Any = _Sentinel()


def _strict_json(text: str) -> Any:
    """The JSON value of `text`, or _NOT_JSON (NaN and Infinity are text, not numbers)."""

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        return _NOT_JSON


def _loads(text: str, expected: str) -> Any:
    found = _strict_json(text)
    if found is _NOT_JSON:
        raise CellError(f"cannot read {text!r}: expected {expected}")
    return found


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _canonical_json(value: Any) -> Any:
    # 1 and True, 1 and 1.0 differ in a payload; compare them by their JSON text.
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _bare_text(text: str) -> bool:
    return bool(text) and text == text.strip() and not (UNSAFE_BARE & set(text))


def _bare_path(path: str) -> bool:
    return _bare_text(path) and "," not in path


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _blank(row: Mapping[str, Any]) -> bool:
    return (
        not any(row[c] for c in TEXT_COLUMNS) and not any(row[f] for f in FLAG_COLUMNS) and not row["fields"]
    )
