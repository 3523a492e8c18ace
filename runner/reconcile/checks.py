"""The comparison of each flow: what NetSuite holds against what the flow's target holds.

Records (customer → Zuora account, customer/vendor/contact → Zoho): NetSuite rows are read in bulk by
key, the target's records in bulk (readers.py), and each NetSuite record is paired with its target by our
link table first, then by the NetSuite id the target carries (Zuora `crmId`, Zoho `NetSuite_Id`). A
NetSuite record without a target is *missing_in_target*; a target naming a NetSuite id NetSuite does not
have is *missing_in_source* (targets carrying no NetSuite id at all are made elsewhere and only counted).
For each pair, the NetSuite record is mapped with the integration's active mapping of the flow (its
default otherwise), exactly as the flow would, and compared on the mapped fields an update would send
(create-only fields and fields the mapping carries for the flow only, `_x`, are left out; see
compare.py for how values are normalised). Cost: when every compared field comes from a top-level
NetSuite field, the SuiteQL rows are mapped directly; otherwise (addresses, sublists) each paired
record is fetched with the flow's own `fetch`, as many at a time as the NetSuite connection allows.

Invoices (NetSuite invoice → Zuora invoice): both sides are read in bulk (SuiteQL `transaction`, ZOQL
`Invoice`), paired by link, then by the NetSuite id the Zuora invoice carries; reported are missing
invoices, amounts that differ by a cent or more (*amount_mismatch*), and a void on one side only
(*status_mismatch*: NetSuite Voided against Zuora Canceled). Totals count and sum both sides per month
of the invoice date and per customer, over the Zuora invoices that came from NetSuite (paired, or
carrying a NetSuite id).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from anyio import to_thread
from sqlmodel import col, select

from connectors.http import ApiClient
from connectors.netsuite.client import NetSuiteClient
from connectors.zoho.client import ZohoClient
from connectors.zuora.client import ZuoraClient
from runner.flows import Flow, FlowContext, netsuite_table
from runner.flows.invoice import NETSUITE_ID_FIELD
from runner.flows.suiteql_read import sources
from runner.mapping import MappingError, apply
from runner.reconcile import readers
from runner.reconcile.compare import amount, differences, flatten, normal
from storage import links
from storage.db import session_scope
from storage.models import Link
from storage.reconcile import DriftKind, Found

Tick = Callable[[int], Awaitable[None]]
CHUNK = 200  # records fetched (when fetching is needed) before progress is reported again

# Per record flow: the target's NetSuite-id field (as the flow writes it) and the Zoho module, if any.
MATCH_FIELD = {"customer_account": "crmId", "customer_zoho": "NetSuite_Id", "vendor_zoho": "NetSuite_Id"}
MATCH_FIELD["contact_zoho"] = "NetSuite_Id"
LABEL_COLUMNS = {"customer": ["companyname", "entityid"], "vendor": ["companyname", "entityid"]}
LABEL_COLUMNS["contact"] = ["entityid"]
VOID_NETSUITE = frozenset({"V", "VOIDED"})
VOID_ZUORA = frozenset({"CANCELED", "CANCELLED"})
RECORD_FLOWS = frozenset(MATCH_FIELD)
CHECKED_FLOWS = RECORD_FLOWS | {"invoice"}


@dataclass
class FlowReport:
    """What one flow's comparison found, and its totals row for the page."""

    flow: str
    found: list[Found] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sides:
    """The clients and mapping one flow's comparison uses (a FlowContext as the flow would get it)."""

    ctx: FlowContext
    flow: Flow

    @property
    def netsuite(self) -> NetSuiteClient:
        return cast(NetSuiteClient, self.ctx.source)

    @property
    def target(self) -> ApiClient:
        return self.ctx.target

    @property
    def spec(self) -> dict[str, Any]:
        return self.ctx.mapping or self.flow.default_mapping


def compared_rules(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-level rules an update sends: not create-only, not carried for the flow only (`_x`)."""
    return [
        rule
        for rule in spec.get("fields") or []
        if not rule.get("create_only") and not str(rule.get("target", "")).startswith("_")
    ]


def needs_fetch(spec: dict[str, Any]) -> bool:
    """Whether a compared field reads more than a top-level NetSuite field (or a reference's id)."""
    for rule in compared_rules(spec):
        if "each" in rule:
            return True
        for path in sources(rule):
            rest = path.partition(".")[2]
            if path.startswith("$.") or (rest and rest != "id"):
                return True
    return False


def suiteql_columns(spec: dict[str, Any]) -> list[str]:
    """The SuiteQL columns the compared rules read (SuiteQL names are the fields' lower-cased names)."""
    return sorted(
        {path.split(".")[0].lower() for rule in compared_rules(spec) for path in sources(rule)} - {"id"}
    )


def record_from_row(spec: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A NetSuite record (REST field names) rebuilt from a SuiteQL row for the compared rules: 'T'/'F'
    become booleans, a reference column becomes {"id": value}."""
    record: dict[str, Any] = {"id": row.get("id")}
    for rule in compared_rules(spec):
        for path in sources(rule):
            head, _, rest = path.partition(".")
            value = row.get(head.lower())
            if value in ("T", "F"):
                value = value == "T"
            if value is not None:
                record[head] = {"id": value} if rest == "id" else value
    return record


def _label(row: dict[str, Any]) -> str:
    return str(row.get("companyname") or row.get("entityid") or row.get("id") or "")


async def check_records(sides: Sides, *, tick: Tick) -> FlowReport:
    """Compare one record flow (see the module docstring)."""
    flow, spec, ctx = sides.flow, sides.spec, sides.ctx
    match = MATCH_FIELD[flow.name]
    table, where = netsuite_table(flow.source_record)
    fetch = needs_fetch(spec)
    columns = [*LABEL_COLUMNS.get(flow.source_record, []), *([] if fetch else suiteql_columns(spec))]
    rows = await readers.netsuite_rows(sides.netsuite, table, columns, where=where)
    expected_paths = _expected_paths(spec)
    targets, shape = await _targets(sides, expected_paths, match)
    integration_id = ctx.integration.id or 0
    source_ids = [str(r["id"]) for r in rows]
    linked = await to_thread.run_sync(lambda: _links(ctx, flow.name, source_ids))
    by_match: dict[str, str] = {}
    for target_id, record in targets.items():
        if record.get(match):
            by_match.setdefault(str(record[match]), target_id)
    keys = match_keys(sides, rows, match, fetch)
    report = FlowReport(flow.name)
    paired: list[tuple[dict[str, Any], str]] = []
    claimed: set[str] = set()
    for row in rows:
        source_id = str(row["id"])
        link = linked.get(source_id)
        target_id = link if link and link in targets else by_match.get(keys.get(source_id, source_id))
        if target_id is None:
            report.found.append(Found(flow.name, DriftKind.MISSING_IN_TARGET, source_id, link, _label(row)))
            continue
        claimed.add(target_id)
        paired.append((row, target_id))
    known = set(source_ids) | set(keys.values())
    reverse = {target: source for source, target in linked.items()}
    orphans = 0
    for target_id, record in targets.items():
        if target_id in claimed:
            continue
        named = str(record.get(match) or reverse.get(target_id) or "")
        if named and named not in known:
            report.found.append(
                Found(flow.name, DriftKind.MISSING_IN_SOURCE, named, target_id, _target_label(record))
            )
        elif not named:
            orphans += 1
    mismatched = unmappable = 0
    done = len(rows) - len(paired)
    await tick(done)
    for start in range(0, len(paired), CHUNK):
        chunk = paired[start : start + CHUNK]
        records = await _source_records(sides, chunk, fetch)
        for (row, target_id), record in zip(chunk, records, strict=True):
            if isinstance(record, BaseException):
                unmappable += 1
                continue
            try:
                mapped = apply(spec, record, lookups=ctx.lookups)
            except MappingError:
                unmappable += 1
                continue
            expected = {k: v for k, v in flatten(mapped.for_update()).items() if not k.startswith("_")}
            actual = flatten(await shape(target_id))
            diffs = differences(expected, actual)
            if diffs:
                mismatched += 1
                report.found.append(
                    Found(
                        flow.name,
                        DriftKind.FIELD_MISMATCH,
                        str(row["id"]),
                        target_id,
                        _label(row),
                        tuple(diffs),
                    )
                )
        await tick(len(chunk))
    report.totals = {
        "flow": flow.name,
        "title": flow.title,
        "target_system": flow.target_system,
        "netsuite": len(rows),
        "target": len(targets),
        "matched": len(paired),
        "missing_in_target": sum(1 for f in report.found if f.kind == DriftKind.MISSING_IN_TARGET),
        "missing_in_source": sum(1 for f in report.found if f.kind == DriftKind.MISSING_IN_SOURCE),
        "field_mismatch": mismatched,
        "target_without_netsuite_id": orphans,
        "not_compared": unmappable,
        "integration_id": integration_id,
    }
    return report


def match_keys(sides: Sides, rows: list[dict[str, Any]], match: str, fetch: bool) -> dict[str, str]:
    """NetSuite id → the value the target carries as its NetSuite id, where a mapping rewrites it.

    The Zoho flows always write the NetSuite id itself (the upsert key); the Zuora account flow writes
    whatever its `crmId` rule maps, which a tenant may have changed (a prefix, another field). When that
    rule is not a plain copy of the id and the rows are mapped from SuiteQL, each row is mapped to learn
    its key; otherwise (records that would need a fetch each) the id itself is the key.
    """
    rule = next((r for r in sides.spec.get("fields") or [] if r.get("target") == match), None)
    plain = rule is None or (rule.get("source") == "id" and not rule.get("transform") and "value" not in rule)
    if match != "crmId" or plain or fetch:
        return {}
    keys = {}
    for row in rows:
        try:
            mapped = apply(sides.spec, record_from_row(sides.spec, row), lookups=sides.ctx.lookups)
        except MappingError:
            continue
        if mapped.payload.get(match):
            keys[str(row["id"])] = str(mapped.payload[match])
    return keys


def _expected_paths(spec: dict[str, Any]) -> list[str]:
    """The create-shape paths an update writes (what the target must be read for)."""
    return [str(rule["target"]) for rule in compared_rules(spec)]


def _target_label(record: dict[str, Any]) -> str:
    for name in ("name", "Account_Name", "Vendor_Name", "Last_Name"):
        value = record.get(name)
        if value:
            return str(value.get("name") if isinstance(value, dict) else value)
    return str(record.get("id") or "")


def _links(ctx: FlowContext, flow: str, source_ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(source_ids), 5000):  # bound the IN list
        found |= links.targets_of(
            ctx.engine,
            integration_id=ctx.integration.id or 0,
            flow=flow,
            source_ids=source_ids[start : start + 5000],
        )
    return found


ShapeOf = Callable[[str], Awaitable[dict[str, Any]]]


async def _targets(sides: Sides, paths: list[str], match: str) -> tuple[dict[str, dict[str, Any]], ShapeOf]:
    """The target's records by id, and how to read one paired record's compared values."""
    client = sides.target
    if isinstance(client, ZuoraClient):
        zuora_paths = [p for p in paths if readers.zuora_readable([p])]
        accounts = await readers.zuora_accounts(client, zuora_paths)
        if readers.zuora_readable(paths):

            async def from_query(target_id: str) -> dict[str, Any]:
                return {k: v for k, v in accounts[target_id].items() if not k.startswith("_")}

            return accounts, from_query

        async def from_detail(target_id: str) -> dict[str, Any]:
            return readers.account_shape(await client.get_account(target_id))

        return accounts, from_detail
    zoho = cast(ZohoClient, client)
    module = getattr(sides.flow, "module", "")
    fields = sorted({p.split(".")[0] for p in paths} | {match, _name_field(module)})
    records = await readers.zoho_records(zoho, module, fields[:50])

    async def from_list(target_id: str) -> dict[str, Any]:
        return records[target_id]

    return records, from_list


def _name_field(module: str) -> str:
    return {"Accounts": "Account_Name", "Vendors": "Vendor_Name", "Contacts": "Last_Name"}.get(module, "id")


async def _source_records(
    sides: Sides, chunk: list[tuple[dict[str, Any], str]], fetch: bool
) -> list[dict[str, Any] | BaseException]:
    if not fetch:
        return [record_from_row(sides.spec, row) for row, _ in chunk]
    # The client's own concurrency cap bounds how many of these are in flight at once.
    return list(
        await asyncio.gather(
            *(sides.flow.fetch(sides.ctx, str(row["id"])) for row, _ in chunk), return_exceptions=True
        )
    )


# --- invoices --------------------------------------------------------------------------------------
async def check_invoices(sides: Sides, *, tick: Tick) -> FlowReport:
    """Compare NetSuite invoices with Zuora invoices (see the module docstring)."""
    ctx = sides.ctx
    zuora = cast(ZuoraClient, sides.target)
    table, where = netsuite_table("invoice")
    columns = ["tranid", "entity", "TO_CHAR(trandate, 'YYYY-MM-DD') AS day", "status", "foreigntotal"]
    rows = await readers.netsuite_rows(sides.netsuite, table, columns, where=where)
    writes_id = any(rule.get("target") == NETSUITE_ID_FIELD for rule in sides.spec.get("fields") or [])
    invoices = await readers.zuora_invoices(zuora, netsuite_field=NETSUITE_ID_FIELD if writes_id else None)
    accounts = {
        str(row.get("Id")): str(row.get("CrmId") or "")
        async for row in zuora.query("select Id, CrmId from Account")
    }
    source_ids = [str(r["id"]) for r in rows]
    linked, account_links = await to_thread.run_sync(
        lambda: (_links(ctx, "invoice", source_ids), _reverse_links(ctx, "customer_account"))
    )
    by_id = {str(i.get("Id")): i for i in invoices}
    by_netsuite = {str(i[NETSUITE_ID_FIELD]): str(i["Id"]) for i in invoices if i.get(NETSUITE_ID_FIELD)}
    report = FlowReport("invoice")
    periods: dict[str, dict[str, Any]] = defaultdict(_bucket)
    customers: dict[str, dict[str, Any]] = defaultdict(_bucket)
    in_scope: set[str] = set()
    known = set(source_ids)
    for row in rows:
        source_id = str(row["id"])
        total = amount(row.get("foreigntotal"))
        customer = str(row.get("entity") or "")
        _add(periods[str(row.get("day") or "")[:7]], "netsuite", total)
        _add(customers[customer], "netsuite", total)
        label = f"{row.get('tranid') or source_id} (customer {customer})"
        link = linked.get(source_id)
        target_id = link if link and link in by_id else by_netsuite.get(source_id)
        if target_id is None:
            report.found.append(Found("invoice", DriftKind.MISSING_IN_TARGET, source_id, link, label))
            continue
        in_scope.add(target_id)
        invoice = by_id[target_id]
        theirs = amount(invoice.get("Amount"))
        if theirs != total:
            diff = {"field": "amount", "netsuite": str(total), "target": str(theirs)}
            report.found.append(
                Found("invoice", DriftKind.AMOUNT_MISMATCH, source_id, target_id, label, (diff,))
            )
        ours_void = str(row.get("status") or "").upper() in VOID_NETSUITE
        theirs_void = str(invoice.get("Status") or "").upper() in VOID_ZUORA
        if ours_void != theirs_void:
            diff = {"field": "status", "netsuite": row.get("status"), "target": invoice.get("Status")}
            report.found.append(
                Found("invoice", DriftKind.STATUS_MISMATCH, source_id, target_id, label, (diff,))
            )
    reverse = {target: source for source, target in linked.items()}
    for invoice in invoices:
        target_id = str(invoice["Id"])
        named = str(invoice.get(NETSUITE_ID_FIELD) or reverse.get(target_id) or "")
        if target_id not in in_scope and named and named not in known:
            label = f"Zuora invoice {invoice.get('InvoiceNumber') or target_id}"
            report.found.append(Found("invoice", DriftKind.MISSING_IN_SOURCE, named, target_id, label))
            in_scope.add(target_id)
        if target_id not in in_scope:
            continue
        account = str(invoice.get("AccountId") or "")
        customer = account_links.get(account) or accounts.get(account) or f"zuora:{account}"
        theirs = amount(invoice.get("Amount"))
        _add(periods[str(invoice.get("InvoiceDate") or "")[:7]], "target", theirs)
        _add(customers[customer], "target", theirs)
    await tick(len(rows))
    kinds = [f.kind for f in report.found]
    report.totals = {
        "flow": "invoice",
        "title": sides.flow.title,
        "target_system": "zuora",
        "netsuite": len(rows),
        "target": len(in_scope),
        "matched": len(rows) - kinds.count(DriftKind.MISSING_IN_TARGET),
        "missing_in_target": kinds.count(DriftKind.MISSING_IN_TARGET),
        "missing_in_source": kinds.count(DriftKind.MISSING_IN_SOURCE),
        "amount_mismatch": kinds.count(DriftKind.AMOUNT_MISMATCH),
        "status_mismatch": kinds.count(DriftKind.STATUS_MISMATCH),
        "by_period": [{"period": k, **_money(v)} for k, v in sorted(periods.items())],
        "by_customer": [{"customer_id": k, **_money(v)} for k, v in sorted(customers.items())],
    }
    return report


def _bucket() -> dict[str, Any]:
    return {
        "netsuite_count": 0,
        "netsuite_amount": Decimal(0),
        "target_count": 0,
        "target_amount": Decimal(0),
    }


def _add(bucket: dict[str, Any], side: str, value: Decimal) -> None:
    bucket[f"{side}_count"] += 1
    bucket[f"{side}_amount"] += value


def _money(bucket: dict[str, Any]) -> dict[str, Any]:
    out = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in bucket.items()}
    out["agrees"] = bucket["netsuite_count"] == bucket["target_count"] and normal(
        bucket["netsuite_amount"]
    ) == normal(bucket["target_amount"])
    return out


def _reverse_links(ctx: FlowContext, flow: str) -> dict[str, str]:
    """Target id → source id of every link of a flow (Zuora account → NetSuite customer)."""
    with session_scope(ctx.engine) as session:
        rows = session.exec(
            select(Link.target_id, Link.source_id).where(
                col(Link.integration_id) == (ctx.integration.id or 0),
                col(Link.flow) == flow,
                col(Link.target_id).is_not(None),
            )
        ).all()
    return {str(target): str(source) for target, source in rows}
