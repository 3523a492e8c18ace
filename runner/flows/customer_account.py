"""NetSuite customer → Zuora account.

Match key: the NetSuite internal id, kept in our link table and as `crmId` on the Zuora account.
Create goes out as `POST /v1/accounts` under the link's Idempotency-Key; an account found by crmId but
missing from the link table (a crash between create and link, or an account made by hand) is linked
and updated instead of duplicated.

The worker hands this flow up to BATCH jobs of one integration at once (`write_batch`): each record is
fetched, mapped, claimed, written and audited on its own as before, but the crmId lookups of the whole
batch go out as Object Queries (`crmid.IN:[...]`) of up to 99 ids, all at once, instead of one per record.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from typing import Any, ClassVar, cast

from anyio import to_thread

from connectors.errors import RemoteError
from connectors.netsuite.client import NetSuiteClient
from connectors.zuora.client import QUERY_PAGE, ZuoraClient
from runner.flows import FlowContext, Postpone, WriteResult, suiteql_read
from runner.mapping import Mapped
from runner.services import current_trail
from storage import links

LINK_BUSY_RETRY = 2.0  # seconds to wait when another worker is creating the same account
# Records a batch takes: its customers are read with one SuiteQL query, its crmId lookups go out as
# Object Queries of at most 99 ids, its creates one per record, under the Zuora connection's concurrency
# cap. A batch also costs the runner a fixed round of database transactions (claim, links, settle):
# 200 records a batch spend about 13% less runner CPU per record than 50 (bench/overhead.py, A/B
# alternated three times), and stay far below SuiteQL's IN-list limit of 1,000.
BATCH = 200
# Zuora writes this flow's batches keep in flight together, per Zuora connection: the connection's own
# concurrency cap (its `max_concurrency`, Zuora's default 40), so that with the customers read in bulk
# (one SuiteQL query a batch) Zuora's limit, not ours, bounds the flow. This default is for a client
# built without a cap.
WRITES_IN_FLIGHT = 10
_SLOTS: weakref.WeakKeyDictionary[ZuoraClient, asyncio.Semaphore] = weakref.WeakKeyDictionary()

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
    batch_size: ClassVar[int] = BATCH

    def source_id(self, job_payload: dict[str, Any]) -> str:
        return str(job_payload["id"])

    async def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any]:
        netsuite = cast(NetSuiteClient, ctx.source)
        return await netsuite.get_record("customer", source_id)

    async def fetch_many(self, ctx: FlowContext, source_ids: list[str]) -> dict[str, dict[str, Any]]:
        """A batch's customers in one SuiteQL query, when the mapping reads only fields it gives."""
        spec = ctx.mapping or self.default_mapping
        return await suiteql_read.fetch_many(cast(NetSuiteClient, ctx.source), "customer", spec, source_ids)

    def snapshot_lacks(self, ctx: FlowContext, snapshot: dict[str, Any]) -> list[str]:
        return suiteql_read.unread(ctx.mapping or self.default_mapping, "customer", snapshot)

    async def write(self, ctx: FlowContext, source_id: str, mapped: Mapped) -> WriteResult:
        return await self._write_one(ctx, source_id, mapped, ctx.worker)

    async def write_batch(
        self, ctx: FlowContext, items: list[tuple[str, Mapped]]
    ) -> list[WriteResult | Exception]:
        """Each record as `write` would do it, with the crmId lookups of the batch in a few Object Queries.

        Every record still claims its own link (under its own job's name), and is created under its own
        link's Idempotency-Key or updated on its own: Zuora has no bulk create. A source id twice in
        one batch (a webhook delivered twice) is written once first, then again after it, so the second
        finds the link the first made and updates, as two jobs one after the other would.
        """
        zuora = cast(ZuoraClient, ctx.target)
        workers = ctx.item_workers or [ctx.worker] * len(items)
        trails: list[list[Any] | None] = list(ctx.item_trails) or [None] * len(items)
        results: list[WriteResult | Exception] = [_NOT_RUN] * len(items)
        firsts: dict[str, int] = {}
        again: list[int] = []
        for index, (source_id, _mapped) in enumerate(items):
            if source_id in firsts:
                again.append(index)
            else:
                firsts[source_id] = index
        lead = list(firsts.values())
        integration_id = ctx.integration.id or 0

        def claim_all() -> dict[int, links.LinkState | Exception]:
            answers = links.claim_many(
                ctx.engine,
                integration_id=integration_id,
                flow=self.name,
                source_system=self.source_system,
                target_system=self.target_system,
                claims={items[index][0]: workers[index] for index in lead},
            )
            claims: dict[int, links.LinkState | Exception] = {}
            for index in lead:
                answer = answers[items[index][0]]
                claims[index] = (
                    Postpone(str(answer), LINK_BUSY_RETRY) if isinstance(answer, Exception) else answer
                )
            return claims

        try:
            claims = await to_thread.run_sync(claim_all)
        except Exception as exc:  # the database refused the claims: no record of the batch was written
            return [exc] * len(items)
        unlinked = [i for i in lead if isinstance(claims[i], links.LinkState) and not _linked(claims[i])]
        existing = await self._look_up(zuora, items, unlinked, trails)

        slots = _write_slots(zuora)

        async def one(index: int) -> links.LinkWrite | None:
            claim = claims[index]
            if isinstance(claim, Exception):
                results[index] = claim
                return None
            token = current_trail.set(trails[index]) if trails[index] is not None else None
            try:
                async with slots:
                    result, stored = await self._send(
                        ctx, items[index], claim, existing.get(index, {}), workers[index]
                    )
            except Exception as exc:
                results[index] = exc
                return None
            finally:
                if token is not None:
                    current_trail.reset(token)
            results[index] = result
            return stored

        stored = await asyncio.gather(*(one(index) for index in lead))
        done = [(index, write) for index, write in zip(lead, stored, strict=True) if write is not None]

        def store_all() -> None:
            # Every written record's link in one transaction; should that fail, each on its own, so a
            # record whose link cannot be stored fails alone (its retry finds the account by crmId).
            try:
                links.store_many(ctx.engine, [write for _, write in done])
            except Exception:
                for index, write in done:
                    try:
                        links.store_many(ctx.engine, [write])
                    except Exception as exc:
                        results[index] = exc

        await to_thread.run_sync(store_all)
        for index in again:
            token = current_trail.set(trails[index]) if trails[index] is not None else None
            try:
                source_id, mapped = items[index]
                results[index] = await self._write_one(ctx, source_id, mapped, workers[index])
            except Exception as exc:
                results[index] = exc
            finally:
                if token is not None:
                    current_trail.reset(token)
        return results

    async def _look_up(
        self,
        zuora: ZuoraClient,
        items: list[tuple[str, Mapped]],
        unlinked: list[int],
        trails: list[list[Any] | None],
    ) -> dict[int, dict[str, dict[str, Any]] | Exception]:
        """The accounts already in Zuora for the `unlinked` items' crmIds: one Object Query per
        QUERY_PAGE of them, all at once. Each item gets its own query's answer (or its error: only the
        items of a failed query fail with it), and its own query's calls in its trail, not every
        query's (the audit trail of a record names the calls made for it)."""
        groups = [unlinked[start : start + QUERY_PAGE] for start in range(0, len(unlinked), QUERY_PAGE)]

        async def query(group: list[int]) -> tuple[dict[str, dict[str, Any]] | Exception, list[Any]]:
            calls: list[Any] = []
            current_trail.set(calls)  # this task's own context: the calls of this query only
            try:
                return await zuora.find_accounts_by_crm_ids([_crm_id(items[i]) for i in group]), calls
            except Exception as exc:
                return exc, calls

        answers = await asyncio.gather(*(query(group) for group in groups))
        outer = current_trail.get()
        found: dict[int, dict[str, dict[str, Any]] | Exception] = {}
        for group, (answer, calls) in zip(groups, answers, strict=True):
            for index in group:
                found[index] = answer
                trail = trails[index]
                if trail is not None:
                    trail.extend(calls)
            if trails[group[0]] is None and outer is not None:
                outer.extend(calls)  # no trail per item: the batch's shared trail has them once
        return found

    async def _write_one(self, ctx: FlowContext, source_id: str, mapped: Mapped, worker: str) -> WriteResult:
        zuora = cast(ZuoraClient, ctx.target)
        integration_id = ctx.integration.id or 0
        try:
            state = await to_thread.run_sync(lambda: self._claim(ctx, integration_id, source_id, worker))
        except links.LinkBusy as exc:
            raise Postpone(str(exc), LINK_BUSY_RETRY) from exc
        existing: dict[str, dict[str, Any]] | None = None
        if not _linked(state):
            crm_id = _crm_id((source_id, mapped))
            found = await self._find(zuora, crm_id, state, worker, ctx)
            existing = {crm_id.lower(): found} if found is not None else {}
        result, stored = await self._send(ctx, (source_id, mapped), state, existing or {}, worker)
        await to_thread.run_sync(links.store_many, ctx.engine, [stored])
        return result

    def _claim(self, ctx: FlowContext, integration_id: int, source_id: str, worker: str) -> links.LinkState:
        return links.claim(
            ctx.engine,
            integration_id=integration_id,
            flow=self.name,
            source_system=self.source_system,
            source_id=source_id,
            target_system=self.target_system,
            worker=worker,
        )

    async def _find(
        self, zuora: ZuoraClient, crm_id: str, state: links.LinkState, worker: str, ctx: FlowContext
    ) -> dict[str, Any] | None:
        try:
            return await zuora.find_account_by_crm_id(crm_id)
        except BaseException as exc:
            await self._release(ctx, state, worker, exc)
            raise

    async def _send(
        self,
        ctx: FlowContext,
        item: tuple[str, Mapped],
        state: links.LinkState,
        existing: dict[str, dict[str, Any]] | Exception,
        worker: str,
    ) -> tuple[WriteResult, links.LinkWrite]:
        """Update through the link, link an account found by crmId, or create; returns the result and
        what to store in the link table once it is done."""
        zuora = cast(ZuoraClient, ctx.target)
        _source_id, mapped = item
        payload_hash = _hash(mapped.payload)
        if _linked(state):
            target = str(state.link.target_id)
            response = await zuora.update_account(target, mapped.for_update())
            return WriteResult(target, "update", response), links.LinkWrite(state.link, payload_hash)
        try:
            if isinstance(existing, Exception):
                raise existing
            found = existing.get(_crm_id(item).lower())
            if found is not None:
                target_id = str(found.get("id") or found.get("Id"))
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
            await self._release(ctx, state, worker, exc)
            raise
        return WriteResult(target_id, action, response), links.LinkWrite(state.link, payload_hash, target_id)

    async def _release(
        self, ctx: FlowContext, state: links.LinkState, worker: str, exc: BaseException
    ) -> None:
        rejected = isinstance(exc, RemoteError)
        await to_thread.run_sync(
            lambda: links.release(ctx.engine, state.link, worker=worker, rejected=rejected)
        )


def _write_slots(zuora: ZuoraClient) -> asyncio.Semaphore:
    """The write slots of one Zuora client, shared by every batch writing through it."""
    slots = _SLOTS.get(zuora)
    if slots is None:
        slots = _SLOTS[zuora] = asyncio.Semaphore(zuora.max_concurrency or WRITES_IN_FLIGHT)
    return slots


def _linked(state: links.LinkState) -> bool:
    return bool(state.linked and state.link.target_id)


def _crm_id(item: tuple[str, Mapped]) -> str:
    source_id, mapped = item
    return str(mapped.payload.get("crmId") or source_id)


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


_NOT_RUN = RemoteError("the batch ended before this record was written", system="zuora")

FLOWS = [CustomerToAccount()]
