"""A client nobody here wrote: Zoho's official Python SDK (`zohocrmsdk8_0`) against the emulator.

The SDK is used exactly as its README describes, with one change: its environment is a DataCenter
whose URLs are the emulator's base URL. Everything it does on its own (token refresh, the current
user and org lookups it makes after a refresh, field metadata before record calls, its response
parsing) has to work unchanged. The SDK is synchronous and uses `requests`; the emulator still runs
on the shared loopback server, so every call crosses real HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore
from zohocrmsdk.src.com.zoho.crm.api import ParameterMap
from zohocrmsdk.src.com.zoho.crm.api import notifications as sdk_watch
from zohocrmsdk.src.com.zoho.crm.api import record as sdk_record
from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig

from connectors.zoho.emulator import ZohoEmulator
from tests.emulators import zoho_fixtures
from tests.emulators.conftest import ZOHO_CLIENT_ID, ZOHO_SECRET
from tests.emulators.zoho_fixtures import ALL_SCOPES, NotificationReceiver, exchange_code

notify_server = zoho_fixtures.notify_server
notify_receiver = zoho_fixtures.notify_receiver


class EmulatorDataCenter(DataCenter):
    """Zoho's DataCenter contract (as USDataCenter implements it) for one emulator base URL."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def get_iam_url(self) -> str:
        return f"{self.base_url}/oauth/v2/token"

    def get_file_upload_url(self) -> str:
        return self.base_url

    def environment(self) -> DataCenter.Environment:
        return DataCenter.Environment(self.base_url, self.get_iam_url(), self.get_file_upload_url())


def initialize(base_url: str, tmp_path: Path, token: OAuthToken) -> None:
    """`Initializer.initialize` as the SDK README shows it, with a file token store under `tmp_path`."""
    Initializer.initialize(
        environment=EmulatorDataCenter(base_url).environment(),
        token=token,
        store=FileStore(str(tmp_path / "sdk_tokens.csv")),
        sdk_config=SDKConfig(auto_refresh_fields=False, pick_list_validation=False),
        resource_path=str(tmp_path),
    )


@pytest.fixture
def sdk(zoho: ZohoEmulator, zoho_url: str, zoho_http: httpx2.Client, tmp_path: Path) -> Iterator[str]:
    """The SDK initialised with a client id, secret and a refresh token minted from a self-client code."""
    refresh_token = exchange_code(zoho_http, zoho.grant_code(ZOHO_CLIENT_ID, ALL_SCOPES)).json()[
        "refresh_token"
    ]
    initialize(
        zoho_url,
        tmp_path,
        OAuthToken(client_id=ZOHO_CLIENT_ID, client_secret=ZOHO_SECRET, refresh_token=refresh_token),
    )
    yield refresh_token
    Initializer.initializer = None  # the SDK keeps its setup in a class attribute


def account(**fields: Any) -> sdk_record.Record:
    record = sdk_record.Record()
    for name, value in fields.items():
        record.add_key_value(name, value)
    return record


def body(*records: sdk_record.Record, duplicate_check: list[str] | None = None) -> sdk_record.BodyWrapper:
    wrapper = sdk_record.BodyWrapper()
    wrapper.set_data(list(records))
    wrapper.set_trigger([])
    if duplicate_check is not None:
        wrapper.set_duplicate_check_fields(duplicate_check)
    return wrapper


def outcomes(response: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(status, code, details) of each item of an SDK ActionWrapper, in order."""
    wrapper = response.get_object()
    assert isinstance(wrapper, sdk_record.ActionWrapper | sdk_watch.ActionWrapper), wrapper
    return [
        (i.get_status().get_value(), i.get_code().get_value(), i.get_details())
        for i in wrapper.get_data() or wrapper.get_watch()
    ]


def test_sdk_inserts_accounts_and_reads_them_back(zoho: ZohoEmulator, sdk: str) -> None:
    operations = sdk_record.RecordOperations("Accounts")

    created = operations.create_records(
        body(account(Account_Name="Acme", Phone="555-0100", NetSuite_Id="1137"), account(Account_Name="Beta"))
    )

    assert created.get_status_code() == 201
    results = outcomes(created)
    assert [(status, code) for status, code, _ in results] == [("success", "SUCCESS")] * 2
    ids = [details["id"] for _, _, details in results]
    stored = {r["id"]: r for r in zoho.records("Accounts")}
    assert sorted(stored) == sorted(ids)
    assert (stored[ids[0]]["Account_Name"], stored[ids[0]]["Phone"], stored[ids[0]]["NetSuite_Id"]) == (
        "Acme",
        "555-0100",
        "1137",
    )

    one = operations.get_record(int(ids[0])).get_object().get_data()[0]
    params = ParameterMap()
    params.add(sdk_record.GetRecordsParam.fields, "Account_Name,Phone")
    listed = operations.get_records(params).get_object().get_data()

    assert (one.get_id(), one.get_key_value("Account_Name"), one.get_key_value("Phone")) == (
        int(ids[0]),
        "Acme",
        "555-0100",
    )
    assert sorted(r.get_key_value("Account_Name") for r in listed) == ["Acme", "Beta"]
    # What the SDK did on its own before the record calls, all answered by the emulator.
    paths = [(r["method"], r["path"], r["status"]) for r in zoho.requests]
    assert ("GET", "/crm/v8/settings/fields", 200) in paths and ("GET", "/crm/v8/users", 200) in paths


def test_sdk_reports_per_record_errors_from_a_mixed_batch(zoho: ZohoEmulator, sdk: str) -> None:
    zoho.seed("Accounts", {"Account_Name": "Taken", "NetSuite_Id": "1137"})

    response = sdk_record.RecordOperations("Accounts").create_records(
        body(
            account(Account_Name="Fresh", NetSuite_Id="2000"),
            account(Account_Name="Clash", NetSuite_Id="1137"),
        )
    )

    assert response.get_status_code() == 207
    (ok, _, _), (failed, code, details) = outcomes(response)
    assert (ok, failed, code, details["api_name"]) == ("success", "error", "DUPLICATE_DATA", "NetSuite_Id")
    assert sorted(r["Account_Name"] for r in zoho.records("Accounts")) == ["Fresh", "Taken"]


def test_sdk_upserts_on_netsuite_id_then_updates_and_deletes(zoho: ZohoEmulator, sdk: str) -> None:
    existing = zoho.seed("Accounts", {"Account_Name": "Acme", "NetSuite_Id": "1137"})
    operations = sdk_record.RecordOperations("Accounts")

    upserted = operations.upsert_records(
        body(
            account(Account_Name="Acme Ltd", NetSuite_Id="1137"),
            account(Account_Name="Beta", NetSuite_Id="2000"),
            duplicate_check=["NetSuite_Id"],
        )
    )
    new_id = outcomes(upserted)[1][2]["id"]
    updated = operations.update_record(int(new_id), body(account(Phone="555-0199")))
    params = ParameterMap()
    params.add(sdk_record.DeleteRecordsParam.ids, existing)
    deleted = operations.delete_records(params)

    assert upserted.get_status_code() == 200
    wrapper = upserted.get_object().get_data()
    assert [(i.get_details()["id"], i.get_message().get_value()) for i in wrapper] == [
        (existing, "record updated"),
        (new_id, "record added"),
    ]
    assert (updated.get_status_code(), deleted.get_status_code()) == (200, 200)
    assert [(r["Account_Name"], r.get("Phone")) for r in zoho.records("Accounts")] == [("Beta", "555-0199")]


def test_sdk_exchanges_a_grant_code_itself(zoho: ZohoEmulator, zoho_url: str, tmp_path: Path) -> None:
    code = zoho.grant_code(ZOHO_CLIENT_ID, ALL_SCOPES)

    try:
        initialize(
            zoho_url,
            tmp_path,
            OAuthToken(client_id=ZOHO_CLIENT_ID, client_secret=ZOHO_SECRET, grant_token=code),
        )
        saved = (tmp_path / "sdk_tokens.csv").read_text()
        response = sdk_record.RecordOperations("Contacts").create_records(body(account(Last_Name="Smith")))
    finally:
        Initializer.initializer = None

    minted = [
        token for token, scopes in zoho.clients[ZOHO_CLIENT_ID].refresh_tokens.items() if scopes is not None
    ]
    assert len(minted) == 1 and minted[0] in saved  # the SDK's token store kept the refresh token
    assert response.get_status_code() == 201
    assert [r["Last_Name"] for r in zoho.records("Contacts")] == ["Smith"]


def test_sdk_manages_a_notification_channel_that_delivers(
    zoho: ZohoEmulator, sdk: str, notify_receiver: tuple[NotificationReceiver, str]
) -> None:
    receiver, url = notify_receiver
    channel = sdk_watch.Notification()
    channel.set_channel_id("1000000068001")
    channel.set_events(["Accounts.all"])
    channel.set_notify_url(f"{url}/zoho")
    channel.set_token("sdk-token")
    channel.set_channel_expiry(datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))
    wrapper = sdk_watch.BodyWrapper()
    wrapper.set_watch([channel])
    operations = sdk_watch.NotificationsOperations()

    enabled = operations.enable_notifications(wrapper)
    listed = operations.get_notifications(ParameterMap()).get_object().get_watch()
    sdk_record.RecordOperations("Accounts").create_records(body(account(Account_Name="Acme")))
    [notification] = receiver.wait(1)
    params = ParameterMap()
    params.add(sdk_watch.DeleteNotificationParam.channel_ids, "1000000068001")
    disabled = operations.delete_notification(params)

    assert enabled.get_status_code() == 201
    assert [(w.get_channel_id(), w.get_events(), w.get_token()) for w in listed] == [
        ("1000000068001", ["Accounts.all"], "sdk-token")
    ]
    assert (notification["operation"], notification["token"]) == ("insert", "sdk-token")
    assert disabled.get_status_code() == 200 and zoho.channels() == []
