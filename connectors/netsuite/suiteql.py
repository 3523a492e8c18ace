"""SuiteQL over the NetSuite emulator's in-memory records (notes §4, /work/shared/api/netsuite.md),
and the invoice model its transaction tables are built from.

Tables: `customer`, `vendor`, `contact` (columns are the records' own fields, lower-cased), and,
built from the stored invoices, `transaction` (one row per invoice) and `transactionline` (a main
line plus one row per item line). What a query may use is what the connector and the clients in
the notes send: `SELECT` columns, `TO_CHAR(col, 'fmt')`, `BUILTIN.DF(col)` and aliases;
`[INNER] JOIN t2 ON a.x = b.y`; `WHERE` comparisons and `col IN (...)` joined by `AND`, dates written `TO_TIMESTAMP('...', 'YYYY-MM-DD HH24:MI:SS')`
or `TO_DATE`; `ORDER BY`. Anything else is refused with the reason, as NetSuite's 400 would be.

Rows come back the way the REST API shows them: lower-case names, every value a string, booleans
'T'/'F', null columns left out (UNCONFIRMED, notes §4; `omit_nulls`), dates in the user's preferred
format and time zone (UTC unless `tz` says otherwise; the real one is UNCONFIRMED, notes §4).
`suiteql_page` wraps them in the collection envelope and enforces the page and row limits.

Invoices are kept as record fields (`entity`, `tranDate`, `item: {"items": [lines]}`, ...);
`merge_invoice` applies a record API write to them, with the rules both the record API and these
tables rely on (numbered lines, amount = rate x quantity, a status letter).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol

from connectors.emulator_sql import Call, Column, Query, SqlError, compare, parse_select

ENTITY_TABLES = ("customer", "vendor", "contact")
INVOICE_TYPE = "CustInvc"  # transaction.type of an invoice (notes §4)
# Invoice status: SuiteQL answers the letter, the record API the name. The letters are UNCONFIRMED
# beyond A (Open) and B (Paid In Full).
INVOICE_STATUSES = {"A": "Open", "B": "Paid In Full", "D": "Pending Approval", "E": "Rejected", "V": "Voided"}
SUITEQL_MAX_LIMIT = 1000  # rows per page (notes §4)
SUITEQL_ROW_CAP = 100_000  # rows per query (notes §4, ORA:section_157909186990)
_LINE_NAMES = {name: name for name in ("item", "amount", "quantity", "rate", "description", "line")}
_ORACLE_FORMAT = re.compile(r"YYYY|HH24|HH12|HH|MM|DD|MI|SS|AM|PM")
_STRFTIME = {"YYYY": "%Y", "MM": "%m", "DD": "%d", "HH24": "%H", "HH12": "%I", "HH": "%I"}
_STRFTIME |= {"MI": "%M", "SS": "%S"}  # AM and PM become %p


class InvoiceError(ValueError):
    """An invoice write refused: `args` are (HTTP status, o:errorCode, detail, o:errorPath)."""


class PagingError(ValueError):
    """`limit`/`offset` refused; `param` is the query parameter to name in o:errorQueryParam."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class StoredLike(Protocol):
    """What the emulator keeps per record (its `StoredRecord`)."""

    id: str
    fields: dict[str, Any]
    created: float  # epoch seconds
    modified: float  # epoch seconds


@dataclass(frozen=True)
class Table:
    """A queryable table: its columns (None: whatever the records hold) and which hold dates."""

    name: str
    columns: frozenset[str] | None
    custom_prefix: str | None  # custbody_/custcol_ fields exist on any row of the table
    date_columns: frozenset[str]

    def has(self, column: str) -> bool:
        prefix = self.custom_prefix
        return self.columns is None or column in self.columns or bool(prefix and column.startswith(prefix))


_ENTITY_DATES = frozenset({"datecreated", "lastmodifieddate"})
_TRANSACTION = "id type recordtype tranid entity trandate duedate status foreigntotal currency subsidiary "
_TRANSACTION += "externalid memo createddate lastmodifieddate"
_LINE = "id uniquekey transaction linesequencenumber mainline item quantity rate netamount memo entity"
TABLES = {name: Table(name, None, None, _ENTITY_DATES) for name in ENTITY_TABLES}
TABLES["transaction"] = Table(
    "transaction",
    frozenset(_TRANSACTION.split()),
    "custbody",
    frozenset({"trandate", "duedate", "createddate", "lastmodifieddate"}),
)
TABLES["transactionline"] = Table("transactionline", frozenset(_LINE.split()), "custcol", frozenset())
# Subsidiaries are account setup, not synced data: the root one (parent IS NULL) is the company, which a
# ping reports. Rows come from `NetSuiteEmulator.subsidiaries`.
TABLES["subsidiary"] = Table(
    "subsidiary", frozenset(["id", "name", "parent", "country", "currency", "isinactive"]), None, frozenset()
)


# ---------------------------------------------------------------------------------------------
# The invoice model


def invoice_lines(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored item lines of an invoice's fields."""
    item = fields.get("item")
    return list(item.get("items", [])) if isinstance(item, dict) else []


def invoice_total(fields: dict[str, Any]) -> float:
    """The sum of the line amounts (no tax: REST needs SuiteTax for that, notes §3)."""
    return round(sum(float(line.get("amount") or 0) for line in invoice_lines(fields)), 2)


def status_code(value: Any) -> str:
    """'A' or 'Open' -> 'A': seeds may name an invoice status either way."""
    by_name = {name.lower(): code for code, name in INVOICE_STATUSES.items()}
    code = by_name.get(str(value).lower(), str(value).upper())
    if code not in INVOICE_STATUSES:
        raise ValueError(f"unknown invoice status {value!r} (one of {', '.join(INVOICE_STATUSES)})")
    return code


def merge_invoice(
    existing: dict[str, Any] | None, incoming: dict[str, Any], replace_lines: bool, today: str
) -> dict[str, Any]:
    """An invoice's fields after a write: body fields merged, `item` lines merged or replaced.

    Lines in the body that carry the `line` number of a stored line update it; the others are
    added after the last line; `replace_lines` (`?replace=item`) drops the stored lines first.
    Oracle documents the `replace` parameter; the merge-by-line default is UNCONFIRMED.
    """
    base = existing or {"tranDate": today, "currency": {"id": "1"}, "status": "A"}
    merged = {k: v for k, v in {**base, **incoming}.items() if v is not None and k != "item"}
    kept = [] if replace_lines or existing is None else invoice_lines(existing)
    # (line, where an error in it points: the body's index for lines the body touched)
    lines = [(dict(x), f"item.items[{i}]") for i, x in enumerate(kept)]
    sublist = incoming.get("item", {})
    if not isinstance(sublist, dict) or not isinstance(sublist.get("items", []), list):
        raise InvoiceError(400, "INVALID_CONTENT", 'The item sublist must be {"items": [...]}.', "item")
    for index, raw in enumerate(sublist.get("items", [])):
        path = f"item.items[{index}]"
        if not isinstance(raw, dict):
            raise InvoiceError(400, "INVALID_CONTENT", "Each item line must be an object.", path)
        raw = {_LINE_NAMES.get(k.lower(), k): v for k, v in raw.items()}
        found = [n for n, (x, _) in enumerate(lines) if "line" in raw and str(x["line"]) == str(raw["line"])]
        if not found:
            lines.append(({k: v for k, v in raw.items() if k != "line"}, path))
            continue
        target = lines[found[0]][0]
        if "amount" not in raw and ("rate" in raw or "quantity" in raw):
            target.pop("amount", None)  # worked out again from the new rate or quantity
        target.update(raw)
        lines[found[0]] = (target, path)
    if not lines:
        raise InvoiceError(
            400, "USER_ERROR", "You must enter at least one line item for this transaction.", "item"
        )
    next_line = max((int(x["line"]) for x, _ in lines if "line" in x), default=0) + 1
    numbered = []
    for line, path in lines:
        if "line" not in line:
            line["line"], next_line = next_line, next_line + 1
        numbered.append(_line(line, path))
    merged["item"] = {"items": numbered}
    if not (isinstance(merged.get("entity"), dict) and merged["entity"].get("id")):
        raise InvoiceError(400, "USER_ERROR", "Please enter value(s) for: Customer.", "entity")
    for name in ("tranDate", "dueDate"):
        if name in merged and not _is_day(merged[name]):
            raise InvoiceError(400, "INVALID_CONTENT", f"Invalid value for {name}: use YYYY-MM-DD.", name)
    return merged


def _line(line: dict[str, Any], path: str) -> dict[str, Any]:
    """One item line with its item reference, quantity (default 1), rate and amount worked out."""
    item = line.get("item")
    if not (isinstance(item, dict) and item.get("id")):
        raise InvoiceError(400, "USER_ERROR", "Please enter value(s) for: Item.", f"{path}.item")
    quantity = _number(line.get("quantity", 1), f"{path}.quantity")
    rate, amount = line.get("rate"), line.get("amount")
    if rate is None and amount is None:
        raise InvoiceError(400, "USER_ERROR", "Please enter value(s) for: Amount.", f"{path}.amount")
    if amount is None:
        amount = round(_number(rate, f"{path}.rate") * quantity, 2)
    amount = _number(amount, f"{path}.amount")
    rate = _number(rate, f"{path}.rate") if rate is not None else (amount / quantity if quantity else amount)
    reference = {"id": str(item["id"]), **({"refName": item["refName"]} if "refName" in item else {})}
    return {**line, "item": reference, "quantity": quantity, "rate": rate, "amount": amount}


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvoiceError(400, "INVALID_CONTENT", f"Invalid value {value!r}: a number is expected.", path)
    return float(value)


def _is_day(value: Any) -> bool:
    try:
        datetime.strptime(str(value), "%Y-%m-%d")
    except ValueError:
        return False
    return True


def oracle_to_strftime(fmt: str) -> str:
    """Translate an Oracle date format such as 'YYYY-MM-DD HH24:MI:SS' to strftime."""
    escaped = fmt.replace("%", "%%")
    return _ORACLE_FORMAT.sub(lambda m: _STRFTIME.get(m.group(), "%p"), escaped)


# ---------------------------------------------------------------------------------------------
# Rows from records


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _day(text: Any, tz: tzinfo) -> datetime | None:
    # A date is midnight where the account is, so it reads as the same day in that time zone.
    return datetime.strptime(str(text), "%Y-%m-%d").replace(tzinfo=tz) if text else None


def _ref(value: Any) -> int | str | None:
    # A reference column holds the id; numeric ids compare as numbers, like NetSuite's integer keys.
    if not isinstance(value, dict) or "id" not in value:
        return None
    ref = str(value["id"])
    return int(ref) if ref.isdigit() else ref


def _key(record_id: str) -> int | str:
    return int(record_id) if record_id.isdigit() else record_id


class Row(dict[str, Any]):
    """A row before rendering; `display` holds what `BUILTIN.DF(column)` shows for a reference column
    (its refName) where that differs from the column's value (the internal id)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.display: dict[str, str] = {}


def entity_row(record: StoredLike) -> dict[str, Any]:
    """A customer/vendor/contact as a row before rendering: typed values, lower-case column names."""
    row = Row(id=_key(record.id))
    for name, value in record.fields.items():
        if isinstance(value, bool):
            row[name.lower()] = "T" if value else "F"
        elif isinstance(value, dict) and "id" in value and "items" not in value:
            row[name.lower()] = str(value["id"])
            if value.get("refName") is not None:
                row.display[name.lower()] = str(value["refName"])
        elif value is not None and not isinstance(value, dict | list):
            row[name.lower()] = value
    row["datecreated"], row["lastmodifieddate"] = _utc(record.created), _utc(record.modified)
    return row


def transaction_row(record: StoredLike, tz: tzinfo = UTC) -> dict[str, Any]:
    """An invoice as a `transaction` row (its dates are days in the account's time zone `tz`)."""
    fields = record.fields
    row: dict[str, Any] = {
        "id": _key(record.id),
        "type": INVOICE_TYPE,
        "recordtype": "invoice",
        "tranid": fields.get("tranId"),
        "entity": _ref(fields.get("entity")),
        "trandate": _day(fields.get("tranDate"), tz),
        "duedate": _day(fields.get("dueDate"), tz),
        "status": fields.get("status", "A"),
        "foreigntotal": invoice_total(fields),
        "currency": _ref(fields.get("currency")),
        "subsidiary": _ref(fields.get("subsidiary")),
        "externalid": fields.get("externalId"),
        "memo": fields.get("memo"),
        "createddate": _utc(record.created),
        "lastmodifieddate": _utc(record.modified),
    }
    row.update({k.lower(): v for k, v in fields.items() if k.lower().startswith("custbody")})
    return row


def transaction_line_rows(record: StoredLike, sales_negative: bool) -> list[dict[str, Any]]:
    """An invoice's `transactionline` rows: the main line (id 0) and its item lines (id = line number).

    With `sales_negative`, item-line quantity and netamount carry the posting sign of a sales line
    (negative, a credit to income), as SuiteQL is widely reported to show them (UNCONFIRMED).
    """
    tid, sign = _key(record.id), -1 if sales_negative else 1
    entity = _ref(record.fields.get("entity"))
    base = {"transaction": tid, "entity": entity}
    total = invoice_total(record.fields)
    main = {**base, "id": 0, "linesequencenumber": 0, "mainline": "T", "netamount": total}
    rows = [main]
    for line in invoice_lines(record.fields):
        number = int(line["line"])
        row = {**base, "id": number, "linesequencenumber": number, "mainline": "F"}
        row.update(item=_ref(line.get("item")), rate=line.get("rate"), memo=line.get("description"))
        row.update(quantity=sign * float(line["quantity"]), netamount=sign * float(line["amount"]))
        row.update({k.lower(): v for k, v in line.items() if k.lower().startswith("custcol")})
        rows.append(row)
    for row in rows:  # unique across all lines of the account, like NetSuite's uniquekey
        row["uniquekey"] = (tid * 1000 + row["id"]) if isinstance(tid, int) else f"{tid}.{row['id']}"
    return rows


def table_rows(
    table: str, records: Callable[[str], Iterable[StoredLike]], sales_negative: bool, tz: tzinfo = UTC
) -> list[dict[str, Any]]:
    """Every row of `table`, built from the records `records(record_type)` yields."""
    if table in ENTITY_TABLES:
        return [entity_row(r) for r in records(table)]
    if table == "transaction":
        return [transaction_row(r, tz) for r in records("invoice")]
    return [row for r in records("invoice") for row in transaction_line_rows(r, sales_negative)]


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class _Source:
    table: Table
    names: frozenset[str]  # what a qualifier may call it: the alias and the table name


class _Scope:
    """The tables of one query and how its column references resolve to (source index, column)."""

    def __init__(self, query: Query) -> None:
        self.sources: list[_Source] = []
        for name, alias in [(query.table, query.alias), *((j.table, j.alias) for j in query.joins)]:
            table = TABLES.get(name.lower())
            if table is None:
                raise SqlError(f"table {name!r} is not supported (only {', '.join(TABLES)})")
            names = {name.lower(), *([alias.lower()] if alias else [])}
            self.sources.append(_Source(table, frozenset(names)))

    def resolve(self, column: Column, within: int | None = None) -> tuple[int, str]:
        name = column.name.lower()
        count = len(self.sources) if within is None else within
        if column.qualifier is not None:
            qualifier = column.qualifier.lower()
            found = [i for i, s in enumerate(self.sources[:count]) if qualifier in s.names]
            if not found:
                raise SqlError(
                    f"unknown table or alias {column.qualifier!r} in {column.qualifier}.{column.name}"
                )
        else:
            found = [i for i, s in enumerate(self.sources[:count]) if s.table.has(name)]
            if len(found) > 1:
                raise SqlError(f"column {column.name!r} is ambiguously defined: qualify it")
        if not found or not self.sources[found[0]].table.has(name):
            table = self.sources[found[0] if found else 0].table.name
            raise SqlError(f"Search error occurred: Field '{name}' for record '{table}' was not found.")
        return found[0], name

    def date_column(self, ref: tuple[int, str]) -> bool:
        return ref[1] in self.sources[ref[0]].table.date_columns


def run_suiteql(
    sql: str,
    rows_of: Callable[[str], list[dict[str, Any]]],
    date_format: Callable[[datetime], str],
    *,
    omit_nulls: bool = True,
    tz: tzinfo = UTC,
) -> list[dict[str, Any]]:
    """Evaluate `sql`; `rows_of(table)` gives typed rows; returns rendered rows with `links: []`.

    `omit_nulls` leaves null columns out of a row (else they are JSON null); `tz` is the time zone
    TO_TIMESTAMP literals are read in and dates are shown in.
    """
    query = parse_select(sql, allow_joins=True, allow_in=True)
    scope = _Scope(query)
    selected = _selection(query, scope, tz)
    where = [
        (ref := scope.resolve(Column(c.column, c.qualifier)), c.op, _literal(scope, ref, c.value, tz))
        for c in query.where
    ]
    order = [(scope.resolve(column), descending) for column, descending in query.order_columns]
    combos: list[tuple[dict[str, Any], ...]] = [(row,) for row in rows_of(scope.sources[0].table.name)]
    for index, join in enumerate(query.joins, start=1):
        combos = _join(scope, index, join.left, join.right, combos, rows_of(scope.sources[index].table.name))
    combos = [c for c in combos if all(_matches(c[i].get(col), op, value) for (i, col), op, value in where)]
    for (i, col), descending in reversed(order):  # stable sorts, last key first
        present = [c for c in combos if c[i].get(col) is not None]
        present.sort(key=lambda c: _sort_key(c[i][col]), reverse=descending)
        combos = present + [c for c in combos if c[i].get(col) is None]
    return [_render(selected(combo), date_format, omit_nulls, tz) for combo in combos]


Selector = Callable[[tuple[dict[str, Any], ...]], list[tuple[str, Any]]]


def _selection(query: Query, scope: _Scope, tz: tzinfo) -> Selector:
    if query.items is None:
        return lambda combo: [pair for row in combo for pair in row.items()]
    picks: list[tuple[str, Callable[[tuple[dict[str, Any], ...]], Any]]] = []
    for index, item in enumerate(query.items, start=1):
        expr = item.expr
        if isinstance(expr, Column):
            i, col = scope.resolve(expr)
            picks.append(((item.alias or col).lower(), lambda c, i=i, col=col: c[i].get(col)))
            continue
        if expr.name == "BUILTIN.DF" and len(expr.args) == 1 and isinstance(expr.args[0], Column):
            # The display value: a reference's name, any other column's own value (notes §4).
            i, col = scope.resolve(expr.args[0])
            name = (item.alias or f"expr{index}").lower()
            picks.append((name, lambda c, i=i, col=col: _display(c[i], col)))
            continue
        if expr.name != "TO_CHAR" or len(expr.args) != 2 or not isinstance(expr.args[0], Column):
            raise SqlError(
                f"function {expr.name} is not supported in the select list"
                " (only TO_CHAR(column, 'fmt') and BUILTIN.DF(column))"
            )
        (i, col), fmt = scope.resolve(expr.args[0]), oracle_to_strftime(str(expr.args[1]))
        picks.append(
            (
                (item.alias or f"expr{index}").lower(),
                lambda c, i=i, col=col, f=fmt: _to_char(c[i].get(col), f, tz),
            )
        )
    return lambda combo: [(name, get(combo)) for name, get in picks]


def _join(
    scope: _Scope,
    index: int,
    left: Column,
    right: Column,
    combos: list[tuple[dict[str, Any], ...]],
    rows: list[dict[str, Any]],
) -> list[tuple[dict[str, Any], ...]]:
    # An inner equi-join: one side of ON names the joined table, the other a table before it.
    ends = [_join_end(scope, index, column) for column in (left, right)]
    mine = [end for end in ends if end[0] == index]
    theirs = [end for end in ends if end[0] < index]
    if len(mine) != 1 or len(theirs) != 1:
        raise SqlError("JOIN ... ON must compare a column of the joined table with one of an earlier table")
    (_, new_col), (old_index, old_col) = mine[0], theirs[0]
    by_key: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(_join_key(row.get(new_col)), []).append(row)
    return [
        (*combo, row)
        for combo in combos
        if combo[old_index].get(old_col) is not None
        for row in by_key.get(_join_key(combo[old_index].get(old_col)), [])
    ]


def _join_end(scope: _Scope, index: int, column: Column) -> tuple[int, str]:
    if column.qualifier is None and scope.sources[index].table.has(column.name.lower()):
        return index, column.name.lower()
    if column.qualifier is not None and column.qualifier.lower() in scope.sources[index].names:
        return scope.resolve(column, index + 1)
    return scope.resolve(column, index)


def _join_key(value: Any) -> Any:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return str(value)


def _display(row: dict[str, Any], column: str) -> Any:
    shown = row.display.get(column) if isinstance(row, Row) else None
    return shown if shown is not None else row.get(column)


def _to_char(value: Any, fmt: str, tz: tzinfo) -> Any:
    return value.astimezone(tz).strftime(fmt) if isinstance(value, datetime) else value


def _render(
    selected: list[tuple[str, Any]], date_format: Callable[[datetime], str], omit_nulls: bool, tz: tzinfo
) -> dict[str, Any]:
    out: dict[str, Any] = {"links": []}
    for name, value in selected:
        if value is None:
            if not omit_nulls:
                out[name] = None
            continue  # null columns are left out by default (UNCONFIRMED, notes §4)
        if isinstance(value, datetime):
            out[name] = date_format(value.astimezone(tz))
        elif isinstance(value, float) and value.is_integer():
            out[name] = str(int(value))
        else:
            out[name] = str(value)
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    # Numbers, then timestamps, then text: a column never mixes them, but sorting must not crash if it does.
    if isinstance(value, int | float):
        return 0, value
    return (1, value) if isinstance(value, datetime) else (2, str(value))


def _literal(scope: _Scope, ref: tuple[int, str], literal: Any, tz: tzinfo) -> Any:
    if isinstance(literal, tuple):  # IN (...)
        return tuple(_literal(scope, ref, item, tz) for item in literal)
    value = _call_literal(literal, tz) if isinstance(literal, Call) else literal
    if scope.date_column(ref) != isinstance(value, datetime) and value is not None:
        raise SqlError(f"compare {ref[1]} with TO_TIMESTAMP('...', 'YYYY-MM-DD HH24:MI:SS')")
    return value


def _matches(value: Any, op: str, literal: Any) -> bool:
    if op == "IN":
        return any(_matches(value, "=", item) for item in literal)
    if value is None or literal is None or isinstance(value, datetime):
        return compare(value, op, literal)
    # Numbers against strings: as numbers when both read as numbers ('1000' vs id), else as text.
    if isinstance(value, int | float) != isinstance(literal, int | float):
        try:
            value, literal = float(value), float(literal)
        except ValueError:
            value, literal = str(value), str(literal)
    return compare(value, op, literal)


def _call_literal(call: Call, tz: tzinfo) -> datetime:
    if call.name not in ("TO_TIMESTAMP", "TO_DATE") or len(call.args) != 2:
        raise SqlError(f"function {call.name} is not supported here (use TO_TIMESTAMP('...', 'fmt'))")
    try:
        parsed = datetime.strptime(str(call.args[0]), oracle_to_strftime(str(call.args[1])))
    except ValueError as exc:
        raise SqlError(f"{call.name}({call.args[0]!r}, {call.args[1]!r}): {exc}") from exc
    return parsed.replace(tzinfo=tz)  # read in the account's time zone (UNCONFIRMED, notes §4)


# ---------------------------------------------------------------------------------------------
# Paging


def check_paging(
    limit_text: str | None, offset_text: str | None, cap: int, multiple: bool
) -> tuple[int, int]:
    """Validate `?limit=&offset=`: limit 1..1000, offset >= 0, and offset + limit within `cap`."""
    try:
        limit = int(limit_text if limit_text is not None else SUITEQL_MAX_LIMIT)
        offset = int(offset_text if offset_text is not None else 0)
    except ValueError as exc:
        raise PagingError("limit", "limit and offset must be integers.") from exc
    if not 1 <= limit <= SUITEQL_MAX_LIMIT:
        raise PagingError("limit", f"Invalid limit {limit}: it must be between 1 and {SUITEQL_MAX_LIMIT}.")
    if offset < 0 or (multiple and offset % limit):
        # `multiple`: third parties say offset must be a multiple of limit (UNCONFIRMED, notes §4).
        raise PagingError("offset", f"Invalid offset {offset}.")
    if offset + limit > cap:
        # The cap is documented (notes §4, ORA:section_157909186990); this wording is ours (UNCONFIRMED).
        raise PagingError(
            "offset",
            f"The sum of offset ({offset}) and limit ({limit}) exceeds {cap}, the most rows a SuiteQL "
            "query can return. Narrow the query instead, for example WHERE id > <last id> ORDER BY id.",
        )
    return limit, offset


def suiteql_page(url: str, rows: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    """The collection envelope: links (next, self), count, hasMore, items, offset, totalResults.

    `url` is the SuiteQL endpoint the links point back to; `rows` is the whole (capped) result.
    """
    items = rows[offset : offset + limit]
    has_more = offset + len(items) < len(rows)
    page = f"{url}?limit={limit}&offset="
    links = [{"rel": "next", "href": f"{page}{offset + limit}"}] if has_more else []
    links.append({"rel": "self", "href": f"{page}{offset}"})
    envelope = {"links": links, "count": len(items), "hasMore": has_more, "items": items}
    return {**envelope, "offset": offset, "totalResults": len(rows)}
