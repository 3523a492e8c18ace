"""Error triage in the database: failures grouped by class and normalised message, groups that resolve
and reopen on their own, and the triage service's decisions, group replay and payload edits (which only
enqueue; tests/e2e/test_triage.py runs them through the runner)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from runner.replay import ReplayMode
from runner.triage import (
    EditRefused,
    GroupFilter,
    TriageRefused,
    acknowledge,
    assign,
    auto_resolve_synced,
    edit_and_replay,
    find_group,
    list_groups,
    missing_required,
    parse_payload,
    replay_group,
    resolve,
)
from storage import crud, links
from storage.audit import write_record
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditRecord, Job, JobKind, Outcome
from storage.triage import (
    GroupStatus,
    PayloadEdit,
    Resolution,
    TriageGroup,
    edit_for_job,
    edited_payload,
    edits_of,
    group_key,
    is_duplicate,
    normalise,
    payload_diff,
    scan,
    sync_groups,
)
from storage.types import utcnow

FLOW = "customer_account"
EMAIL = "zuora: 53100020: customer {n} rejected: email '{email}' invalid (POST https://rest.zuora.com/v1/accounts → 200)"
CURRENCY = "zuora: 53100020: Currency 'XXX' is invalid or not active. (POST https://rest.zuora.com/v1/accounts → 200)"


@pytest.fixture
def integration_id(engine: Engine, vault: Vault) -> int:
    workspace = crud.create_workspace(engine, name="Triage Ltd")
    assert workspace.id is not None
    ids = [
        crud.create_connection(
            engine, vault, workspace_id=workspace.id, system=system, name=system, base_url=url
        ).id
        for system, url in (
            ("netsuite", "https://1.suitetalk.api.netsuite.com"),
            ("zuora", "https://rest.zuora.com"),
        )
    ]
    integration = crud.create_integration(
        engine,
        vault,
        workspace_id=workspace.id,
        name="NetSuite → Zuora",
        source_connection_id=ids[0],
        target_connection_id=ids[1],
        flows=[FLOW],
    )
    return integration.id


def record(
    engine: Engine,
    integration_id: int,
    source_id: str,
    *,
    minutes_ago: float,
    outcome: str = Outcome.FAILED,
    message: str | None = None,
    error_class: str = "remote",
    payload: dict | None = None,
) -> int:
    at = utcnow() - timedelta(minutes=minutes_ago)
    failed = outcome != Outcome.SUCCEEDED
    written = write_record(
        engine,
        AuditRecord(
            integration_id=integration_id,
            flow=FLOW,
            source_system="netsuite",
            source_id=source_id,
            target_system="zuora",
            outcome=outcome,
            error_class=error_class if failed else None,
            error_message=(message or CURRENCY) if failed else None,
            payload=payload if payload is not None else {"name": f"Customer {source_id}", "crmId": source_id},
            source_snapshot={"id": source_id},
            started_at=at,
            finished_at=at + timedelta(seconds=1),
        ),
        [],
    )
    assert written.id is not None
    return written.id


def stored_groups(engine: Engine) -> list[TriageGroup]:
    with session_scope(engine) as session:
        return list(session.exec(select(TriageGroup).order_by(col(TriageGroup.id))).all())


def replay_jobs(engine: Engine) -> list[Job]:
    with session_scope(engine) as session:
        query = select(Job).where(col(Job.kind) == JobKind.REPLAY).order_by(col(Job.id))
        return list(session.exec(query).all())


# --- normalisation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("customer 123 rejected: email 'x@y.test' invalid", "customer 456 rejected: email 'z' invalid"),
        (EMAIL.format(n=1, email="a@b.test"), EMAIL.format(n=22, email="not-an-email")),
        ("invoiceItems[0].amount: not a number", "invoiceItems[12].amount: not a number"),
        ("account A00000042 not found", "account 8ad0887e91f3 not found"),
        ('value "x" at https://a.test/v1/x?id=1', 'value "yy" at http://b.test/other'),
        (
            "The invoice date 2025-01-01 is in a closed period.",
            "The invoice date 2024-12-31 is in a closed period.",
        ),
    ],
)
def test_normalise_makes_failures_of_different_records_read_alike(first: str, second: str) -> None:
    assert normalise(first) == normalise(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("customer 1 rejected: email 'x' invalid", "customer 1 rejected: phone 'x' invalid"),
        ("Currency 'XXX' is invalid", "Country 'XXX' is invalid"),
        ("custentity5: value is invalid", "custentity6: value is invalid"),  # field names, not ids
    ],
)
def test_normalise_keeps_different_reasons_apart(first: str, second: str) -> None:
    assert normalise(first) != normalise(second)


def test_normalise_says_what_it_replaced() -> None:
    assert normalise(CURRENCY) == "zuora: <n>: Currency <value> is invalid or not active. (POST <url> → <n>)"
    assert (
        normalise("customer 123 rejected: email 'x' invalid")
        == "customer <n> rejected: email <value> invalid"
    )
    assert normalise("Record doesn't exist") == "Record doesn't exist"  # an apostrophe is not a quote


@pytest.mark.parametrize(
    ("message", "duplicate"),
    [
        ("Zoho refused the Accounts record: DUPLICATE_DATA: duplicate data (field NetSuite_Id)", True),
        ("zuora: 53100320: The invoice number INV-1 already exists. (POST <url> → 200)", True),
        (CURRENCY, False),
        (None, False),
    ],
)
def test_is_duplicate_recognises_each_systems_duplicate_errors(message: str | None, duplicate: bool) -> None:
    assert is_duplicate(message) is duplicate


def test_group_key_differs_by_integration_flow_and_class() -> None:
    keys = {
        group_key(1, FLOW, "remote", "p"),
        group_key(2, FLOW, "remote", "p"),
        group_key(1, "invoice", "remote", "p"),
        group_key(1, FLOW, "config", "p"),
    }
    assert len(keys) == 4 and group_key(1, FLOW, "remote", "p") in keys


# --- grouping ------------------------------------------------------------------------------------------


def test_scan_groups_failures_by_class_and_normalised_message(engine: Engine, integration_id: int) -> None:
    for n, source in enumerate(("101", "102", "103")):
        record(
            engine, integration_id, source, minutes_ago=10 - n, message=EMAIL.format(n=source, email=f"x{n}")
        )
    record(engine, integration_id, "104", minutes_ago=5)  # currency
    record(engine, integration_id, "105", minutes_ago=4, error_class="config")  # same text, other class

    found = scan(engine)

    by_size = sorted(found.groups.values(), key=lambda g: -len(g.open))
    assert [len(g.open) for g in by_size] == [3, 1, 1]
    assert by_size[0].pattern == "zuora: <n>: customer <n> rejected: email <value> invalid (POST <url> → <n>)"
    assert sorted(f.source_id for f in by_size[0].open) == ["101", "102", "103"]
    assert {g.error_class for g in by_size[1:]} == {"remote", "config"}
    assert found.complete and found.scanned == 5


def test_a_source_that_failed_twice_is_one_open_record_from_its_newest_failure(
    engine: Engine, integration_id: int
) -> None:
    record(engine, integration_id, "201", minutes_ago=30)
    newest = record(engine, integration_id, "201", minutes_ago=10)

    [group] = scan(engine).groups.values()

    assert [f.record_id for f in group.open] == [newest]
    assert group.failures == 2


def test_failures_of_a_source_that_later_succeeded_are_not_open(engine: Engine, integration_id: int) -> None:
    record(engine, integration_id, "301", minutes_ago=30)
    record(engine, integration_id, "301", minutes_ago=20, outcome=Outcome.SUCCEEDED)
    record(engine, integration_id, "302", minutes_ago=30)
    record(engine, integration_id, "302", minutes_ago=20, outcome=Outcome.RETRYING, error_class="transient")

    [group] = scan(engine).groups.values()

    assert group.open == [] and [f.source_id for f in group.synced] == ["301"]
    assert [f.source_id for f in group.in_flight] == ["302"]
    result = sync_groups(engine)
    assert result.created == 0 and stored_groups(engine) == []  # nothing open: no group to triage


# --- groups that resolve and reopen ----------------------------------------------------------------------


def test_sync_stores_a_group_and_resolves_it_once_every_record_synced(
    engine: Engine, integration_id: int
) -> None:
    record(engine, integration_id, "401", minutes_ago=30)
    record(engine, integration_id, "402", minutes_ago=29)
    assert sync_groups(engine).created == 1
    [group] = stored_groups(engine)
    assert group.status == GroupStatus.OPEN and group.updated_by == "ml-connector"

    record(engine, integration_id, "401", minutes_ago=5, outcome=Outcome.SUCCEEDED)
    assert auto_resolve_synced(engine) == 0  # 402 still fails
    record(engine, integration_id, "402", minutes_ago=4, outcome=Outcome.RETRYING, error_class="transient")
    assert auto_resolve_synced(engine) == 0  # 402 is in flight: not done yet
    record(engine, integration_id, "402", minutes_ago=3, outcome=Outcome.SUCCEEDED)
    assert auto_resolve_synced(engine) == 1

    [group] = stored_groups(engine)
    assert (group.status, group.resolution) == (GroupStatus.RESOLVED, Resolution.AUTO_SYNCED)
    assert group.resolved_at is not None


def test_a_resolved_group_reopens_when_a_new_failure_arrives(engine: Engine, integration_id: int) -> None:
    record(engine, integration_id, "501", minutes_ago=30)
    [view] = list_groups(engine).groups
    resolve(engine, view.id, by="alice", note="known: fixed in NetSuite tomorrow")
    assert list_groups(engine).groups == []  # 501 still fails, but the group was resolved after it
    assert [g.status for g in list_groups(engine, GroupFilter(include_resolved=True)).groups] == ["resolved"]

    record(engine, integration_id, "502", minutes_ago=-1)  # a failure after the resolution

    [reopened] = list_groups(engine).groups
    assert reopened.id == view.id and reopened.status == GroupStatus.OPEN and reopened.resolution is None
    assert sorted(reopened.source_ids) == ["501", "502"]
    assert reopened.note == "known: fixed in NetSuite tomorrow"  # what was said before stays readable


def test_a_duplicate_of_an_already_linked_record_is_resolved_automatically(
    engine: Engine, integration_id: int
) -> None:
    duplicate = "zuora: 53100320: The account for crmId 601 already exists. (POST https://rest.zuora.com/v1/accounts → 200)"
    record(engine, integration_id, "601", minutes_ago=30, message=duplicate)
    record(engine, integration_id, "602", minutes_ago=29, message=duplicate.replace("601", "602"))
    [view] = list_groups(engine).groups
    assert view.count == 2

    links.record_targets(
        engine,
        integration_id=integration_id,
        flow=FLOW,
        source_system="netsuite",
        target_system="zuora",
        targets={"601": ("A601", None)},
    )
    [view] = list_groups(engine).groups
    assert view.source_ids == ["602"] and view.synced == 1  # 602 has no target: it is a real duplicate

    links.record_targets(
        engine,
        integration_id=integration_id,
        flow=FLOW,
        source_system="netsuite",
        target_system="zuora",
        targets={"602": ("A602", None)},
    )
    assert auto_resolve_synced(engine) == 1
    [group] = stored_groups(engine)
    assert (group.status, group.resolution) == (GroupStatus.RESOLVED, Resolution.AUTO_SYNCED)


# --- decisions -----------------------------------------------------------------------------------------


def test_a_group_is_acknowledged_assigned_and_resolved_with_who_and_when(
    engine: Engine, integration_id: int
) -> None:
    record(engine, integration_id, "701", minutes_ago=3)
    [view] = list_groups(engine).groups

    acknowledged = acknowledge(engine, view.id, by="alice")
    assigned = assign(engine, view.id, assignee=" Bob Finance ", note="check the currency list", by="alice")
    resolved = resolve(engine, view.id, by="bob", note="currency added in Zuora")

    assert (acknowledged.status, acknowledged.updated_by) == (GroupStatus.ACKNOWLEDGED, "alice")
    assert (assigned.status, assigned.assignee, assigned.note) == (
        "assigned",
        "Bob Finance",
        "check the currency list",
    )
    assert (resolved.status, resolved.resolution, resolved.updated_by) == ("resolved", "manual", "bob")
    assert resolved.assignee == "Bob Finance" and resolved.note == "currency added in Zuora"
    assert resolved.resolved_at is not None and resolved.updated_at >= assigned.updated_at


def test_assign_needs_a_name(engine: Engine, integration_id: int) -> None:
    record(engine, integration_id, "702", minutes_ago=3)
    [view] = list_groups(engine).groups

    with pytest.raises(TriageRefused, match="name the person"):
        assign(engine, view.id, assignee="  ", by="alice")


def test_list_groups_filters_by_flow_and_class(engine: Engine, integration_id: int) -> None:
    record(engine, integration_id, "801", minutes_ago=3)
    record(engine, integration_id, "802", minutes_ago=2, error_class="config")

    assert len(list_groups(engine).groups) == 2
    [config] = list_groups(engine, GroupFilter(error_class="config")).groups
    assert config.source_ids == ["802"] and config.sample_message == CURRENCY
    assert list_groups(engine, GroupFilter(flow="invoice")).groups == []


def test_replay_group_enqueues_one_replay_per_failing_source_from_its_newest_failure(
    engine: Engine, integration_id: int
) -> None:
    record(engine, integration_id, "901", minutes_ago=30)
    newest_901 = record(engine, integration_id, "901", minutes_ago=20)
    failing_902 = record(engine, integration_id, "902", minutes_ago=19)
    record(engine, integration_id, "903", minutes_ago=18, message="something else entirely")
    group = next(g for g in list_groups(engine).groups if g.count == 2)

    result = replay_group(engine, group.id, by="alice", mode=ReplayMode.PAYLOAD)

    jobs = replay_jobs(engine)
    assert result.job_ids == [j.id for j in jobs] and result.refused == 0
    assert sorted((j.payload["id"], j.payload["replay_of"]) for j in jobs) == [
        ("901", newest_901),
        ("902", failing_902),
    ]
    assert all(j.payload["mode"] == "payload" and j.flow == FLOW for j in jobs)
    after = find_group(engine, group.id)
    assert after is not None and (after.status, after.updated_by) == ("acknowledged", "alice")


def test_replay_group_skips_records_without_what_the_mode_needs(engine: Engine, integration_id: int) -> None:
    record(engine, integration_id, "911", minutes_ago=3, payload={})
    record(engine, integration_id, "912", minutes_ago=2)
    [group] = list_groups(engine).groups

    result = replay_group(engine, group.id, by="alice", mode=ReplayMode.PAYLOAD)

    assert len(result.job_ids) == 1 and result.refused == 1
    assert [j.payload["id"] for j in replay_jobs(engine)] == ["912"]


# --- edit before replay --------------------------------------------------------------------------------


def test_edit_and_replay_stores_the_edit_and_enqueues_a_replay_that_names_it(
    engine: Engine, integration_id: int
) -> None:
    failed = record(
        engine,
        integration_id,
        "1001",
        minutes_ago=3,
        payload={
            "name": "Initech",
            "crmId": "1001",
            "currency": "XXX",
            "billToContact": {"lastName": "Initech"},
        },
    )
    edited = {"name": "Initech", "crmId": "1001", "currency": "USD", "billToContact": {"lastName": "Initech"}}

    result = edit_and_replay(engine, failed, edited, by="alice")

    [job] = replay_jobs(engine)
    assert job.id == result.job_id
    assert job.payload == {
        "id": "1001",
        "replay_of": failed,
        "mode": "payload",
        "refetch": False,
        "edit_id": result.edit_id,
    }
    [edit] = edits_of(engine, failed)
    assert (edit.id, edit.edited_by, edit.payload, edit.job_id) == (result.edit_id, "alice", edited, job.id)
    assert edit.diff == [{"field": "currency", "before": "XXX", "after": "USD"}] == result.diff
    assert edit_for_job(engine, job.id) == edit
    assert edited_payload(engine, result.edit_id) == edited  # what the executor sends
    with pytest.raises(LookupError, match="no longer exists"):
        edited_payload(engine, result.edit_id + 1)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (
            {"name": "", "crmId": "1", "billToContact": {"lastName": "L"}},
            r"required field missing or empty: name\b",
        ),
        ({"name": "N", "crmId": "1"}, "billToContact.lastName"),
        ({"crmId": "1"}, "required fields missing or empty: name, billToContact.lastName"),
    ],
)
def test_edit_and_replay_refuses_a_payload_without_a_required_field_naming_it(
    engine: Engine, integration_id: int, payload: dict, error: str
) -> None:
    failed = record(engine, integration_id, "1002", minutes_ago=3)

    with pytest.raises(EditRefused, match=error):
        edit_and_replay(engine, failed, payload, by="alice")

    assert replay_jobs(engine) == [] and edits_of(engine, failed) == []


def test_edit_and_replay_refuses_what_cannot_be_edited(engine: Engine, integration_id: int) -> None:
    succeeded = record(engine, integration_id, "1003", minutes_ago=3, outcome=Outcome.SUCCEEDED)
    unmapped = record(engine, integration_id, "1004", minutes_ago=3, payload={})
    older = record(engine, integration_id, "1005", minutes_ago=3)
    record(engine, integration_id, "1005", minutes_ago=1, outcome=Outcome.SUCCEEDED)
    failed = record(engine, integration_id, "1006", minutes_ago=3)
    same = {"name": "Customer 1006", "crmId": "1006"}
    fine = {"name": "X", "crmId": "1", "billToContact": {"lastName": "Y"}}

    for record_id, payload, error in (
        (10**9, fine, "no audit record"),
        (succeeded, fine, "did not fail"),
        (unmapped, fine, "no stored payload"),
        (older, fine, "is newer"),
        (failed, same, "unchanged|required"),
    ):
        with pytest.raises(EditRefused, match=error):
            edit_and_replay(engine, record_id, payload, by="alice")
    assert replay_jobs(engine) == []
    with session_scope(engine) as session:
        assert session.exec(select(PayloadEdit)).all() == []


def test_parse_payload_says_where_malformed_json_goes_wrong() -> None:
    with pytest.raises(EditRefused, match=r"line 3, column 3"):
        parse_payload('{\n  "name": "x",\n  oops\n}')
    with pytest.raises(EditRefused, match="JSON object"):
        parse_payload("[1, 2]")
    assert parse_payload('{"a": 1}') == {"a": 1}


def test_missing_required_checks_every_element_of_a_list() -> None:
    required = ("accountId", "invoiceItems", "invoiceItems[].amount", "invoiceItems[].chargeName")
    payload = {
        "accountId": "A1",
        "invoiceItems": [{"amount": 5, "chargeName": "x"}, {"amount": None, "chargeName": " "}],
    }

    assert missing_required(payload, required) == ["invoiceItems[1].amount", "invoiceItems[1].chargeName"]
    assert missing_required({"accountId": "A1"}, required) == ["invoiceItems"]


def test_payload_diff_names_each_changed_added_and_removed_field() -> None:
    before = {"a": 1, "b": {"c": "x", "d": [1, 2]}, "gone": True}
    after = {"a": 1, "b": {"c": "y", "d": [1, 3]}, "new": "n"}

    assert payload_diff(before, after) == [
        {"field": "b.c", "before": "x", "after": "y"},
        {"field": "b.d[1]", "before": 2, "after": 3},
        {"field": "gone", "before": True},
        {"field": "new", "after": "n"},
    ]
