"""A very small SELECT parser shared by the SuiteQL and ZOQL emulators.

Both dialects are, for what our connector sends, `select cols from table where a op b and ... order by`.
SuiteQL also needs `[INNER] JOIN t2 ON a.x = b.y` (transaction to transactionline); that is
parsed only when the caller passes `allow_joins=True`, so ZOQL keeps refusing JOIN as before.
Column qualifiers (`t.id`) are kept beside the bare name for the callers that need to resolve them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SqlError(ValueError):
    """The query uses something the emulator's small SQL subset does not understand."""


@dataclass(frozen=True)
class Call:
    """A function call such as TO_TIMESTAMP('2024-05-01 00:00:00', 'YYYY-MM-DD HH24:MI:SS')."""

    name: str  # upper-cased
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Column:
    name: str  # as written, qualifier removed
    qualifier: str | None = None  # `t` in `t.id`: a table alias or name, for joins


@dataclass(frozen=True)
class SelectItem:
    expr: Column | Call
    alias: str | None


@dataclass(frozen=True)
class Condition:
    column: str
    op: str  # = != < <= > >= IS "IS NOT" IN
    value: Any  # str | int | float | None | Call, or for IN a tuple of those
    qualifier: str | None = None  # `t` in `t.type = 'CustInvc'`


@dataclass(frozen=True)
class Join:
    """`[INNER] JOIN table [alias] ON left = right`: an inner equi-join on one pair of columns."""

    table: str
    alias: str | None
    left: Column
    right: Column


@dataclass(frozen=True)
class Query:
    items: list[SelectItem] | None  # None means SELECT *
    table: str
    where: list[Condition]
    order_by: list[tuple[str, bool]]  # (column, descending), qualifier removed
    alias: str | None = None  # the FROM table's alias (`t` in `FROM transaction t`)
    joins: tuple[Join, ...] = ()  # only with parse_select(..., allow_joins=True)
    order_columns: tuple[tuple[Column, bool], ...] = ()  # order_by with qualifiers kept


_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>\d+(?:\.\d+)?)|(?P<op><=|>=|!=|<>|=|<|>)"
    r"|(?P<punct>[(),*;])|(?P<ident>[A-Za-z_][A-Za-z0-9_$.]*))"
)
_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "ORDER", "BY", "ASC", "DESC", "AS", "IS", "NOT", "NULL"}
# Reserved words the subset does not support: never taken for a name, so errors can point at them.
_UNSUPPORTED = (
    "GROUP HAVING JOIN LEFT RIGHT INNER OUTER ON OR UNION DISTINCT LIKE IN BETWEEN LIMIT FETCH OFFSET CASE"
)
_KEYWORDS |= set(_UNSUPPORTED.split())
_WANTED = {"ident": "a name", "op": "a comparison operator", "string": "a 'string'", "punct": "punctuation"}


def _tokenize(sql: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos, text = 0, sql.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise SqlError(f"cannot read the query near {text[pos : pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        value: Any = match.group(kind)
        if kind == "string":
            value = value[1:-1].replace("''", "'")
        elif kind == "number":
            value = float(value) if "." in value else int(value)
        elif kind == "ident" and value.upper() in _KEYWORDS:
            kind, value = "kw", value.upper()
        tokens.append((kind, value))
    if tokens and tokens[-1] == ("punct", ";"):
        tokens.pop()
    return tokens


class _Parser:
    def __init__(self, sql: str, *, allow_joins: bool = False, allow_in: bool = False) -> None:
        self.tokens = _tokenize(sql)
        self.pos = 0
        self.allow_joins = allow_joins
        self.allow_in = allow_in

    def peek(self, offset: int = 0) -> tuple[str, Any]:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", None)

    def take(self, kind: str, value: Any = None) -> Any:
        got_kind, got = self.peek()
        if got_kind != kind or (value is not None and got != value):
            wanted = value if value is not None else _WANTED.get(kind, kind)
            raise SqlError(f"expected {wanted} but found {got if got is not None else 'end of query'!r}")
        self.pos += 1
        return got

    def accept(self, kind: str, value: Any = None) -> bool:
        got_kind, got = self.peek()
        if got_kind == kind and (value is None or got == value):
            self.pos += 1
            return True
        return False

    def qualified(self) -> Column:
        qualifier, _, name = str(self.take("ident")).rpartition(".")
        return Column(name, qualifier or None)

    def literal(self) -> Any:
        kind, value = self.peek()
        if kind in ("string", "number"):
            self.pos += 1
            return value
        if self.accept("kw", "NULL"):
            return None
        if kind == "ident" and self.peek(1) == ("punct", "("):
            return self.call(self.literal)
        raise SqlError(f"expected a literal value but found {value!r}")

    def call(self, arg: Callable[[], Any]) -> Call:
        name = self.take("ident").upper()
        self.take("punct", "(")
        args = [arg()]
        while self.accept("punct", ","):
            args.append(arg())
        self.take("punct", ")")
        return Call(name, tuple(args))

    def select_arg(self) -> Any:
        kind, _ = self.peek()
        if kind == "ident" and self.peek(1) != ("punct", "("):
            return self.qualified()
        return self.literal()

    def select_item(self) -> SelectItem:
        if self.peek()[0] == "ident" and self.peek(1) == ("punct", "("):
            expr: Column | Call = self.call(self.select_arg)
        else:
            expr = self.qualified()
        alias = None
        if self.accept("kw", "AS") or self.peek()[0] == "ident":
            alias = self.take("ident")
        return SelectItem(expr, alias)

    def condition(self) -> Condition:
        column = self.qualified()
        if self.accept("kw", "IS"):
            op = "IS NOT" if self.accept("kw", "NOT") else "IS"
            self.take("kw", "NULL")
            return Condition(column.name, op, None, column.qualifier)
        if self.allow_in and self.accept("kw", "IN"):
            self.take("punct", "(")
            values = [self.literal()]
            while self.accept("punct", ","):
                values.append(self.literal())
            self.take("punct", ")")
            return Condition(column.name, "IN", tuple(values), column.qualifier)
        op = self.take("op")
        return Condition(column.name, "!=" if op == "<>" else op, self.literal(), column.qualifier)

    def joins(self) -> tuple[Join, ...]:
        found: list[Join] = []
        while self.allow_joins and self.peek()[0] == "kw" and self.peek()[1] in ("JOIN", "INNER"):
            self.accept("kw", "INNER")
            self.take("kw", "JOIN")
            table = self.take("ident")
            alias = self.take("ident") if self.peek()[0] == "ident" else None
            self.take("kw", "ON")
            left = self.qualified()
            if self.take("op") != "=":
                raise SqlError("a JOIN needs ON <column> = <column>")
            found.append(Join(table, alias, left, self.qualified()))
        return tuple(found)

    def parse(self) -> Query:
        self.take("kw", "SELECT")
        items: list[SelectItem] | None = None
        if not self.accept("punct", "*"):
            items = [self.select_item()]
            while self.accept("punct", ","):
                items.append(self.select_item())
        self.take("kw", "FROM")
        table = self.take("ident")
        alias = self.take("ident") if self.peek()[0] == "ident" else None
        joins = self.joins()
        where: list[Condition] = []
        if self.accept("kw", "WHERE"):
            where.append(self.condition())
            while self.accept("kw", "AND"):
                where.append(self.condition())
        order: list[tuple[Column, bool]] = []
        if self.accept("kw", "ORDER"):
            self.take("kw", "BY")
            order.append(self.order_item())
            while self.accept("punct", ","):
                order.append(self.order_item())
        kind, value = self.peek()
        if kind != "end":
            shape = "SELECT ... FROM ... [JOIN ... ON a = b] WHERE ... AND ... ORDER BY"
            if not self.allow_joins:
                shape = "SELECT ... FROM ... WHERE ... AND ... ORDER BY"
            raise SqlError(f"did not understand {value!r} (only {shape})")
        bare = [(column.name, descending) for column, descending in order]
        return Query(items, table, where, bare, alias, joins, tuple(order))

    def order_item(self) -> tuple[Column, bool]:
        column = self.qualified()
        if self.accept("kw", "DESC"):
            return column, True
        self.accept("kw", "ASC")
        return column, False


def parse_select(sql: str, *, allow_joins: bool = False, allow_in: bool = False) -> Query:
    """Parse `SELECT cols|* FROM table [alias] [WHERE c op lit [AND ...]] [ORDER BY c [ASC|DESC], ...]`.

    Keywords are case-insensitive; literals are 'strings' ('' escapes a quote), numbers, NULL or
    function calls over literals. Anything else raises `SqlError` naming what was not understood.
    With `allow_joins`, `[INNER] JOIN table [alias] ON a.x = b.y` may follow the FROM table (any
    number of times); the caller decides which joins it can evaluate. With `allow_in`, a condition
    may also be `c IN (lit, lit, ...)`.

    >>> q = parse_select("SELECT t.id FROM transaction t JOIN transactionline tl ON tl.transaction = t.id",
    ...                  allow_joins=True)
    >>> q.joins[0].left, q.items[0].expr
    (Column(name='transaction', qualifier='tl'), Column(name='id', qualifier='t'))
    """
    return _Parser(sql, allow_joins=allow_joins, allow_in=allow_in).parse()


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {"=": operator.eq, "!=": operator.ne, "<": operator.lt}
_OPERATORS.update({"<=": operator.le, ">": operator.gt, ">=": operator.ge})


def compare(left: Any, op: str, right: Any) -> bool:
    """SQL comparison: NULL compares false except under IS / IS NOT; mismatched types compare false."""
    if op in ("IS", "IS NOT"):
        return (left is None) == (op == "IS")
    if op == "IN":
        return any(compare(left, "=", item) for item in right)
    if left is None or right is None:
        return False
    try:
        return bool(_OPERATORS[op](left, right))
    except TypeError:
        return False
