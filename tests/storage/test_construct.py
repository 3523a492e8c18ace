"""`construct` builds the same row objects as the SQLModel constructor, only cheaper."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine

from storage.construct import construct
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditRecord, Job, JobStatus, Link
from tests.storage.test_queue import make_integration

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CASES = [
    (
        AuditRecord,
        {
            "job_id": 1,
            "integration_id": 2,
            "flow": "customer_zoho",
            "source_system": "netsuite",
            "source_id": "7",
            "target_system": "zoho",
            "started_at": AT,
        },
    ),
    (Job, {"integration_id": 2, "flow": "customer_account", "payload": {"id": "7"}, "run_after": AT}),
    (
        Link,
        {
            "integration_id": 2,
            "flow": "customer_account",
            "source_system": "netsuite",
            "source_id": "7",
            "target_system": "zuora",
            "idempotency_key": "k",
        },
    ),
]
STAMPS = {"created_at", "updated_at", "started_at", "run_after"}  # default factories: the time of the call


@pytest.mark.parametrize(("model", "values"), CASES, ids=[model.__name__ for model, _ in CASES])
def test_construct_matches_the_constructor(model: type, values: dict[str, object]) -> None:
    made, built = model(**values), construct(model, **values)

    def comparable(obj: object) -> dict[str, object]:
        dumped = obj.model_dump()  # type: ignore[attr-defined]
        return {k: v for k, v in dumped.items() if k not in STAMPS or k in values}

    assert comparable(built) == comparable(made)
    assert built.model_fields_set == made.model_fields_set == set(values)
    assert set(built.__dict__) - {"_sa_instance_state"} == set(made.__dict__) - {"_sa_instance_state"}


def test_construct_gives_each_object_its_own_mutable_defaults() -> None:
    first = construct(Job, integration_id=1, flow="f")
    second = construct(Job, integration_id=1, flow="f")

    first.payload["id"] = "1"

    assert second.payload == {}


def test_construct_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError, match="no field colour"):
        construct(Job, integration_id=1, flow="f", colour="red")


def test_a_constructed_object_is_inserted_and_tracked_like_any_other(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    with session_scope(engine) as session:
        job = construct(Job, integration_id=integration, flow="customer_account", payload={"id": "9"})
        session.add(job)
        session.flush()
        assert job.id is not None
        job.status = JobStatus.DEAD  # a change after the insert is flushed too

    with session_scope(engine) as session:
        stored = session.get(Job, job.id)
        assert stored is not None
        assert (stored.payload, stored.status, stored.attempts, stored.max_attempts) == (
            {"id": "9"},
            JobStatus.DEAD,
            0,
            8,
        )


def test_construct_works_in_a_fresh_process_before_any_query() -> None:
    # A runner's first read of an integration builds the object before anything configured the mappers.
    script = (
        "from sqlalchemy.orm import make_transient_to_detached\n"
        "from storage.construct import construct\n"
        "from storage.models import Integration\n"
        "found = construct(Integration, id=1, name='first')\n"
        "make_transient_to_detached(found)\n"
        "print(found.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "first"
