"""The transform steps a mapping rule can apply, declared once as data in `TRANSFORMS`.

A rule's `"transform"` is a step or a list of steps run in order; a step is a name (`"trim"`) or a dict
naming the transform and giving its parameters (`{"name": "date", "format": "%Y-%m-%d"}`).

Most steps work on one value: they leave an empty value alone (the rule's `default` and `required`
deal with emptiness) and, given a list, apply to each element. `default` fills an empty value and
`concat` joins a list, so both see the value whole.

A step that cannot convert a value raises `MappingError` naming the target field and the value, never
anything else: a bad record is the record's problem (the job fails and can be replayed), not a bug.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

DATE_FORMAT = "%Y-%m-%d"  # Zuora's date format, the default output of the date step
# NetSuite shows dates as M/D/YYYY and sends SuiteQL date-times as "YYYY-MM-DD HH:MM:SS" (which
# fromisoformat reads); these are tried after ISO 8601.
NETSUITE_DATE_FORMATS = ("%m/%d/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
INTEGER = re.compile(r"[+-]?\d+")
SHOWN = 60  # characters of a value shown in errors and preview notes


class MappingError(ValueError):
    """The mapping cannot produce a valid payload; `field` names the target field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class StepContext:
    """What a step needs besides its value: the field it fills (for errors), the lookup tables (None
    when the caller gave none) and, in a preview, a list collecting what each step did."""

    field: str
    lookups: Mapping[str, Mapping[str, Any]] | None = None
    notes: list[str] | None = None

    def note(self, text: str) -> None:
        if self.notes is not None:
            self.notes.append(text)


@dataclass(frozen=True)
class Param:
    kind: type | tuple[type, ...] | None  # None: any JSON value
    required: bool = False


@dataclass(frozen=True)
class Transform:
    """One named step: what it does (for the mapping page), its parameters, and how it runs."""

    name: str
    help: str
    run: Callable[[Any, Mapping[str, Any], StepContext], Any]
    params: Mapping[str, Param] = field(default_factory=dict)
    per_value: bool = True  # skips empty values and maps over lists; False: sees the value whole


def steps(transform: Any) -> list[Any]:
    """A rule's `transform` as a list of steps, names made dicts (`"trim"` → `[{"name": "trim"}]`); a
    malformed step is passed through for `step_problems` to report."""
    if transform is None:
        return []
    items = transform if isinstance(transform, list) else [transform]
    return [{"name": item} if isinstance(item, str) else item for item in items]


def step_problems(transform: Any, lookups: Mapping[str, Any] | None = None) -> list[str]:
    """What is wrong with a rule's `transform` (each message without the field name)."""
    problems: list[str] = []
    for step in steps(transform):
        if not isinstance(step, Mapping):
            problems.append(f"a transform step is a name or an object with a 'name', not {_show(step)}")
            continue
        name = step.get("name")
        known = TRANSFORMS.get(name) if isinstance(name, str) else None
        if name is None:
            problems.append(f"a transform step needs a 'name' (one of: {', '.join(TRANSFORMS)})")
            continue
        if known is None:
            problems.append(
                f"unknown transform {_show(name)}{_suggest(name, TRANSFORMS)} (known: {', '.join(TRANSFORMS)})"
            )
            continue
        for key in step:
            if key != "name" and key not in known.params:
                listed = ", ".join(known.params) or "none"
                problems.append(
                    f"{name}: unknown parameter {key!r}{_suggest(key, known.params)} (known: {listed})"
                )
        for key, param in known.params.items():
            if key not in step:
                if param.required:
                    problems.append(f"{name}: parameter {key!r} is required")
            elif param.kind is not None and not isinstance(step[key], param.kind):
                problems.append(
                    f"{name}: parameter {key!r} must be {_kind(param.kind)}, not {_show(step[key])}"
                )
        if name == "date" and isinstance(step.get("format", DATE_FORMAT), str):
            try:
                datetime(2000, 1, 31).strftime(step.get("format", DATE_FORMAT))
            except ValueError as exc:
                problems.append(f"date: format {step['format']!r} is not a strftime format ({exc})")
        table = step.get("table") if name == "lookup" else None
        if lookups is not None and isinstance(table, str) and table not in lookups:
            problems.append(_missing_table(table, lookups))
    return problems


def run_steps(transform: Any, value: Any, ctx: StepContext) -> Any:
    """Run a rule's steps over `value` in order; raises MappingError naming `ctx.field`."""
    for step in steps(transform):
        name = step.get("name") if isinstance(step, Mapping) else None
        known = TRANSFORMS.get(name) if isinstance(name, str) else None
        if known is None:  # only reached with a spec nobody validated
            raise MappingError(ctx.field, f"unknown transform {_show(step)} (known: {', '.join(TRANSFORMS)})")
        if not known.per_value:
            value = known.run(value, step, ctx)
        elif isinstance(value, list):
            value = [item if is_empty(item) else known.run(item, step, ctx) for item in value]
        elif not is_empty(value):
            value = known.run(value, step, ctx)
    return value


def is_empty(value: Any) -> bool:
    """None, a blank string, an empty list or object: what a rule treats as "no value"."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, list | dict) and not value)


def show(value: Any) -> str:
    """A value as a person reads it in an error or a note: strings bare, the rest as JSON, cut short."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def _text(method: Callable[[str], str]) -> Callable[[Any, Mapping[str, Any], StepContext], Any]:
    def run(value: Any, _step: Mapping[str, Any], ctx: StepContext) -> Any:
        return method(value) if isinstance(value, str) else value

    return run


def _first_word(value: Any, _step: Mapping[str, Any], ctx: StepContext) -> Any:
    """The text up to the first space: NetSuite shows a numbered GL account as "4000 Consulting Income"."""
    return value.strip().split(" ", 1)[0] if isinstance(value, str) else value


def _date(value: Any, step: Mapping[str, Any], ctx: StepContext) -> str:
    fmt = step.get("format", DATE_FORMAT)
    # No timezone conversion: the date is the calendar date the source wrote (NetSuite dates are the
    # user's own), so "2024-01-05T23:30:00-08:00" stays January 5th.
    parsed = value if isinstance(value, date) else _parse_date(value)
    if parsed is None:
        raise MappingError(ctx.field, f"cannot read {_show(value)} as a date (expected ISO 8601 or M/D/YYYY)")
    formatted = parsed.strftime(fmt)
    ctx.note(f"date: {show(value)} → {formatted}")
    return formatted


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in NETSUITE_DATE_FORMATS:
        try:
            return datetime.strptime(text.upper(), fmt)
        except ValueError:
            continue
    return None


def _number(value: Any, _step: Mapping[str, Any], ctx: StepContext) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MappingError(ctx.field, f"{_show(value)} is not a number")
    if isinstance(value, int | float):
        number: int | float = value
    else:
        text = value.strip()
        if not NUMBER.fullmatch(text):
            raise MappingError(ctx.field, f"{_show(value)} is not a number")
        try:
            number = int(text) if INTEGER.fullmatch(text) else float(text)
        except ValueError:  # Python refuses integers of more than 4,300 digits
            raise MappingError(ctx.field, f"{_show(value)} is too long to be a number") from None
        ctx.note(f"number: {show(value)} → {number}")
    if isinstance(number, float) and not math.isfinite(number):
        raise MappingError(ctx.field, f"{_show(value)} is not a finite number")
    return number


def _value_map(value: Any, step: Mapping[str, Any], ctx: StepContext) -> Any:
    return _translate(value, step, step["map"], ctx, what="value_map", missing="is not in the value map")


def _lookup(value: Any, step: Mapping[str, Any], ctx: StepContext) -> Any:
    table = step["table"]
    if ctx.lookups is None or table not in ctx.lookups:
        raise MappingError(ctx.field, _missing_table(table, ctx.lookups or {}))
    rows = ctx.lookups[table]
    if "column" in step:
        column = step["column"]
        rows = {key: row[column] for key, row in rows.items() if isinstance(row, Mapping) and column in row}
    missing = f"is not in lookup table {table!r}" + (
        f" (column {step['column']!r})" if "column" in step else ""
    )
    return _translate(value, step, rows, ctx, what=f"lookup {table}", missing=missing)


def _translate(
    value: Any,
    step: Mapping[str, Any],
    table: Mapping[Any, Any],
    ctx: StepContext,
    *,
    what: str,
    missing: str,
) -> Any:
    found, result = find(table, value)
    if found:
        ctx.note(f"{what}: {show(value)} → {show(result)}")
        return copy.deepcopy(result)
    if "fallback" not in step:
        known = ", ".join(show(key) for key in list(table)[:10]) + (", …" if len(table) > 10 else "")
        raise MappingError(ctx.field, f"{_show(value)} {missing} (known: {known or 'none'})")
    if step["fallback"] == "keep":
        ctx.note(f"{what}: {show(value)} not found, kept")
        return value
    ctx.note(f"{what}: {show(value)} not found, fallback {show(step['fallback'])}")
    return copy.deepcopy(step["fallback"])


def find(table: Mapping[Any, Any], value: Any) -> tuple[bool, Any]:
    """`table[value]` comparing keys as strings (4000, 4000.0 and "4000" are one key); when nothing
    matches exactly, a key equal but for case and surrounding spaces ("us dollar " finds "US Dollar")."""
    key = _key(value)
    if key in table:
        return True, table[key]
    folded = key.strip().casefold()
    for candidate, result in table.items():
        if _key(candidate).strip().casefold() == folded:
            return True, result
    return False, None


def _key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else show(value)


def _concat(value: Any, step: Mapping[str, Any], ctx: StepContext) -> Any:
    if not isinstance(value, list):
        return value
    parts = [item for item in value if not is_empty(item)]
    if any(isinstance(item, Mapping | list) for item in parts):
        raise MappingError(ctx.field, f"concat joins text and numbers, not {_show(value)}")
    joined = step.get("separator", " ").join(_key(item) for item in parts)
    ctx.note(f"concat: {len(parts)} values")
    return joined


def _default(value: Any, step: Mapping[str, Any], ctx: StepContext) -> Any:
    if not is_empty(value):
        return value
    ctx.note("default used: source empty")
    return copy.deepcopy(step["value"])


def _missing_table(table: str, lookups: Mapping[str, Any]) -> str:
    return f"lookup table {table!r} does not exist (known: {', '.join(sorted(lookups)) or 'none'})"


def _suggest(word: Any, choices: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1) if isinstance(word, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {str: "text", dict: "an object", bool: "true or false"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _show(value: Any) -> str:
    return repr(show(value)) if isinstance(value, str) else show(value)


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("trim", "remove spaces around text", _text(str.strip)),
        Transform("upper", "text in capitals", _text(str.upper)),
        Transform("lower", "text in small letters", _text(str.lower)),
        Transform(
            "date",
            "read an ISO 8601 or NetSuite (M/D/YYYY) date and write it with a strftime `format`",
            _date,
            {"format": Param(str)},
        ),
        Transform(
            "first_word",
            'the text up to its first space ("4000 Consulting Income" → "4000", an account number)',
            _first_word,
        ),
        Transform("number", 'numeric text to a number ("12.50" → 12.5, "3" → 3)', _number),
        Transform(
            "value_map",
            "replace a value by its entry in `map`; unmapped values fail unless `fallback` is given "
            '(`"keep"` keeps the value)',
            _value_map,
            {"map": Param(dict, required=True), "fallback": Param(None)},
        ),
        Transform(
            "lookup",
            "replace a value by its row in the lookup `table` (or the row's `column`); missing rows fail "
            "unless `fallback` is given",
            _lookup,
            {"table": Param(str, required=True), "column": Param(str), "fallback": Param(None)},
        ),
        Transform(
            "concat",
            "join every non-empty source with `separator` (a space unless given)",
            _concat,
            {"separator": Param(str)},
            per_value=False,
        ),
        Transform(
            "default",
            "use `value` when the value is empty",
            _default,
            {"value": Param(None, required=True)},
            per_value=False,
        ),
    )
}
