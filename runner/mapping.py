"""Field mappings as data: each target field comes from a source path, a constant, or a transform.

A spec is `{"fields": [rule, ...]}`; a rule is

    {"target": "billToContact.firstName",          # dotted path in the payload we send
     "source": ["firstName", "companyName"],       # dotted path(s) in the source record; first non-empty wins
     "value": 1,                                   # or a constant instead of a source
     "transform": "trim" | "upper" | "lower",      # optional, applied to strings
     "default": "Accounts",                        # used when the source is empty
     "required": true,                             # an empty result is an error naming the field
     "create_only": true}                          # sent when creating, left out of updates

Source paths match keys case-insensitively, because NetSuite's REST responses mix `isInactive` and
`isinactive` (shared/api/netsuite.md §3).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

TRANSFORMS: dict[str, Callable[[str], str]] = {
    "trim": str.strip,
    "upper": str.upper,
    "lower": str.lower,
}


class MappingError(ValueError):
    """The mapping cannot produce a valid payload; `field` names the target field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Mapped:
    """A mapped payload, and which of its fields are only sent on create."""

    payload: dict[str, Any]
    create_only: frozenset[str]

    def for_update(self) -> dict[str, Any]:
        """The payload without create-only fields."""
        payload = {k: copy.deepcopy(v) for k, v in self.payload.items() if k not in self.create_only}
        for path in self.create_only:
            if "." in path:
                _delete_path(payload, path.split("."))
        return payload


def lookup(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, matching keys case-insensitively; None when absent."""
    current: Any = record
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        if part in current:
            current = current[part]
            continue
        lowered = part.lower()
        current = next((v for k, v in current.items() if str(k).lower() == lowered), None)
    return current


def validate_spec(spec: Mapping[str, Any]) -> list[str]:
    """Problems with a spec, each naming the rule's target field; empty when the spec is usable."""
    problems: list[str] = []
    rules = spec.get("fields")
    if not isinstance(rules, list) or not rules:
        return ["fields: a mapping needs a non-empty list of field rules"]
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        target = rule.get("target") if isinstance(rule, Mapping) else None
        if not target or not isinstance(target, str):
            problems.append(f"rule {index + 1}: 'target' is missing")
            continue
        if target in seen:
            problems.append(f"{target}: mapped twice")
        seen.add(target)
        if "source" not in rule and "value" not in rule and "default" not in rule:
            problems.append(f"{target}: give a 'source', a 'value' or a 'default'")
        transform = rule.get("transform")
        if transform is not None and transform not in TRANSFORMS:
            problems.append(f"{target}: unknown transform {transform!r} (known: {', '.join(TRANSFORMS)})")
    return problems


def apply(spec: Mapping[str, Any], record: Mapping[str, Any]) -> Mapped:
    """Map `record` through `spec`; raises MappingError naming the first field that cannot be filled."""
    problems = validate_spec(spec)
    if problems:
        field = problems[0].split(":", 1)[0]
        raise MappingError(field, problems[0].split(":", 1)[-1].strip())
    payload: dict[str, Any] = {}
    create_only: set[str] = set()
    for rule in spec["fields"]:
        target = rule["target"]
        value = _value(rule, record)
        if _empty(value):
            if rule.get("required"):
                sources = rule.get("source")
                hint = f" (source {sources!r} is empty)" if sources else ""
                raise MappingError(target, f"required but has no value{hint}")
            continue
        _set_path(payload, target.split("."), value)
        if rule.get("create_only"):
            create_only.add(target)
    return Mapped(payload=payload, create_only=frozenset(create_only))


def create_only_fields(spec: Mapping[str, Any]) -> frozenset[str]:
    """The targets a spec sends only on create (what an update of a stored payload must leave out)."""
    return frozenset(rule["target"] for rule in spec.get("fields") or [] if rule.get("create_only"))


def _value(rule: Mapping[str, Any], record: Mapping[str, Any]) -> Any:
    if "value" in rule:
        value = rule["value"]
    else:
        sources = rule.get("source") or []
        if isinstance(sources, str):
            sources = [sources]
        value = next((v for v in (lookup(record, s) for s in sources) if not _empty(v)), None)
    transform = rule.get("transform")
    if transform and isinstance(value, str):
        value = TRANSFORMS[transform](value)
    if _empty(value) and "default" in rule:
        value = rule["default"]
    return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _set_path(payload: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        payload = payload.setdefault(part, {})
    payload[parts[-1]] = value


def _delete_path(payload: dict[str, Any], parts: list[str]) -> None:
    for part in parts[:-1]:
        child = payload.get(part)
        if not isinstance(child, dict):
            return
        payload = child
    payload.pop(parts[-1], None)
