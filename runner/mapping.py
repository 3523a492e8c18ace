"""Field mappings as data: each target field comes from a source path, a constant, or a transform.

A spec is `{"fields": [rule, ...]}`; a rule is

    {"target": "billToContact.firstName",          # dotted path in the payload we send
     "source": ["firstName", "companyName"],       # dotted path(s) in the source record; first non-empty wins
     "value": 1,                                   # or a constant instead of a source
     "transform": "trim",                          # optional: a step or a list of steps, run in order
     "default": "Accounts",                        # used when the result is empty
     "required": true,                             # an empty result is an error naming the field
     "create_only": true,                          # sent when creating, left out of updates
     "flows_back": true}                           # the Zoho → NetSuite write-back may send this field back

A step is a name (`"trim"`) or an object naming a transform of `TRANSFORMS` with its parameters:
`{"name": "date", "format": "%Y-%m-%d"}`, `{"name": "value_map", "map": {...}, "fallback": "keep"}`,
`{"name": "lookup", "table": "gl_account_charge"}`, `{"name": "number"}`, `{"name": "default", "value": X}`,
`{"name": "concat", "separator": " "}` (with concat, a list `source` gives every non-empty value, joined).

A rule with `each` maps every element of a list into a list of objects:

    {"target": "invoiceItems", "each": "item.items", "required": true,  # required: at least one element
     "fields": [{"target": "chargeAmount", "source": "amount", "transform": {"name": "number"}},
                {"target": "serviceStartDate", "source": "$.tranDate"}]}  # "$." reads the whole record

Errors name the field as the payload has it: `invoiceItems[2].chargeAmount` (elements count from 0).
Source paths match keys case-insensitively, because NetSuite's REST responses mix `isInactive` and
`isinactive` (shared/api/netsuite.md §3), and a number picks a list element (`addressbook.items.0`).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from runner.mapping_transforms import (
    TRANSFORMS,
    MappingError,
    StepContext,
    is_empty,
    run_steps,
    show,
    step_problems,
    steps,
)

__all__ = [
    "TRANSFORMS",
    "FieldNote",
    "Mapped",
    "MappingError",
    "Preview",
    "apply",
    "create_only_fields",
    "flows_back_fields",
    "lookup",
    "preview",
    "validate_spec",
]

Lookups = Mapping[str, Mapping[str, Any]]
RULE_KEYS = frozenset(
    {"target", "source", "value", "transform", "default", "required", "create_only", "flows_back"}
)
EACH_KEYS = frozenset({"target", "each", "fields", "required", "create_only", "flows_back"})
WHOLE_RULE_KEYS = frozenset({"create_only", "flows_back"})  # top-level rules only: they act on payload keys
ROOT = "$."  # a source path starting with this reads from the whole record, even inside `each`


@dataclass(frozen=True)
class Mapped:
    """A mapped payload, which of its fields are only sent on create, and which may flow back."""

    payload: dict[str, Any]
    create_only: frozenset[str]
    flows_back: frozenset[str] = frozenset()

    def for_update(self) -> dict[str, Any]:
        """The payload without create-only fields."""
        payload = {k: copy.deepcopy(v) for k, v in self.payload.items() if k not in self.create_only}
        for path in self.create_only:
            if "." in path:
                _delete_path(payload, path.split("."))
        return payload

    def for_write_back(self) -> dict[str, Any]:
        """Only the fields the mapping marks `flows_back` (those that have a value)."""
        payload: dict[str, Any] = {}
        for path in sorted(self.flows_back):
            current: Any = self.payload
            for part in path.split("."):
                current = current.get(part) if isinstance(current, dict) else None
            if current is not None:
                _set_path(payload, path, copy.deepcopy(current), path)
        return payload


@dataclass
class FieldNote:
    """What a preview did for one target: where the value came from and what the steps made of it."""

    target: str
    source: str  # the path actually read, or "constant" / "default"
    value: Any
    note: str  # "from companyName", "default used: source empty", "lookup gl_account_charge: 4000 → …"
    error: str | None = None


@dataclass
class Preview:
    """A mapping tried on one record: the (possibly partial) payload, a note per field, every error."""

    payload: dict[str, Any]
    notes: list[FieldNote]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors


class _Problem(NamedTuple):
    rule: int | None  # index of the top-level rule at fault; None for the spec as a whole
    field: str
    message: str


def lookup(record: Any, path: str) -> Any:
    """The value at a dotted path, matching keys case-insensitively; None when absent."""
    return _follow(record, _path(path))


class _Part(NamedTuple):
    """One step of a source path, read once: the key, its list index (for digits) and its lower case."""

    key: str
    index: int | None
    lowered: str


def _path(path: str) -> tuple[_Part, ...]:
    return tuple(
        _Part(part, int(part) if part.isascii() and part.isdigit() else None, part.lower())
        for part in path.split(".")
    )


def _follow(record: Any, parts: tuple[_Part, ...], folded: dict[int, dict[str, Any]] | None = None) -> Any:
    """`lookup` with the path split already. `folded` (one apply's, while the record cannot change)
    remembers each object's keys in lower case, first key first, so a record missing many mapped keys
    is scanned once per object rather than once per missing key."""
    current: Any = record
    for part in parts:
        if part.index is not None and isinstance(current, list):
            current = current[part.index] if part.index < len(current) else None
            continue
        if not isinstance(current, Mapping):
            return None
        if part.key in current:
            current = current[part.key]
            continue
        if folded is None:
            lowered = part.lowered
            current = next((v for k, v in current.items() if str(k).lower() == lowered), None)
            continue
        keys = folded.get(id(current))
        if keys is None:
            keys = {}
            for key, value in current.items():
                keys.setdefault(str(key).lower(), value)
            folded[id(current)] = keys
        current = keys.get(part.lowered)
    return current


def validate_spec(
    spec: Mapping[str, Any], *, required: Iterable[str] = (), lookups: Mapping[str, Any] | None = None
) -> list[str]:
    """Problems with a spec, each starting with the target field at fault; empty when it is usable.

    `required` are the targets the flow cannot do without; `lookups` (when given) are the tables that
    exist, so a step naming another table is reported here rather than on the first record.
    """
    return [f"{p.field}: {p.message}" for p in _problems(spec, required=required, lookups=lookups)]


def apply(spec: Mapping[str, Any], record: Mapping[str, Any], *, lookups: Lookups | None = None) -> Mapped:
    """Map `record` through `spec`; raises MappingError naming the first field that cannot be filled.

    `lookups` are the lookup tables by name (see storage.lookups.lookups_for); a `lookup` step whose
    table is missing fails.
    """
    text = repr(spec)
    problem = _first_problem(spec, lookups, text)
    if problem is not None:
        raise MappingError(problem.field, problem.message)
    plan = _compiled(spec, text)
    payload: dict[str, Any] = {}
    folded: dict[int, dict[str, Any]] = {}
    for run in plan.rules:
        run(record, lookups, payload, folded)
    return Mapped(
        payload=payload,
        create_only=frozenset(target for target in plan.create_only if _has_path(payload, target)),
        flows_back=plan.flows_back,
    )


def preview(
    spec: Mapping[str, Any],
    record: Mapping[str, Any],
    *,
    lookups: Lookups | None = None,
    required: Iterable[str] = (),
) -> Preview:
    """Try `spec` on `record` for the mapping page; never raises for mapping errors, it collects them.

    Rules with problems in the spec itself are not run (their note carries the problem); every other
    rule runs, and a failing field leaves the rest of the payload to be filled.
    """
    required = list(required)
    problems = _problems(spec, required=required, lookups=lookups)
    errors = [f"{p.field}: {p.message}" for p in problems]
    rules = spec.get("fields") if isinstance(spec, Mapping) else None
    if not isinstance(rules, list):
        return Preview(payload={}, notes=[], errors=errors)
    notes: list[FieldNote] = []
    run = _Run(record, lookups, notes=notes, errors=errors)
    broken: dict[int, _Problem] = {}
    for problem in problems:
        if problem.rule is not None:
            broken.setdefault(problem.rule, problem)
    payload: dict[str, Any] = {}
    for index, rule in enumerate(rules):
        if index in broken:
            target = rule.get("target") if isinstance(rule, Mapping) else None
            name = target if isinstance(target, str) and target else f"rule {index + 1}"
            field, message = broken[index].field, broken[index].message
            error = message if field == name else f"{field}: {message}"
            notes.append(FieldNote(name, "", None, "not run: the rule has problems", error))
        else:
            run.rule(rule, record, rule["target"], payload)
    failed = {note.target for note in notes if note.error}
    for name in required:
        if "[" not in name and name not in failed and not _has_path(payload, name) and _covered(rules, name):
            errors.append(f"{name}: required by this flow but empty for this record")
    return Preview(payload=payload, notes=notes, errors=errors)


def create_only_fields(spec: Mapping[str, Any]) -> frozenset[str]:
    """The targets a spec sends only on create (what an update of a stored payload must leave out)."""
    return frozenset(rule["target"] for rule in spec.get("fields") or [] if rule.get("create_only"))


def flows_back_fields(spec: Mapping[str, Any]) -> frozenset[str]:
    """The targets a spec marks as flowing back (the fields the write-back flow may send)."""
    return frozenset(rule["target"] for rule in spec.get("fields") or [] if rule.get("flows_back"))


@dataclass
class _Run:
    """One pass of a spec over a record. Without `errors` the first failure raises (apply); with it,
    failures are collected and notes kept (preview)."""

    root: Any
    lookups: Lookups | None
    notes: list[FieldNote] | None = None
    errors: list[str] | None = None

    def rules(self, rules: list[Mapping[str, Any]], scope: Any, prefix: str) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for rule in rules:
            self.rule(rule, scope, prefix + rule["target"], payload)
        return payload

    def rule(self, rule: Mapping[str, Any], scope: Any, field: str, payload: dict[str, Any]) -> None:
        traced: list[str] | None = [] if self.notes is not None else None
        ctx = StepContext(field=field, lookups=self.lookups, notes=traced)
        at = len(self.notes or [])  # an each-rule's note goes before the notes of its elements
        source, value, error = "", None, None
        try:
            if "each" in rule:
                source = rule["each"]
                value = self.each(rule, scope, field)
                ctx.note(f"from {source}: {len(value)} items")
            else:
                source, value = self.pick(rule, scope, ctx)
                value = run_steps(rule.get("transform"), value, ctx)
                if is_empty(value) and "default" in rule:
                    source, value = "default", copy.deepcopy(rule["default"])
                    ctx.note("default used: source empty" if "source" in rule else "default")
            if is_empty(value):
                if rule.get("required"):
                    raise MappingError(field, _required_message(rule))
                ctx.note("skipped: empty")
                value = None
            else:
                _set_path(payload, rule["target"], value, field)
        except MappingError as exc:
            if self.errors is None:
                raise
            self.errors.append(str(exc))
            error = exc.message if exc.field == field else str(exc)
        if self.notes is not None:
            self.notes.insert(at, FieldNote(field, source, value, "; ".join(traced or []), error))

    def pick(self, rule: Mapping[str, Any], scope: Any, ctx: StepContext) -> tuple[str, Any]:
        """The rule's raw value and where it came from: its constant, its first non-empty source, or
        (with a concat step and a list of sources) every non-empty source."""
        if "value" in rule:
            ctx.note("constant")
            return "constant", copy.deepcopy(rule["value"])
        sources = [rule["source"]] if isinstance(rule.get("source"), str) else list(rule.get("source") or [])
        found = [(s, v) for s in sources if not is_empty(v := self.read(s, scope))]
        if not found:
            return (sources[0] if sources else ""), None
        if isinstance(rule.get("source"), list) and _joins(rule):
            source, value = ", ".join(s for s, _ in found), [v for _, v in found]
        else:
            source, value = found[0]
        ctx.note(f"from {source}")
        return source, value

    def each(self, rule: Mapping[str, Any], scope: Any, field: str) -> list[dict[str, Any]]:
        items = self.read(rule["each"], scope)
        if items is None:
            return []
        if not isinstance(items, list):
            raise MappingError(field, f"{rule['each']!r} is not a list but {show(items)}")
        mapped = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise MappingError(f"{field}[{index}]", f"is not an object but {show(item)}")
            mapped.append(self.rules(rule["fields"], item, f"{field}[{index}]."))
        return mapped

    def read(self, path: str, scope: Any) -> Any:
        value = lookup(self.root, path[len(ROOT) :]) if path.startswith(ROOT) else lookup(scope, path)
        return copy.deepcopy(value) if isinstance(value, list | dict) else value


# --- apply's compiled form -------------------------------------------------------------------------
# A spec is run over thousands of records: what a rule needs (its source paths split, its transforms
# found, its target split) is worked out once per spec text, and each record then runs a small closure
# per rule. The result is the one `_Run` gives (`preview` still runs `_Run`, with its notes); rules with
# `each` go through `_Run` here too. A plan is only made for a spec that validated, and keyed by its
# text, so two specs that print alike (same types included) share one; the plan holds its own copy of
# each rule, never the caller's objects.

_RuleRun = Callable[[Any, Lookups | None, dict[str, Any], dict[int, dict[str, Any]]], None]


class _Plan(NamedTuple):
    rules: tuple[_RuleRun, ...]
    create_only: tuple[str, ...]
    flows_back: frozenset[str]


COMPILED_SPECS = 256  # distinct spec texts whose compiled form `apply` keeps
_plans: dict[str, _Plan] = {}


def _compiled(spec: Mapping[str, Any], text: str) -> _Plan:
    plan = _plans.get(text)
    if plan is None:
        rules = [copy.deepcopy(rule) for rule in spec["fields"]]
        plan = _Plan(
            rules=tuple(_compile_rule(rule) for rule in rules),
            create_only=tuple(dict.fromkeys(rule["target"] for rule in rules if rule.get("create_only"))),
            flows_back=flows_back_fields(spec),
        )
        if len(_plans) >= COMPILED_SPECS:
            _plans.clear()
        _plans[text] = plan
    return plan


def _compile_rule(rule: dict[str, Any]) -> _RuleRun:
    """One top-level rule of a validated spec as a closure `(record, lookups, payload, folded) -> None`
    that does what `_Run.rule` does for it without notes: fills `payload` or raises MappingError."""
    target: str = rule["target"]
    if "each" in rule:

        def run_each(
            record: Any, lookups: Lookups | None, payload: dict[str, Any], _folded: dict[int, dict[str, Any]]
        ) -> None:
            _Run(record, lookups).rule(rule, record, target, payload)

        return run_each

    nested = "." in target
    required = bool(rule.get("required"))
    has_default = "default" in rule
    default = rule.get("default")
    has_value = "value" in rule
    constant = rule.get("value")
    source = rule.get("source")
    sources = [source] if isinstance(source, str) else list(source or [])
    # At the top level the scope is the record, so "$." paths and plain ones read the same object.
    paths = tuple(_path(s[len(ROOT) :] if s.startswith(ROOT) else s) for s in sources)
    joined = isinstance(source, list) and _joins(rule)
    stepped = tuple((TRANSFORMS[step["name"]], step) for step in steps(rule.get("transform")))

    def read(record: Any, parts: tuple[_Part, ...], folded: dict[int, dict[str, Any]]) -> Any:
        value = _follow(record, parts, folded)
        return copy.deepcopy(value) if isinstance(value, list | dict) else value

    def run(
        record: Any, lookups: Lookups | None, payload: dict[str, Any], folded: dict[int, dict[str, Any]]
    ) -> None:
        value: Any = None
        if has_value:
            value = copy.deepcopy(constant)
        elif joined:
            found = [v for parts in paths if not is_empty(v := read(record, parts, folded))]
            value = found or None
        else:
            for parts in paths:
                value = read(record, parts, folded)
                if not is_empty(value):
                    break
            else:
                value = None
        if stepped:
            ctx = StepContext(field=target, lookups=lookups)
            for known, step in stepped:
                if not known.per_value:
                    value = known.run(value, step, ctx)
                elif isinstance(value, list):
                    value = [item if is_empty(item) else known.run(item, step, ctx) for item in value]
                elif not is_empty(value):
                    value = known.run(value, step, ctx)
        if has_default and is_empty(value):
            value = copy.deepcopy(default)
        if is_empty(value):
            if required:
                raise MappingError(target, _required_message(rule))
        elif nested:
            _set_path(payload, target, value, target)
        else:
            payload[target] = value

    return run


VALIDATED_SPECS = 256  # distinct (spec, lookup table names) pairs whose validation `apply` remembers
_validated: dict[tuple[str, tuple[str, ...] | None], _Problem | None] = {}


def _first_problem(spec: Any, lookups: Mapping[str, Any] | None, text: str | None = None) -> _Problem | None:
    """The first problem of a spec, validated once per spec rather than once per record: a job runs the
    same few specs over and over. A spec is only as valid as the lookup tables it names, so the key is
    the spec's text (repr keeps types apart: a tuple is not a list to the validator) and the table names.
    `text` is `repr(spec)` when the caller has it already."""
    key = (repr(spec) if text is None else text, None if lookups is None else tuple(sorted(lookups)))
    if key in _validated:
        return _validated[key]
    problems = _problems(spec, lookups=lookups)
    found = problems[0] if problems else None
    if len(_validated) >= VALIDATED_SPECS:
        _validated.clear()
    _validated[key] = found
    return found


def _problems(
    spec: Any, *, required: Iterable[str] = (), lookups: Mapping[str, Any] | None = None
) -> list[_Problem]:
    rules = spec.get("fields") if isinstance(spec, Mapping) else None
    if not isinstance(rules, list) or not rules:
        return [_Problem(None, "fields", "a mapping needs a non-empty list of field rules")]
    problems = _rules_problems(rules, prefix="", top=None, lookups=lookups)
    problems.extend(
        _Problem(None, name, "required by this flow but not mapped")
        for name in required
        if not _covered(rules, name)
    )
    return problems


def _rules_problems(
    rules: list[Any], *, prefix: str, top: int | None, lookups: Mapping[str, Any] | None
) -> list[_Problem]:
    problems: list[_Problem] = []
    seen: list[str] = []
    for index, rule in enumerate(rules):
        at = index if top is None else top
        target = rule.get("target") if isinstance(rule, Mapping) else None
        if not isinstance(target, str) or not all(target.split(".")) or any(c in target for c in "[]$"):
            where = f"rule {index + 1}" if top is None else f"{prefix.removesuffix('[].')}"
            which = "" if top is None else f"rule {index + 1} of its 'fields': "
            problems.append(_Problem(at, where, f"{which}'target' must be a dotted path, not {target!r}"))
            continue
        field = prefix + target
        for other in seen:
            if other == target:
                problems.append(_Problem(at, field, "mapped twice"))
            elif target.startswith(other + ".") or other.startswith(target + "."):
                problems.append(
                    _Problem(at, field, f"overlaps {prefix + other!r}: a field is a value or an object")
                )
        seen.append(target)
        problems.extend(
            _Problem(at, field, message)
            for message in _rule_problems(rule, nested=top is not None, lookups=lookups)
        )
        if "each" in rule and isinstance(rule.get("fields"), list):
            problems.extend(_rules_problems(rule["fields"], prefix=f"{field}[].", top=at, lookups=lookups))
    return problems


def _rule_problems(rule: Mapping[str, Any], *, nested: bool, lookups: Mapping[str, Any] | None) -> list[str]:
    each = "each" in rule
    allowed = (EACH_KEYS if each else RULE_KEYS) - (WHOLE_RULE_KEYS if nested else frozenset())
    problems: list[str] = []
    for key in rule:
        if key in allowed:
            continue
        if nested and key in WHOLE_RULE_KEYS:
            problems.append(f"{key!r} applies to the whole list: set it on the rule with 'each'")
        elif each and key in RULE_KEYS:
            problems.append(
                f"{key!r} does not apply to a rule with 'each': put it on the rules in its 'fields'"
            )
        else:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown key {key!r}{hint} (known: {', '.join(sorted(allowed))})")
    problems.extend(
        f"{key!r} must be true or false"
        for key in ("required", *WHOLE_RULE_KEYS)
        if key in rule and not isinstance(rule[key], bool)
    )
    if each:
        if not isinstance(rule["each"], str) or not rule["each"].strip():
            problems.append("'each' must be the path of a list in the source record")
        if not isinstance(rule.get("fields"), list) or not rule["fields"]:
            problems.append("a rule with 'each' needs a non-empty list of 'fields'")
        return problems
    source = rule.get("source")
    paths = [source] if isinstance(source, str) else source
    if "source" in rule and (
        not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths)
    ):
        problems.append("'source' must be a path or a non-empty list of paths")
    if "source" in rule and "value" in rule:
        problems.append("give either a 'source' or a 'value', not both")
    step_list = steps(rule.get("transform"))
    defaulted = any(isinstance(s, Mapping) and s.get("name") == "default" for s in step_list)
    if not ({"source", "value", "default"} & rule.keys() or defaulted):
        problems.append("give a 'source', a 'value' or a 'default'")
    problems.extend(step_problems(rule.get("transform"), lookups))
    return problems


def _required_message(rule: Mapping[str, Any]) -> str:
    if "each" in rule:
        return f"required but the list at {rule['each']!r} is empty"
    source = rule.get("source")
    return f"required but has no value{f' (source {source!r} is empty)' if source else ''}"


def _joins(rule: Mapping[str, Any]) -> bool:
    return any(isinstance(s, Mapping) and s.get("name") == "concat" for s in steps(rule.get("transform")))


def _covered(rules: list[Any], name: str, prefix: str = "") -> bool:
    """Whether some rule fills `name` (itself, a parent object, or one of its fields)."""
    for rule in rules:
        target = rule.get("target") if isinstance(rule, Mapping) else None
        if not isinstance(target, str):
            continue
        target = prefix + target
        if target == name or name.startswith(target + ".") or target.startswith(name + "."):
            return True
        if isinstance(rule.get("fields"), list) and _covered(rule["fields"], name, f"{target}[]."):
            return True
    return False


def _has_path(payload: Mapping[str, Any], path: str) -> bool:
    current: Any = payload
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False
        current = current[part]
    return not is_empty(current)


def _set_path(payload: dict[str, Any], path: str, value: Any, field: str) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        payload = payload.setdefault(part, {})
        if not isinstance(payload, dict):
            raise MappingError(field, f"{part!r} is already a value, so it cannot hold fields")
    payload[parts[-1]] = value


def _delete_path(payload: dict[str, Any], parts: list[str]) -> None:
    for part in parts[:-1]:
        child = payload.get(part)
        if not isinstance(child, dict):
            return
        payload = child
    payload.pop(parts[-1], None)
