"""NetSuite invoice → Zuora standalone invoice (design.md §1).

Account. A Zuora invoice needs the Zuora account, which the NetSuite invoice does not name: it names the
NetSuite customer (`entity.id`). `fetch` therefore returns an enriched snapshot, the invoice with its item
lines plus `zuoraAccount: {id, customerId, via}`, and the mapping reads the account id from it like any
other field. The account is the target of the customer's `customer_account` link, else the account whose
crmId is the customer id, else the customer is synced first through CustomerToAccount (its fetch, the
integration's active customer mapping or its default, its guarded write). Resolving the account in
`fetch` keeps it in the audit snapshot, so a replay (remap or re-send) needs neither NetSuite nor the
account lookup again.

Match key. The NetSuite internal id, kept in our link table and on the Zuora invoice (the
`NetSuiteInvoiceId__c` custom field of the default mapping: the tenant defines it on the Invoice object,
or drops the rule); the NetSuite tranId travels as the Zuora `invoiceNumber`. A write claims the link,
looks among the account's invoices for one already made for this NetSuite invoice (a crash between
create and link, or a retry after Zuora's 24 h idempotency window), and only then posts under the link's
Idempotency-Key. A linked invoice is never written again: a NetSuite edit or a replay of a synced
invoice is audited as `skip`, so one NetSuite invoice never makes two Zuora invoices.

Invoices are created Draft (Zuora's default); add `{"target": "status", "value": "Posted"}` to the
mapping to post them in the same call.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from anyio import to_thread

from connectors.errors import RemoteError
from connectors.netsuite.client import NetSuiteClient
from connectors.zuora.client import ZuoraClient
from runner.flows import FlowContext, Postpone, WriteResult
from runner.flows.customer_account import CustomerToAccount, _hash
from runner.mapping import Mapped, MappingError, apply, lookup
from storage import crud, links

LINK_BUSY_RETRY = 2.0  # seconds to wait when another worker is creating the same invoice
ACCOUNT_KEY = "zuoraAccount"  # what fetch adds to the NetSuite invoice: the Zuora account to bill
NETSUITE_ID_FIELD = "NetSuiteInvoiceId__c"  # Zuora invoice custom field holding the NetSuite internal id
GL_TABLE = "gl_account_charge"  # lookup table: NetSuite GL account → Zuora accounting code

DAY = {"name": "date", "format": "%Y-%m-%d"}  # Zuora dates are yyyy-mm-dd (shared/api/zuora.md §4)
NUMBER = {"name": "number"}

# POST /v1/invoices field names (shared/api/zuora.md §4). Line sources are relative to each NetSuite item
# line; `$.` reads the invoice itself. The accounting code comes from the line's GL account through the
# integration's `gl_account_charge` table (no product rate plan charge is sent: with one, Zuora would take
# the accounting code from its catalog instead, shared/api/zuora.md §4). The GL account is read as NetSuite
# shows the line's `account` reference (its refName); whether the REST item line carries that reference
# is UNCONFIRMED, so a tenant whose lines lack it points the rule at a `custcol_*` field instead.
DEFAULT_MAPPING: dict[str, Any] = {
    "fields": [
        {"target": "accountId", "source": f"{ACCOUNT_KEY}.id", "required": True},
        {"target": "invoiceDate", "source": "tranDate", "transform": [DAY], "required": True},
        {"target": "dueDate", "source": "dueDate", "transform": [DAY]},
        {"target": "invoiceNumber", "source": "tranId"},
        {"target": NETSUITE_ID_FIELD, "source": "id", "required": True},
        {"target": "comments", "source": "memo"},
        {
            "target": "invoiceItems",
            "each": "item.items",
            "required": True,
            "fields": [
                {"target": "amount", "source": "amount", "transform": [NUMBER], "required": True},
                {"target": "quantity", "source": "quantity", "transform": [NUMBER]},
                {"target": "unitPrice", "source": "rate", "transform": [NUMBER]},
                {
                    "target": "serviceStartDate",
                    "source": ["revRecStartDate", "$.tranDate"],
                    "transform": [DAY],
                    "required": True,
                },
                {"target": "serviceEndDate", "source": "revRecEndDate", "transform": [DAY]},
                {"target": "chargeName", "source": ["item.refName", "description"], "required": True},
                {
                    "target": "accountingCode",
                    "source": "account.refName",
                    # "4000 Consulting Income" → "4000" → the accounting code of GL account 4000.
                    "transform": ["first_word", {"name": "lookup", "table": GL_TABLE}],
                    "required": True,
                },
                {"target": "description", "source": "description"},
            ],
        },
    ]
}

CUSTOMERS = CustomerToAccount()


class InvoiceToInvoice:
    name: ClassVar[str] = "invoice"
    title: ClassVar[str] = "NetSuite invoice → Zuora invoice"
    source_system: ClassVar[str] = "netsuite"
    target_system: ClassVar[str] = "zuora"
    source_record: ClassVar[str] = "invoice"
    default_mapping: ClassVar[dict[str, Any]] = DEFAULT_MAPPING
    required_fields: ClassVar[tuple[str, ...]] = (
        "accountId",
        "invoiceDate",
        "invoiceItems",
        "invoiceItems[].amount",
        "invoiceItems[].serviceStartDate",
        "invoiceItems[].chargeName",
    )
    batch_size: ClassVar[int] = 1

    def source_id(self, job_payload: dict[str, Any]) -> str:
        return str(job_payload["id"])

    async def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any]:
        """The invoice with its item lines, plus the Zuora account of its customer (synced if missing)."""
        netsuite = cast(NetSuiteClient, ctx.source)
        invoice = await netsuite.get_record("invoice", source_id, expand=True)
        customer_id = str(lookup(invoice, "entity.id") or "")
        if not customer_id:
            raise MappingError("entity", f"NetSuite invoice {source_id} names no customer")
        return {**invoice, ACCOUNT_KEY: await self.account_for(ctx, customer_id)}

    async def account_for(self, ctx: FlowContext, customer_id: str) -> dict[str, str]:
        """The Zuora account billed for a NetSuite customer, and how it was found (`via`)."""
        link = await to_thread.run_sync(
            lambda: links.find(
                ctx.engine, integration_id=ctx.integration.id or 0, flow=CUSTOMERS.name, source_id=customer_id
            )
        )
        if link is not None and link.target_id:
            return {"id": link.target_id, "customerId": customer_id, "via": "link"}
        found = await cast(ZuoraClient, ctx.target).find_account_by_crm_id(customer_id)
        if found is not None:
            return {"id": str(found.get("id") or found.get("Id")), "customerId": customer_id, "via": "crmId"}
        return {"id": await self._sync_customer(ctx, customer_id), "customerId": customer_id, "via": "synced"}

    async def _sync_customer(self, ctx: FlowContext, customer_id: str) -> str:
        # The customer_account flow's own steps, so the account and its link are exactly what that flow
        # would have made (a busy customer link postpones this job too).
        customer = await CUSTOMERS.fetch(ctx, customer_id)
        mapping = await to_thread.run_sync(
            lambda: crud.active_mapping(
                ctx.engine, integration_id=ctx.integration.id or 0, flow=CUSTOMERS.name
            )
        )
        spec = mapping.spec if mapping is not None else CUSTOMERS.default_mapping
        result = await CUSTOMERS.write(ctx, customer_id, apply(spec, customer, lookups=ctx.lookups))
        return result.target_id

    async def write(self, ctx: FlowContext, source_id: str, mapped: Mapped) -> WriteResult:
        zuora = cast(ZuoraClient, ctx.target)
        payload = mapped.payload
        payload_hash = _hash(payload)
        try:
            state = await to_thread.run_sync(
                lambda: links.claim(
                    ctx.engine,
                    integration_id=ctx.integration.id or 0,
                    flow=self.name,
                    source_system=self.source_system,
                    source_id=source_id,
                    target_system=self.target_system,
                    worker=ctx.worker,
                )
            )
        except links.LinkBusy as exc:
            raise Postpone(str(exc), LINK_BUSY_RETRY) from exc

        if state.linked and state.link.target_id:
            note = "already synced; a Zuora invoice is made once and not rewritten"
            return WriteResult(state.link.target_id, "skip", {"id": state.link.target_id, "note": note})

        posting = False
        try:
            existing = await _existing_invoice(zuora, payload)
            if existing is not None:
                target_id, action, response = str(existing["id"]), "link", existing
            else:
                posting = True
                response = await zuora.create_invoice(payload, idempotency_key=state.link.idempotency_key)
                target_id, action = str(response.get("id") or ""), "create"
                if not target_id:
                    raise RemoteError("Zuora created the invoice but returned no id", system="zuora")
        except BaseException as exc:
            # Only a refused POST is a rejection (a new key next time); a failed lookup keeps the key.
            rejected = posting and isinstance(exc, RemoteError)
            await to_thread.run_sync(
                lambda: links.release(ctx.engine, state.link, worker=ctx.worker, rejected=rejected)
            )
            raise
        await to_thread.run_sync(
            lambda: links.complete(ctx.engine, state.link, target_id=target_id, payload_hash=payload_hash)
        )
        return WriteResult(target_id, action, response)


async def _existing_invoice(zuora: ZuoraClient, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The account's invoice already made for this NetSuite invoice, or None.

    The account's invoice list shows numbers and dates but not custom fields, so a row is a candidate
    when its number is the one we send, or its date is ours; a candidate is confirmed by the NetSuite id
    on the full invoice when the payload carries one, by the number otherwise.
    """
    account = payload.get("accountId") or payload.get("accountNumber")
    number, marker = payload.get("invoiceNumber"), payload.get(NETSUITE_ID_FIELD)
    if not account or not (number or marker):
        return None
    async for row in zuora.account_invoices(str(account)):
        same_number = bool(number) and row.get("invoiceNumber") == number
        same_day = bool(marker) and row.get("invoiceDate") == payload.get("invoiceDate")
        if not (same_number or same_day):
            continue
        if not marker:
            return row
        invoice = await zuora.get_invoice(str(row["id"]))
        if str(invoice.get(NETSUITE_ID_FIELD) or "") == str(marker):
            return invoice
    return None


FLOWS = [InvoiceToInvoice()]
