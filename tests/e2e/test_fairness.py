"""A slow system never starves another: one integration's backlog against a slow target leaves slots for
the jobs of an integration whose target is fast."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from connectors.sandbox import build
from connectors.zuora.emulator import ZuoraEmulator
from demo.wiring import wire
from runner.app import create_app
from storage import crud, queue
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Job, JobStatus
from storage.settings import Settings
from tests.support.live import serve, wait_for


def finished(engine: Engine, integration_id: int) -> int:
    with Session(engine) as session:
        query = (
            select(func.count())
            .select_from(Job)
            .where(col(Job.integration_id) == integration_id, col(Job.status) == JobStatus.SUCCEEDED)
        )
        return int(session.exec(query).one())


def test_a_slow_target_does_not_starve_a_fast_one(engine: Engine, vault: Vault, settings: Settings) -> None:
    sandbox, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    fast_zuora = ZuoraEmulator()
    fast_zuora.register_client("fast-client", "fast-secret")
    sandbox.zuora.faults.latency = 1.0  # seconds per call: the slow system (a backlog of 30+ seconds)
    quick = settings.model_copy(update={"workers": 4})
    with (
        serve(sandbox.netsuite.app, sock=sockets["netsuite"]),
        serve(sandbox.zuora.app, sock=sockets["zuora"]),
        serve(fast_zuora.app) as fast_url,
    ):
        slow = wire(engine, vault, sandbox.credentials)
        integration = crud.get_integration(engine, integration_id=slow.integration_id)
        assert integration is not None
        fast_connection = crud.create_connection(
            engine, vault, workspace_id=integration.workspace_id, system="zuora", name="Fast Zuora",
            base_url=fast_url, settings={"client_id": "fast-client"}, secrets={"client_secret": "fast-secret"},
        )  # fmt: skip
        fast = crud.create_integration(
            engine, vault, workspace_id=integration.workspace_id, name="fast", key="fast",
            source_connection_id=integration.source_connection_id, target_connection_id=fast_connection.id,
            flows=["customer_account"],
        )  # fmt: skip
        ids = [sandbox.netsuite.seed("customer", {"companyName": f"C{n}"}) for n in range(34)]
        with session_scope(engine) as session:
            for customer in ids[:30]:  # the slow backlog is queued first
                queue.enqueue(
                    session,
                    integration_id=slow.integration_id,
                    flow="customer_account",
                    payload={"id": customer},
                )
            for customer in ids[30:]:
                queue.enqueue(
                    session, integration_id=fast.id, flow="customer_account", payload={"id": customer}
                )

        with serve(create_app(engine=engine, settings=quick, vault=vault)):
            wait_for(lambda: finished(engine, fast.id) == 4, timeout=30, what="the fast integration's jobs")
            slow_done = finished(engine, slow.integration_id)

    assert slow_done < 30  # the fast jobs did not wait for the slow backlog to drain
    assert len(fast_zuora.accounts()) == 4
