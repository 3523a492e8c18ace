"""Zoho CRM emulator: the Search Records API (`GET /crm/v8/{module}/search`), parsing and matching.

Behaviour from Zoho's search-records page (zoho.com/crm/developer/docs/api/v7 and v8
search-records.html, read through a markdown mirror; "search docs"):

- One of `criteria`, `email`, `phone`, `word`; if several are given, that order wins. None at all is
  EXPECTED_PARAM_MISSING (HTTP 400).
- criteria is `(({api_name}:{operator}:{value})and/or({api_name}:{operator}:{value}))`, at most 10
  conditions; a single condition may come without parentheses (the docs' `Campaign_Name:equals:CRM`).
  Parentheses and commas inside a value are escaped with a backslash, and so is a trailing backslash.
- Operators per field type (the docs' table): text/email/phone/website equals, not_equal, starts_with,
  in; textarea equals, not_equal, starts_with; picklist and lookups equals, not_equal, in; dates and
  numbers equals, not_equal, greater_*, less_*, between, in.
- `equals` "behaves like contains": (Company:equals:ABC) also finds "ABC Inc". A client that needs an
  exact match must compare what comes back. A field that is empty matches nothing, not even not_equal
  (Deluge searchRecords docs).
- A bad criteria is INVALID_QUERY (HTTP 400) "invalid query formed" with `details` naming the problem;
  the shapes seen from the real API are {"reason": "invalid operator found", "api_name", "operator"}
  and {"reason": "the field is not available for search", "api_name"}. Syntax errors use the same
  code with a reason of their own (the exact reason text is UNCONFIRMED).
- At most 2,000 records can be read through one search; asking for a page past that is LIMIT_REACHED
  (HTTP 400) "Maximum response iteration limit reached". Nothing found is 204 with no body.
- Search reads an index that can lag behind writes: a record searched for right after it was made
  may not be found yet (the docs' note on 204). `search_index_lag` on the emulator models it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.emulator_kit import parse_iso
from connectors.zoho.emulator_records import SCHEMAS

MAX_CRITERIA = 10  # conditions in one criteria (search docs)
MAX_RESULTS = 2000  # records one search can page through (search docs: LIMIT_REACHED past it)
INVALID_QUERY_MESSAGE = "invalid query formed"

_TEXT = ("equals", "not_equal", "starts_with", "in")
_ORDERED = (
    "equals",
    "not_equal",
    "greater_equal",
    "greater_than",
    "less_equal",
    "less_than",
    "between",
    "in",
)
OPERATORS: dict[str, tuple[str, ...]] = {
    "text": _TEXT,
    "email": _TEXT,
    "phone": _TEXT,
    "website": _TEXT,
    "textarea": ("equals", "not_equal", "starts_with"),
    "picklist": ("equals", "not_equal", "in"),
    "lookup": ("equals", "not_equal", "in"),
    "ownerlookup": ("equals", "not_equal", "in"),
    "id": ("equals", "not_equal", "in"),
    "date": _ORDERED,
    "datetime": _ORDERED,
    "integer": _ORDERED,
    "currency": _ORDERED,
}
ALL_OPERATORS = frozenset(op for ops in OPERATORS.values() for op in ops)
_WORD_KINDS = ("text", "textarea", "email", "phone", "website", "picklist")


class SearchError(Exception):
    """A refused search: Zoho's error `code`, `message`, HTTP `status` and `details`."""

    def __init__(self, code: str, message: str, status: int = 400, **details: Any) -> None:
        super().__init__(f"{code}: {message} {details}")
        self.code, self.message, self.status, self.details = code, message, status, details


def invalid_query(reason: str, **details: Any) -> SearchError:
    return SearchError("INVALID_QUERY", INVALID_QUERY_MESSAGE, reason=reason, **details)


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    joiner: str  # and | or
    parts: tuple[Condition | Group, ...]


Node = Condition | Group
Char = tuple[str, bool]  # a character and whether a backslash escaped it


# Parsing ----------------------------------------------------------------------------------------------
def parse_criteria(text: str, module: str) -> Node:
    """The criteria as a tree, checked against `module`'s fields; SearchError(INVALID_QUERY) if malformed."""
    text = text.strip()
    if not text:
        raise invalid_query("criteria is empty")
    if not text.startswith("("):
        node: Node = _condition(_chars(text), module)  # one bare condition, as in the docs' example
    else:
        node, end = _parse_or(text, 0, module)
        if _skip(text, end) != len(text):
            raise invalid_query("unexpected text after the criteria", near=text[end : end + 20])
    if _count(node) > MAX_CRITERIA:
        raise invalid_query(f"at most {MAX_CRITERIA} criteria are allowed")  # UNCONFIRMED code and reason
    return node


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _parse_or(text: str, i: int, module: str) -> tuple[Node, int]:
    return _parse_joined(text, i, module, "or", _parse_and)


def _parse_and(text: str, i: int, module: str) -> tuple[Node, int]:
    return _parse_joined(text, i, module, "and", _parse_primary)


def _parse_joined(
    text: str, i: int, module: str, joiner: str, inner: Callable[[str, int, str], tuple[Node, int]]
) -> tuple[Node, int]:
    node, i = inner(text, i, module)
    parts = [node]
    while True:
        j = _skip(text, i)
        if text[j : j + len(joiner)].lower() != joiner:
            break
        node, i = inner(text, j + len(joiner), module)
        parts.append(node)
    return (parts[0] if len(parts) == 1 else Group(joiner, tuple(parts))), i


def _parse_primary(text: str, i: int, module: str) -> tuple[Node, int]:
    i = _skip(text, i)
    if i >= len(text) or text[i] != "(":
        raise invalid_query("expected '(' to open a condition", near=text[i : i + 20])
    inner = _skip(text, i + 1)
    if inner < len(text) and text[inner] == "(":  # a nested group
        node, end = _parse_or(text, inner, module)
        end = _skip(text, end)
        if end >= len(text) or text[end] != ")":
            raise invalid_query("unbalanced parentheses")
        return node, end + 1
    chars: list[Char] = []
    j = i + 1
    while j < len(text):
        char = text[j]
        if char == "\\" and j + 1 < len(text):
            chars.append((text[j + 1], True))
            j += 2
            continue
        if char == ")":
            return _condition(chars, module), j + 1
        chars.append((char, False))
        j += 1
    raise invalid_query("unbalanced parentheses")


def _chars(text: str) -> list[Char]:
    out: list[Char] = []
    j = 0
    while j < len(text):
        if text[j] == "\\" and j + 1 < len(text):
            out.append((text[j + 1], True))
            j += 2
        else:
            out.append((text[j], False))
            j += 1
    return out


def _split(chars: list[Char], separator: str, limit: int = -1) -> list[list[Char]]:
    """Split on unescaped `separator`, at most `limit` times (-1: every time)."""
    parts: list[list[Char]] = [[]]
    for char, escaped in chars:
        if char == separator and not escaped and (limit < 0 or len(parts) <= limit):
            parts.append([])
        else:
            parts[-1].append((char, escaped))
    return parts


def _text(chars: list[Char]) -> str:
    return "".join(c for c, _ in chars)


def _condition(chars: list[Char], module: str) -> Condition:
    pieces = _split(chars, ":", 2)
    if len(pieces) != 3:
        raise invalid_query("a condition reads {api_name}:{operator}:{value}", near=_text(chars)[:40])
    field, operator = _text(pieces[0]).strip(), _text(pieces[1]).strip().lower()
    kind = "id" if field == "id" else SCHEMAS[module].get(field)
    if kind is None:
        raise invalid_query("the field is not available for search", api_name=field)
    if operator not in OPERATORS[kind]:
        raise invalid_query("invalid operator found", api_name=field, operator=operator)
    raw = pieces[2]
    if any(c in "()" and not escaped for c, escaped in raw):
        raise invalid_query("unescaped parenthesis in the value", api_name=field)
    if operator in ("in", "between"):
        values = tuple(_text(part).strip() for part in _split(raw, ","))
        if operator == "between" and len(values) != 2:
            raise invalid_query("between takes two values", api_name=field, operator=operator)
    else:
        if any(c == "," and not escaped for c, escaped in raw):
            raise invalid_query("unescaped comma in the value", api_name=field)
        values = (_text(raw).strip(),)
    if not all(values):
        raise invalid_query("the value is missing", api_name=field)
    return Condition(field, operator, values)


def _count(node: Node) -> int:
    return 1 if isinstance(node, Condition) else sum(_count(p) for p in node.parts)


# Matching ---------------------------------------------------------------------------------------------
def record_filter(
    module: str,
    *,
    criteria: str | None,
    email: str | None,
    phone: str | None,
    word: str | None,
    equals_contains: bool,
) -> Callable[[dict[str, Any]], bool]:
    """The test a rendered record must pass: criteria, else email, else phone, else word (search docs:
    with several given, that order wins). SearchError when none is given or the one used is malformed."""
    if criteria is not None:
        tree = parse_criteria(criteria, module)
        return lambda record: matches(tree, record, module, equals_contains=equals_contains)
    if email is not None:
        return lambda record: by_email(record, module, email)
    if phone is not None:
        return lambda record: by_phone(record, module, phone)
    if word is not None:
        check_word(word)
        return lambda record: by_word(record, module, word)
    raise SearchError("EXPECTED_PARAM_MISSING", "mandatory param missing")


def matches(node: Node, record: dict[str, Any], module: str, *, equals_contains: bool) -> bool:
    """Whether a rendered record (lookups as {name, id}) satisfies the criteria tree."""
    if isinstance(node, Group):
        results = (matches(p, record, module, equals_contains=equals_contains) for p in node.parts)
        return all(results) if node.joiner == "and" else any(results)
    kind = "id" if node.field == "id" else SCHEMAS[module][node.field]
    value = record.get(node.field)
    if value in (None, ""):
        return False  # empty fields are not reported, whatever the operator (Deluge searchRecords docs)
    candidates = (
        [str(value[k]) for k in ("id", "name") if value.get(k)] if isinstance(value, dict) else [str(value)]
    )
    return any(_compare(node, kind, c, equals_contains) for c in candidates)


def _compare(node: Condition, kind: str, actual: str, equals_contains: bool) -> bool:
    op, wanted = node.operator, node.values
    if op in ("greater_equal", "greater_than", "less_equal", "less_than", "between") or (
        kind in ("integer", "currency", "datetime") and op in ("equals", "not_equal", "in")
    ):
        have = _order_key(kind, actual)
        keys = [_order_key(kind, w) for w in wanted]
        if have is None or None in keys:
            return False
        first = keys[0]
        if op == "between":
            return keys[0] <= have <= keys[1]  # type: ignore[operator]
        return {
            "equals": have == first,
            "not_equal": have != first,
            "in": have in keys,
            "greater_equal": have >= first,  # type: ignore[operator]
            "greater_than": have > first,  # type: ignore[operator]
            "less_equal": have <= first,  # type: ignore[operator]
            "less_than": have < first,  # type: ignore[operator]
        }[op]
    have_text, wanted_text = actual.casefold(), [w.casefold() for w in wanted]
    if op == "equals":
        text_like = kind in ("text", "textarea", "email", "phone", "website")
        if equals_contains and text_like:
            return wanted_text[0] in have_text  # "equals behaves like contains" (search docs)
        return have_text == wanted_text[0]
    if op == "not_equal":
        return have_text != wanted_text[0]
    if op == "starts_with":
        return have_text.startswith(wanted_text[0])
    return have_text in wanted_text  # in


def _order_key(kind: str, text: str) -> float | str | None:
    try:
        if kind in ("integer", "currency"):
            return float(text)
        if kind == "datetime":
            return parse_iso(text)
    except ValueError:
        return None
    return text


def by_email(record: dict[str, Any], module: str, email: str) -> bool:
    """`?email=`: every email field of the module is searched (search docs)."""
    wanted = email.strip().casefold()
    return any(
        str(record.get(name) or "").casefold() == wanted
        for name, kind in SCHEMAS[module].items()
        if kind == "email"
    )


def by_phone(record: dict[str, Any], module: str, phone: str) -> bool:
    """`?phone=`: every phone field of the module is searched; compared on digits (UNCONFIRMED)."""
    wanted = re.sub(r"\D", "", phone)
    return bool(wanted) and any(
        re.sub(r"\D", "", str(record.get(name) or "")) == wanted
        for name, kind in SCHEMAS[module].items()
        if kind == "phone"
    )


def check_word(word: str) -> None:
    """`?word=` needs two characters or more and no special characters (search docs: INVALID_DATA)."""
    if len(word.strip()) < 2 or re.search(r"[()\\,:]", word):
        message = "The search value contains special characters or does not contain at least two characters"
        raise SearchError("INVALID_DATA", message, param_name="word")


def by_word(record: dict[str, Any], module: str, word: str) -> bool:
    """`?word=`: a module-level word search over the text fields (how Zoho tokenizes is UNCONFIRMED)."""
    wanted = word.strip().casefold()
    return any(
        wanted in str(record.get(name) or "").casefold()
        for name, kind in SCHEMAS[module].items()
        if kind in _WORD_KINDS
    )
