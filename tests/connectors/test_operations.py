"""The operations the flows need, run by the product's clients against the emulators over HTTP."""

from __future__ import annotations

import pytest

from connectors.errors import ConfigurationError, RemoteError
from connectors.netsuite.client import NetSuiteClient
from connectors.ping import ping
from connectors.zoho.client import ZohoClient, exchange_grant_code
from connectors.zuora.client import ZuoraClient
from tests.connectors.conftest import Harness
from tests.support.live import serve

NS, ZU, ZO = ["netsuite"], ["zuora"], ["zoho"]


@pytest.mark.parametrize("harness", NS, indirect=True)
async def test_netsuite_scan_pages_by_key_past_the_row_cap(harness: Harness) -> None:
    emulator = harness.emulator
    first = emulator.seed("customer", {"companyName": "c-0"})
    for n in range(1, 2500):
        emulator.seed("customer", {"companyName": f"c-{n}"})
    emulator.suiteql_row_cap = 1500  # type: ignore[attr-defined]  # smaller than the table, as 100,000 is in life
    client = harness.client
    assert isinstance(client, NetSuiteClient)

    rows = [row async for row in client.scan("id, companyname", "customer", where=f"id >= {first}")]

    ids = [int(row["id"]) for row in rows]
    assert len(ids) == 2500 and ids == sorted(set(ids))
    queries = [a for a in harness.api_attempts() if a.url.endswith("/suiteql")]
    assert len(queries) == 3  # 1000 + 1000 + 500: a short page ends the scan


@pytest.mark.parametrize("harness", NS, indirect=True)
async def test_netsuite_invoice_lines_come_inline_and_custom_records_upsert_by_external_id(
    harness: Harness,
) -> None:
    emulator = harness.emulator
    customer = emulator.seed("customer", {"companyName": "Billed Co"})
    invoice = emulator.seed(
        "invoice",
        {
            "entity": {"id": customer},
            "tranDate": "2026-11-01",
            "item": {"items": [{"item": {"id": "7"}, "amount": 120.0}]},
        },
    )
    client = harness.client
    assert isinstance(client, NetSuiteClient)

    record = await client.get_record("invoice", invoice, expand=True)
    first = await client.upsert_by_external_id("customrecord_zuora_sub_event", "SUB-1", {"name": "SUB-1"})
    second = await client.upsert_by_external_id("customrecord_zuora_sub_event", "SUB-1", {"name": "SUB-1 v2"})

    assert record["item"]["items"][0]["amount"] == 120.0
    assert first == second
    assert len(emulator.records("customrecord_zuora_sub_event")) == 1


@pytest.mark.parametrize("harness", ZU, indirect=True)
async def test_zuora_invoice_under_one_idempotency_key_is_created_once(harness: Harness) -> None:
    client = harness.client
    assert isinstance(client, ZuoraClient)
    account = await client.create_account(
        {
            "name": "Inv Co",
            "currency": "USD",
            "billCycleDay": 1,
            "billToContact": {"firstName": "A", "lastName": "B"},
        },
        idempotency_key="acct-1",
    )
    invoice = {
        "accountId": account["accountId"],
        "invoiceDate": "2026-11-01",
        "invoiceItems": [{"amount": 100, "serviceStartDate": "2026-11-01", "chargeName": "Consulting"}],
    }

    first = await client.create_invoice(invoice, idempotency_key="inv-ns-1001")
    again = await client.create_invoice(invoice, idempotency_key="inv-ns-1001")

    assert first["id"] == again["id"]
    assert len(harness.emulator.invoices()) == 1  # type: ignore[attr-defined]
    fetched = await client.get_invoice(first["id"])
    assert fetched["amount"] == 100


@pytest.mark.parametrize("harness", ZU, indirect=True)
async def test_zuora_rejected_invoice_is_a_remote_error_naming_the_field(harness: Harness) -> None:
    client = harness.client
    assert isinstance(client, ZuoraClient)

    with pytest.raises(RemoteError, match="invoiceDate"):
        await client.create_invoice({"accountNumber": "A-none", "invoiceItems": []}, idempotency_key="bad-1")


@pytest.mark.parametrize("harness", ZU, indirect=True)
async def test_zuora_subscription_versions_and_payments_pages(harness: Harness) -> None:
    emulator = harness.emulator
    client = harness.client
    assert isinstance(client, ZuoraClient)
    account = await client.create_account(
        {
            "name": "Sub Co",
            "currency": "USD",
            "billCycleDay": 1,
            "billToContact": {"firstName": "A", "lastName": "B"},
        },
        idempotency_key="acct-2",
    )
    subscription = emulator.create_subscription(account["accountId"], notify=False)  # type: ignore[attr-defined]
    emulator.amend_subscription(subscription["subscriptionNumber"], "TermsAndConditions")  # type: ignore[attr-defined]
    for n in range(45):
        emulator.add_payment(account["accountId"], 10 + n)  # type: ignore[attr-defined]

    latest = await client.get_subscription(subscription["subscriptionNumber"])
    first = await client.get_subscription(subscription["subscriptionNumber"], version=1)
    payments = [p async for p in client.payments(accountId=account["accountId"])]

    assert latest["version"] == 2 and first["version"] == 1
    assert len(payments) == 45 and len({p["id"] for p in payments}) == 45
    assert len([a for a in harness.api_attempts() if "/v1/payments" in a.url]) == 2  # 40 + 5


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_zoho_upsert_batches_get_by_ids_and_refuse_oversized_batches(harness: Harness) -> None:
    client = harness.client
    assert isinstance(client, ZohoClient)
    records = [{"Account_Name": f"Z {n}", "NetSuite_Id": str(n)} for n in range(100)]

    created = await client.upsert("Accounts", records, duplicate_check_fields=["NetSuite_Id"])
    updated = await client.upsert("Accounts", records[:3], duplicate_check_fields=["NetSuite_Id"])
    with pytest.raises(RemoteError, match="at most 100"):
        await client.upsert("Accounts", records + records[:1], duplicate_check_fields=["NetSuite_Id"])
    ids = [r["details"]["id"] for r in created]
    fetched = await client.get_records("Accounts", ids + ids[:20], fields=["Account_Name", "NetSuite_Id"])

    assert [r["action"] for r in created] == ["insert"] * 100
    assert [r["action"] for r in updated] == ["update"] * 3
    assert len(harness.emulator.records("Accounts")) == 100
    assert {r["NetSuite_Id"] for r in fetched} == {str(n) for n in range(100)}


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_zoho_watch_channel_lifecycle(harness: Harness) -> None:
    client = harness.client
    assert isinstance(client, ZohoClient)
    channel = {
        "channel_id": "1000000068001",
        "events": ["Accounts.all"],
        "token": "channel-token",
        "notify_url": "https://runner.example.test/webhooks/zoho/demo",
    }

    enabled = await client.watch([channel])
    listed = await client.list_watches()
    renewed = await client.renew_watch([{**channel, "channel_expiry": "2099-01-01T00:00:00+00:00"}])
    disabled = await client.disable_watch([channel["channel_id"]])

    assert (
        enabled[0]["code"] == "SUCCESS"
        and renewed[0]["code"] == "SUCCESS"
        and disabled[0]["code"] == "SUCCESS"
    )
    assert [w["channel_id"] for w in listed] == [channel["channel_id"]]
    assert await client.list_watches() == []


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_zoho_grant_code_exchange_gives_a_working_refresh_token(harness: Harness) -> None:
    creds = harness.credentials
    code = harness.emulator.grant_code(creds.zoho_client_id, "ZohoCRM.modules.ALL,ZohoCRM.org.READ")  # type: ignore[attr-defined]
    http = harness.client.http

    tokens = await exchange_grant_code(
        http,
        accounts_url=harness.url,
        client_id=creds.zoho_client_id,
        client_secret=creds.zoho_client_secret,
        code=code,
        sandbox=True,
        on_attempt=harness.attempts.append,
    )
    client = harness.make(refresh_token=tokens["refresh_token"])
    with pytest.raises(ConfigurationError, match=r"expired .* or was already used") as refused:
        await exchange_grant_code(
            http,
            accounts_url=harness.url,
            client_id=creds.zoho_client_id,
            client_secret=creds.zoho_client_secret,
            code=code,
            sandbox=True,
        )

    assert tokens["api_domain"] == harness.url
    [exchange] = harness.token_attempts()  # the first exchange, reported like every other call
    assert exchange.method == "POST" and exchange.status == 200
    assert exchange.response_excerpt == "(withheld: token response)"
    assert refused.value.method == "POST" and refused.value.url == f"{harness.url}/oauth/v2/token"
    assert refused.value.status == 200 and refused.value.excerpt == "invalid_code"
    assert await harness.cheap_call(client) is None  # record 1 does not exist; the call itself worked


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_zoho_upsert_where_every_record_fails_returns_each_records_error(harness: Harness) -> None:
    client = harness.client
    assert isinstance(client, ZohoClient)
    records = [{"NetSuite_Id": str(n), "Phone": "555"} for n in range(3)]  # no Account_Name: all refused

    results = await client.upsert("Accounts", records, duplicate_check_fields=["NetSuite_Id"])

    assert [a.status for a in harness.api_attempts()] == [400]  # Zoho's answer when every item failed
    assert [(r["status"], r["code"]) for r in results] == [("error", "MANDATORY_NOT_FOUND")] * 3
    assert all(r["details"]["api_name"] == "Account_Name" for r in results)
    assert harness.emulator.records("Accounts") == []


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_zoho_request_level_400_is_still_a_remote_error(harness: Harness) -> None:
    client = harness.client
    assert isinstance(client, ZohoClient)

    with pytest.raises(RemoteError, match="INVALID_MODULE") as caught:
        await client.upsert("Widgets", [{"Name": "w"}], duplicate_check_fields=["Name"])

    assert caught.value.status == 400 and caught.value.method == "POST"


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_zoho_calls_go_to_the_api_domain_the_token_response_names(harness: Harness) -> None:
    with serve(harness.emulator.app) as api_domain:  # the same org, reached at another address
        harness.emulator.api_domain = api_domain  # type: ignore[attr-defined]
        try:
            client = harness.make()
            assert isinstance(client, ZohoClient)
            result = await ping(client)
            upserted = await client.upsert(
                "Accounts", [{"Account_Name": "Domain Co"}], duplicate_check_fields=[]
            )
            fetched = await client.get_record("Accounts", upserted[0]["details"]["id"])
        finally:
            harness.emulator.api_domain = None  # type: ignore[attr-defined]

    assert result.ok is True and result.learned["api_domain"] == api_domain
    assert fetched is not None and fetched["Account_Name"] == "Domain Co"
    assert {a.url.split("/crm/")[0] for a in harness.api_attempts()} == {api_domain}
    assert {a.url for a in harness.token_attempts()} == {f"{harness.url}/oauth/v2/token"}


@pytest.mark.parametrize("harness", NS, indirect=True)
async def test_netsuite_create_record_posts_a_custom_record_and_returns_its_id(harness: Harness) -> None:
    client = harness.client
    assert isinstance(client, NetSuiteClient)
    body = {"name": "SUB-9", "externalId": "SUB-9", "custrecord_zse_status": "Active"}

    record_id = await client.create_record("customrecord_zuora_sub_event", body)

    stored = harness.emulator.records("customrecord_zuora_sub_event")
    assert [r["id"] for r in stored] == [record_id] and record_id.isdigit()
    assert stored[0]["name"] == "SUB-9" and stored[0]["custrecord_zse_status"] == "Active"
    assert [(a.method, a.status) for a in harness.api_attempts()] == [("POST", 204)]


@pytest.mark.parametrize("harness", ZU, indirect=True)
async def test_zuora_update_account_changes_only_the_fields_sent(harness: Harness) -> None:
    client = harness.client
    assert isinstance(client, ZuoraClient)
    created = await client.create_account(
        {"name": "Old Name", "currency": "USD", "billCycleDay": 1, "crmId": "NS-7",
         "billToContact": {"firstName": "A", "lastName": "B"}},
        idempotency_key="acct-update",
    )  # fmt: skip

    answer = await client.update_account(created["accountId"], {"name": "New Name"})
    account = await client.get_account(created["accountNumber"])

    assert answer["success"] is True
    assert account["basicInfo"]["name"] == "New Name" and account["basicInfo"]["crmId"] == "NS-7"
    assert [a.method for a in harness.api_attempts()] == ["POST", "PUT", "GET"]


@pytest.mark.parametrize("harness", ZU, indirect=True)
async def test_zuora_finds_the_account_of_a_netsuite_id(harness: Harness) -> None:
    client = harness.client
    assert isinstance(client, ZuoraClient)
    created = await client.create_account(
        {"name": "Found Co", "currency": "USD", "billCycleDay": 1, "crmId": "NS-1234",
         "billToContact": {"firstName": "A", "lastName": "B"}},
        idempotency_key="acct-found",
    )  # fmt: skip

    found = await client.find_account_by_crm_id("NS-1234")
    many = await client.find_accounts_by_crm_ids(["NS-1234", "NS-none"])

    assert found is not None and found["id"] == created["accountId"]
    assert found["accountnumber"] == created["accountNumber"]
    assert list(many) == ["ns-1234"] and many["ns-1234"]["id"] == created["accountId"]
