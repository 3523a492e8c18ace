"""Field-level comparison of a mapped NetSuite record with the target's record, and the rules that make
two renderings of one value compare equal.

Normalisation (`normal`), applied to both sides before comparing:

- missing, None and "" (after trimming) are all "empty", and equal;
- booleans and their spellings (True/"T"/"true"/"yes", False/"F"/"false"/"no") become "true"/"false";
- numbers and numeric strings compare as decimals to the cent ("1", 1, 1.0 and "1.00" are equal);
- a lookup object ({"id": ..., "name": ...}) compares by its id;
- a date or timestamp string that starts with yyyy-mm-dd compares by its day;
- any other string is trimmed and its inner whitespace collapsed; case is kept (a case change made in
  the target is a real edit).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

TRUE = frozenset({"true", "t", "yes"})
FALSE = frozenset({"false", "f", "no"})
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}([ T].*)?$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
CENT = Decimal("0.01")


def normal(value: Any) -> str:
    """The comparable form of a value (see the module docstring)."""
    if isinstance(value, Mapping):
        value = value.get("id")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return _money(value)
    if isinstance(value, list):
        return ",".join(normal(v) for v in value)
    text = " ".join(str(value).split())
    lowered = text.lower()
    if lowered in TRUE:
        return "true"
    if lowered in FALSE:
        return "false"
    if _NUMBER.match(text):
        return _money(text)
    if _DAY.match(text):
        return text[:10]
    return text


def _money(value: Any) -> str:
    try:
        return str(Decimal(str(value)).quantize(CENT))
    except InvalidOperation:
        return str(value)


def flatten(payload: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted paths ({"billToContact": {"workEmail": x}} → {"billToContact.workEmail": x});
    lists and lookup objects (those with an `id`) stay whole."""
    flat: dict[str, Any] = {}
    for key, value in payload.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and "id" not in value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def differences(
    expected: Mapping[str, Any], actual: Mapping[str, Any], *, fields: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """[{field, netsuite, target}] for each field of `expected` (or of `fields`) whose normal forms differ;
    values are shown as they are (not normalised), in field order."""
    wanted = sorted(expected) if fields is None else list(fields)
    found = []
    for field in wanted:
        ours, theirs = expected.get(field), actual.get(field)
        if normal(ours) != normal(theirs):
            found.append({"field": field, "netsuite": _shown(ours), "target": _shown(theirs)})
    return found


def _shown(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get("id")
    return value


def amount(value: Any) -> Decimal:
    """A money amount to the cent (empty or unreadable as 0)."""
    try:
        return Decimal(str(value if value not in (None, "") else 0)).quantize(CENT)
    except InvalidOperation:
        return Decimal(0)
