"""NetSuite customers, vendors and contacts → Zoho CRM Accounts, Vendors and Contacts, in batches.

Match key: the NetSuite internal id in a unique Zoho field `NetSuite_Id`, and the upsert names it as its
duplicate-check field, so a record sent twice (a retry, a replay, a redelivered webhook) updates the
same Zoho record instead of adding one, and two customers sharing a name stay two accounts
(shared/api/zoho.md §2c). Zoho takes at most 100 records an upsert: the worker hands these flows up to
100 jobs at once and one upsert writes them; each record's outcome comes back on its own, so a record
Zoho rejects fails alone and its batch goes on.

Contacts point at their company: the NetSuite contact's `company` is resolved through our links to the
Zoho Account (or Vendor) it became, written as a Zoho lookup `{"id": ...}`. A contact whose company is
not in Zoho yet waits for it (its company's sync is queued) and is retried with backoff.

Inactive NetSuite records are marked inactive (the `NetSuite_Inactive` checkbox, a custom field the
Zoho org adds beside `NetSuite_Id`); deletions are never synchronised.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, cast

from anyio import to_thread
from sqlmodel import col, select

from connectors.errors import Deferred, RemoteError
from connectors.netsuite.client import NetSuiteClient
from connectors.zoho.client import ZohoClient
from runner.flows import FlowContext, WriteResult, suiteql_read
from runner.mapping import Mapped
from storage import links, queue
from storage.db import session_scope
from storage.models import Job, JobStatus

MATCH_FIELD = "NetSuite_Id"  # the unique custom field Zoho upserts on (shared/api/zoho.md §2c)
PARENT_WAIT = 5.0  # seconds a contact waits before retrying when its company is not in Zoho yet

_ADDRESS = "addressBook.items.0.addressBookAddress"  # the default address, inlined by expandSubResources


def _address(prefix: str, names: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"target": f"{prefix}{suffix}", "source": f"{_ADDRESS}.{field}", "transform": "trim"}
        for suffix, field in names.items()
    ]


_BILLING = {"Street": "addr1", "City": "city", "State": "state", "Code": "zip", "Country": "country"}

ACCOUNT_MAPPING: dict[str, Any] = {
    "fields": [
        {
            "target": "Account_Name",
            "source": ["companyName", "entityId"],
            "transform": "trim",
            "required": True,
        },
        {"target": MATCH_FIELD, "source": "id", "required": True},
        {"target": "Account_Number", "source": "entityId"},
        {"target": "Phone", "source": "phone"},
        {"target": "Fax", "source": "fax"},
        {"target": "Website", "source": "url"},
        {"target": "Description", "source": "comments"},
        {"target": "NetSuite_Inactive", "source": "isInactive", "default": False},
        *_address("Billing_", _BILLING),
    ]
}

VENDOR_MAPPING: dict[str, Any] = {
    "fields": [
        {
            "target": "Vendor_Name",
            "source": ["companyName", "entityId"],
            "transform": "trim",
            "required": True,
        },
        {"target": MATCH_FIELD, "source": "id", "required": True},
        {"target": "Email", "source": "email"},
        {"target": "Phone", "source": "phone"},
        {"target": "Website", "source": "url"},
        {"target": "Description", "source": "comments"},
        {"target": "NetSuite_Inactive", "source": "isInactive", "default": False},
        *_address(
            "", {"Street": "addr1", "City": "city", "State": "state", "Zip_Code": "zip", "Country": "country"}
        ),
    ]
}

CONTACT_MAPPING: dict[str, Any] = {
    "fields": [
        {"target": "First_Name", "source": "firstName", "transform": "trim"},
        {"target": "Last_Name", "source": ["lastName", "entityId"], "transform": "trim", "required": True},
        {"target": MATCH_FIELD, "source": "id", "required": True},
        {"target": "Email", "source": "email", "transform": "lower"},
        {"target": "Phone", "source": "phone"},
        {"target": "Mobile", "source": "mobilePhone"},
        {"target": "Title", "source": "title"},
        {"target": "NetSuite_Inactive", "source": "isInactive", "default": False},
        {"target": "_company", "source": "company.id"},  # carried for the flow: resolved to a Zoho lookup
        *_address(
            "Mailing_",
            {"Street": "addr1", "City": "city", "State": "state", "Zip": "zip", "Country": "country"},
        ),
    ]
}


class NetSuiteToZoho:
    """One NetSuite entity type to one Zoho module, written in upsert batches of up to 100."""

    source_system: ClassVar[str] = "netsuite"
    target_system: ClassVar[str] = "zoho"
    batch_size: ClassVar[int] = 100  # records per Zoho upsert (shared/api/zoho.md §2b)

    def __init__(
        self,
        *,
        name: str,
        title: str,
        record: str,
        module: str,
        mapping: dict[str, Any],
        required: tuple[str, ...],
    ) -> None:
        self.name = name
        self.title = title
        self.source_record = record
        self.module = module
        self.default_mapping = mapping
        self.required_fields = required

    def source_id(self, job_payload: dict[str, Any]) -> str:
        return str(job_payload["id"])

    async def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any]:
        netsuite = cast(NetSuiteClient, ctx.source)
        return await netsuite.get_record(self.source_record, source_id, expand=True)

    async def fetch_many(self, ctx: FlowContext, source_ids: list[str]) -> dict[str, dict[str, Any]]:
        """A batch's records in one SuiteQL query, when the mapping reads only fields it gives."""
        spec = ctx.mapping or self.default_mapping
        netsuite = cast(NetSuiteClient, ctx.source)
        return await suiteql_read.fetch_many(netsuite, self.source_record, spec, source_ids)

    def snapshot_lacks(self, ctx: FlowContext, snapshot: dict[str, Any]) -> list[str]:
        return suiteql_read.unread(ctx.mapping or self.default_mapping, self.source_record, snapshot)

    async def write(self, ctx: FlowContext, source_id: str, mapped: Mapped) -> WriteResult:
        [result] = await self.write_batch(ctx, [(source_id, mapped)])
        if isinstance(result, Exception):
            raise result
        return result

    async def write_batch(
        self, ctx: FlowContext, items: list[tuple[str, Mapped]]
    ) -> list[WriteResult | Exception]:
        """One upsert for every item; each item's own result or error, in order."""
        prepared = await self.prepare(ctx, items)
        sendable = [i for i, p in enumerate(prepared) if not isinstance(p, Exception)]
        # Records that could not be prepared keep their error; the others get Zoho's answer below.
        results: list[WriteResult | Exception] = [
            p if isinstance(p, Exception) else _NO_ANSWER for p in prepared
        ]
        if not sendable:
            return results
        zoho = cast(ZohoClient, ctx.target)
        records = [cast(dict[str, Any], prepared[i]) for i in sendable]
        answers = await zoho.upsert(self.module, records, duplicate_check_fields=[MATCH_FIELD])
        if len(answers) != len(records):
            raise RemoteError(
                f"Zoho answered {len(answers)} results for an upsert of {len(records)} {self.module}",
                system="zoho",
            )
        linked: dict[str, tuple[str, str | None]] = {}
        for index, record, answer in zip(sendable, records, answers, strict=True):
            source_id = items[index][0]
            if str(answer.get("status")) == "success" and (answer.get("details") or {}).get("id"):
                target_id = str(answer["details"]["id"])
                action = "create" if answer.get("action") == "insert" else "update"
                results[index] = WriteResult(target_id, action, answer)
                linked[source_id] = (target_id, payload_hash(record))
            else:
                results[index] = RemoteError(_rejection(self.module, answer), system="zoho")
        await to_thread.run_sync(
            lambda: links.record_targets(
                ctx.engine,
                integration_id=ctx.integration.id or 0,
                flow=self.name,
                source_system=self.source_system,
                target_system=self.target_system,
                targets=linked,
            )
        )
        return results

    async def prepare(
        self, ctx: FlowContext, items: list[tuple[str, Mapped]]
    ) -> list[dict[str, Any] | Exception]:
        """The records to send: each mapped payload with its match key set, without the fields a mapping
        carries for the flow only (targets starting with `_`)."""
        return [
            {**{k: v for k, v in mapped.payload.items() if not k.startswith("_")}, MATCH_FIELD: source_id}
            for source_id, mapped in items
        ]


class ContactToZoho(NetSuiteToZoho):
    """Contacts, with their company resolved to the Zoho Account or Vendor it became."""

    async def prepare(
        self, ctx: FlowContext, items: list[tuple[str, Mapped]]
    ) -> list[dict[str, Any] | Exception]:
        records = await super().prepare(ctx, items)
        companies = {source_id: _company_of(mapped) for source_id, mapped in items}
        wanted = sorted({c for c in companies.values() if c})
        integration_id = ctx.integration.id or 0

        def resolve() -> tuple[dict[str, str], dict[str, str]]:
            accounts = links.targets_of(
                ctx.engine, integration_id=integration_id, flow="customer_zoho", source_ids=wanted
            )
            vendors = links.targets_of(
                ctx.engine, integration_id=integration_id, flow="vendor_zoho", source_ids=wanted
            )
            return accounts, vendors

        accounts, vendors = await to_thread.run_sync(resolve)
        missing: set[str] = set()
        for index, (source_id, _mapped) in enumerate(items):
            company = companies[source_id]
            record = records[index]
            if not company or isinstance(record, Exception):
                continue
            if company in accounts:
                record["Account_Name"] = {"id": accounts[company]}
            elif company in vendors:
                record["Vendor_Name"] = {"id": vendors[company]}
            else:
                missing.add(company)
                records[index] = Deferred(
                    f"the contact's company (NetSuite {company}) is not in Zoho yet; its sync was queued and "
                    "this contact follows it",
                    system="zoho",
                    retry_after=PARENT_WAIT,
                )
        if missing:
            await to_thread.run_sync(lambda: _queue_companies(ctx, sorted(missing)))
        return records


def _company_of(mapped: Mapped) -> str:
    """The NetSuite company id the mapping carried through for the flow (`_company`)."""
    value = mapped.payload.get("_company")
    if isinstance(value, dict):
        value = value.get("id")
    return str(value) if value else ""


def _queue_companies(ctx: FlowContext, companies: list[str]) -> None:
    """Queue the account sync of companies contacts are waiting for, unless one is queued already."""
    if "customer_zoho" not in (ctx.integration.flows or []):
        return
    integration_id = ctx.integration.id or 0
    with session_scope(ctx.engine, write=True) as session:
        waiting = {
            str((payload or {}).get("id"))
            for payload in session.exec(
                select(Job.payload).where(
                    col(Job.integration_id) == integration_id,
                    col(Job.flow) == "customer_zoho",
                    col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                )
            )
        }
        for company in companies:
            if company not in waiting:
                queue.enqueue(
                    session, integration_id=integration_id, flow="customer_zoho", payload={"id": company}
                )


def _rejection(module: str, answer: dict[str, Any]) -> str:
    details = answer.get("details") or {}
    field = details.get("api_name") or details.get("param_name")
    where = f" (field {field})" if field else ""
    return (
        f"Zoho refused the {module} record: {answer.get('code', 'ERROR')}: {answer.get('message', '')}{where}"
    )


def payload_hash(record: dict[str, Any]) -> str:
    """What the link keeps of the record last upserted: the change-notice flow compares against it to
    recognise the echo of our own write."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


_NO_ANSWER = RemoteError("Zoho gave no answer for this record", system="zoho")

FLOWS = [
    NetSuiteToZoho(
        name="customer_zoho",
        title="NetSuite customer → Zoho account",
        record="customer",
        module="Accounts",
        mapping=ACCOUNT_MAPPING,
        required=("Account_Name", MATCH_FIELD),
    ),
    NetSuiteToZoho(
        name="vendor_zoho",
        title="NetSuite vendor → Zoho vendor",
        record="vendor",
        module="Vendors",
        mapping=VENDOR_MAPPING,
        required=("Vendor_Name", MATCH_FIELD),
    ),
    ContactToZoho(
        name="contact_zoho",
        title="NetSuite contact → Zoho contact",
        record="contact",
        module="Contacts",
        mapping=CONTACT_MAPPING,
        required=("Last_Name", MATCH_FIELD),
    ),
]
