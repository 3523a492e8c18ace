"""NetSuite customer → Zuora account.

Match key: the NetSuite internal id, kept in our link table and as `crmId` on the Zuora account.
Create goes out as `POST /v1/accounts` under the link's Idempotency-Key; an account found by crmId but
missing from the link table (a crash between create and link, or an account made by hand) is linked
and updated instead of duplicated.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, cast

from anyio import to_thread

from connectors.errors import RemoteError
from connectors.netsuite.client import NetSuiteClient
from connectors.zuora.client import ZuoraClient
from runner.flows import FlowContext, Postpone, WriteResult
from runner.mapping import Mapped
from storage import links

LINK_BUSY_RETRY = 2.0  # seconds to wait when another worker is creating the same account

DEFAULT_MAPPING: dict[str, Any] = {
    "fields": [
        {"target": "name", "source": ["companyName", "entityId"], "transform": "trim", "required": True},
        {"target": "crmId", "source": "id", "required": True},
        {"target": "currency", "source": "currency.refName", "default": "USD", "create_only": True},
        {"target": "billCycleDay", "value": 1, "create_only": True},
        {"target": "billToContact.firstName", "source": ["firstName"], "default": "Accounts"},
        {
            "target": "billToContact.lastName",
            "source": ["lastName", "companyName", "entityId"],
            "required": True,
        },
        {"target": "billToContact.workEmail", "source": "email"},
        {"target": "billToContact.workPhone", "source": "phone"},
    ]
}


class CustomerToAccount:
    name: ClassVar[str] = "customer_account"
    title: ClassVar[str] = "NetSuite customer → Zuora account"
    source_system: ClassVar[str] = "netsuite"
    target_system: ClassVar[str] = "zuora"
    source_record: ClassVar[str] = "customer"
    default_mapping: ClassVar[dict[str, Any]] = DEFAULT_MAPPING
    required_fields: ClassVar[tuple[str, ...]] = ("name", "crmId", "billToContact.lastName")
    batch_size: ClassVar[int] = 1

    def source_id(self, job_payload: dict[str, Any]) -> str:
        return str(job_payload["id"])

    async def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any]:
        netsuite = cast(NetSuiteClient, ctx.source)
        return await netsuite.get_record("customer", source_id)

    async def write(self, ctx: FlowContext, source_id: str, mapped: Mapped) -> WriteResult:
        zuora = cast(ZuoraClient, ctx.target)
        payload_hash = _hash(mapped.payload)
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
            response = await zuora.update_account(state.link.target_id, mapped.for_update())
            await to_thread.run_sync(lambda: links.touch(ctx.engine, state.link, payload_hash=payload_hash))
            return WriteResult(state.link.target_id, "update", response)

        crm_id = str(mapped.payload.get("crmId") or source_id)
        try:
            existing = await zuora.find_account_by_crm_id(crm_id)
            if existing is not None:
                target_id = str(existing.get("id") or existing.get("Id"))
                response = await zuora.update_account(target_id, mapped.for_update())
                action = "link"
            else:
                response = await zuora.create_account(
                    mapped.payload, idempotency_key=state.link.idempotency_key
                )
                target_id = str(response.get("accountId") or "")
                if not target_id:
                    raise RemoteError("Zuora created the account but returned no accountId", system="zuora")
                action = "create"
        except BaseException as exc:
            rejected = isinstance(exc, RemoteError)
            await to_thread.run_sync(
                lambda: links.release(ctx.engine, state.link, worker=ctx.worker, rejected=rejected)
            )
            raise
        await to_thread.run_sync(
            lambda: links.complete(ctx.engine, state.link, target_id=target_id, payload_hash=payload_hash)
        )
        return WriteResult(target_id, action, response)


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


FLOWS = [CustomerToAccount()]
