"""The User Event SuiteScript we ship posts exactly what the runner's NetSuite intake accepts.

Static checks read the script's text (always run). Where `node` is installed, the script also runs
with stand-ins for N/https, N/log and N/runtime, and the request it makes is replayed against the
runner's real webhook endpoint, which must accept it (202) and queue what it queues for any event.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from connectors.sandbox import SandboxCredentials
from demo.wiring import wire
from runner.intake import NETSUITE_EVENT_TYPES, NETSUITE_RECORD_TYPES
from runner.webhooks import webhook_routes
from storage.crypto import Vault
from tests.support.live import serve

ROOT = Path(__file__).resolve().parents[2]
SUITESCRIPT = ROOT / "connectors" / "netsuite" / "suitescript"
SCRIPT = SUITESCRIPT / "ml_connector_user_event.js"
INSTALL = SUITESCRIPT / "INSTALL.md"
NODE = shutil.which("node")
URL_PARAMETER = "custscript_ml_connector_url"
SECRET_PARAMETER = "custscript_ml_connector_secret"


def source() -> str:
    return SCRIPT.read_text(encoding="utf-8")


def js_constant(name: str) -> str:
    """The value of `const NAME = <value>;` in the script, as written."""
    found = re.search(rf"const {name} = (.+?);", source(), re.DOTALL)
    assert found, f"the script declares no const {name}"
    return found.group(1)


def js_strings(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


# --- static: always run -----------------------------------------------------------------------------


def test_suitescript_declares_a_2_1_user_event_script_using_only_https_log_and_runtime() -> None:
    text = source()
    assert re.search(r"@NApiVersion 2\.1\b", text)
    assert re.search(r"@NScriptType UserEventScript\b", text)
    define = re.search(r"define\(\[([^\]]*)\]", text)
    assert define and js_strings(define.group(1)) == ["N/https", "N/log", "N/runtime"]
    assert re.search(r"return \{ afterSubmit: afterSubmit \};", text)
    assert "require(" not in text  # only the modules the define() names


def test_suitescript_matches_what_the_runner_intake_accepts() -> None:
    assert sorted(js_strings(js_constant("RECORD_TYPES"))) == sorted(NETSUITE_RECORD_TYPES)
    assert sorted(js_strings(js_constant("EVENT_TYPES"))) == sorted(NETSUITE_EVENT_TYPES)
    assert js_strings(js_constant("FALLBACK_EVENT_TYPE"))[0] in NETSUITE_EVENT_TYPES
    header = js_strings(js_constant("SECRET_HEADER"))[0]
    # runner/webhooks.py reads the NetSuite secret from this header (lower-cased by Starlette).
    assert f'"{header.lower()}"' in (ROOT / "runner" / "webhooks.py").read_text()
    payload = re.search(r"const payload = \{(.*?)\n\s*\};", source(), re.DOTALL)
    assert payload, "the script builds no payload object"
    keys = re.findall(r"^\s*(\w+):", payload.group(1), re.MULTILINE)
    # runner/intake.py _parse_netsuite reads these three names.
    assert {"recordType", "id", "eventType"} <= set(keys)
    assert "body: JSON.stringify(payload)" in source() and "'Content-Type': 'application/json'" in source()


def test_suitescript_reads_url_and_secret_from_deployment_parameters_and_never_throws() -> None:
    text = source()
    assert js_strings(js_constant("URL_PARAMETER")) == [URL_PARAMETER]
    assert js_strings(js_constant("SECRET_PARAMETER")) == [SECRET_PARAMETER]
    assert (
        "getParameter({ name: URL_PARAMETER })" in text and "getParameter({ name: SECRET_PARAMETER })" in text
    )
    assert not re.search(r"\bthrow\b", text)  # a failed POST must not fail the user's save
    after_submit = text[text.index("const afterSubmit") : text.index("const notify")]
    assert "try {" in after_submit and "catch (e)" in after_submit and "log.error" in after_submit
    assert "${secret}" not in text  # never logged


def test_install_guide_covers_upload_script_record_deployments_parameters_and_a_test() -> None:
    guide = INSTALL.read_text(encoding="utf-8")
    for needed in (
        SCRIPT.name,
        "File Cabinet",
        "Customization > Scripting > Scripts > New",
        "_ml_connector_url",
        URL_PARAMETER,
        SECRET_PARAMETER,
        "Released",
        "Execution Log",
        "X-Webhook-Secret",
        "/webhooks/netsuite/",
    ):
        assert needed in guide, needed
    for record_type in ("Customer", "Vendor", "Contact", "Invoice"):
        assert f"| {record_type} | `_ml_connector_{record_type.lower()}`" in guide


# --- dynamic: the script run by node, its request replayed against the runner ------------------------

HARNESS = r"""
// Load the SuiteScript as NetSuite would (AMD define), with stand-ins for the N/ modules it names,
// call afterSubmit with a fake User Event context, and print what it did as JSON.
const fs = require('fs');
const vm = require('vm');
const [scriptPath, scenarioJson] = process.argv.slice(2);
const scenario = JSON.parse(scenarioJson);
const requests = [];
const logs = [];
let defined = null;
vm.runInNewContext(fs.readFileSync(scriptPath, 'utf8'), {
    define: (deps, factory) => { defined = { deps, factory }; },
}, { filename: scriptPath });
const modules = {
    'N/https': {
        post: (options) => {
            requests.push(JSON.parse(JSON.stringify(options)));
            if (scenario.postError) {
                const error = new Error(scenario.postError.message);
                error.name = scenario.postError.name;
                throw error;
            }
            return { code: scenario.status, body: scenario.responseBody, headers: {} };
        },
    },
    'N/log': Object.fromEntries(['debug', 'audit', 'error', 'emergency'].map(
        (level) => [level, (entry) => logs.push({ level, title: entry.title, details: String(entry.details) })],
    )),
    'N/runtime': {
        accountId: '1234567_SB1',
        getCurrentScript: () => ({ getParameter: ({ name }) => scenario.parameters[name] ?? null }),
    },
};
const entry = defined.factory(...defined.deps.map((name) => modules[name]));
const record = { type: scenario.recordType, id: scenario.recordId };
const context = {
    type: scenario.contextType,
    UserEventType: { CREATE: 'create', EDIT: 'edit', XEDIT: 'xedit', DELETE: 'delete' },
    newRecord: scenario.onlyOldRecord ? undefined : record,
    oldRecord: record,
};
let thrown = null;
try {
    entry.afterSubmit(context);
} catch (e) {
    thrown = String(e);
}
process.stdout.write(JSON.stringify({ entryPoints: Object.keys(entry), requests, logs, thrown }));
"""

SECRET = "s3cr3t-for-the-test"  # replaced by the integration's real secret where the runner checks it


@dataclass(frozen=True)
class Run:
    entry_points: list[str]
    requests: list[dict[str, Any]]
    logs: list[dict[str, str]]
    thrown: str | None

    def logged(self, level: str) -> list[str]:
        return [entry["details"] for entry in self.logs if entry["level"] == level]


def run_script(tmp_path: Path, **scenario: Any) -> Run:
    """Run afterSubmit under node with `scenario` (see HARNESS) and return what the script did."""
    assert NODE is not None
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS, encoding="utf-8")
    values = {
        "contextType": "edit",
        "recordType": "customer",
        "recordId": 1137,
        "onlyOldRecord": False,
        "parameters": {
            URL_PARAMETER: "https://runner.example.com/webhooks/netsuite/demo",
            SECRET_PARAMETER: SECRET,
        },
        "status": 202,
        "responseBody": '{"accepted": true}',
        "postError": None,
        **scenario,
    }
    done = subprocess.run(
        [NODE, str(harness), str(SCRIPT), json.dumps(values)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    return Run(out["entryPoints"], out["requests"], out["logs"], out["thrown"])


@pytest.fixture
def runner_intake(engine: Engine, vault: Vault) -> Iterator[tuple[str, str]]:
    """The runner's webhook endpoints on loopback, with the demo integrations; yields (base URL, the
    NetSuite shared secret of the "demo" integration, whose customer_account flow is enabled)."""
    credentials = SandboxCredentials(
        **{
            f.name: "http://127.0.0.1:9" if f.name.endswith("_url") else "x"
            for f in fields(SandboxCredentials)
        }
    )
    wiring = wire(engine, vault, credentials)
    events = Counter("events", "webhook events", ["system", "verdict"], registry=CollectorRegistry())
    app = Starlette(routes=webhook_routes(engine=engine, vault=vault, events=events, wake=lambda: None))
    with serve(app) as url:
        yield url, wiring.netsuite_secret


if NODE:  # without node only the static checks above run

    @pytest.mark.parametrize(
        ("context_type", "only_old_record", "event_type", "jobs"),
        [
            ("create", False, "create", 1),
            ("edit", False, "edit", 1),
            ("xedit", False, "xedit", 1),  # inline edit
            ("cancel", False, "edit", 1),  # another kind of save: sent as an edit
            ("delete", True, "delete", 0),  # kept as an event, never synchronised
        ],
    )
    def test_suitescript_posts_a_notice_the_runner_accepts(
        tmp_path: Path,
        runner_intake: tuple[str, str],
        context_type: str,
        only_old_record: bool,
        event_type: str,
        jobs: int,
    ) -> None:
        runner_url, secret = runner_intake
        url = f"{runner_url}/webhooks/netsuite/demo"

        run = run_script(
            tmp_path,
            contextType=context_type,
            onlyOldRecord=only_old_record,
            parameters={URL_PARAMETER: url, SECRET_PARAMETER: secret},
        )

        assert run.entry_points == ["afterSubmit"] and run.thrown is None
        (request,) = run.requests
        assert request["url"] == url
        assert request["headers"] == {"Content-Type": "application/json", "X-Webhook-Secret": secret}
        body = json.loads(request["body"])
        assert {k: body[k] for k in ("recordType", "id", "eventType", "contextType", "accountId")} == {
            "recordType": "customer",
            "id": "1137",
            "eventType": event_type,
            "contextType": context_type,
            "accountId": "1234567_SB1",
        }
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["occurredAt"])
        assert run.logged("error") == []
        # The runner takes exactly this request: path, header and body.
        answer = httpx2.post(
            runner_url + urlsplit(request["url"]).path,
            content=request["body"].encode(),
            headers=request["headers"],
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["accepted"] is True and len(answer.json()["jobs"]) == jobs

    @pytest.mark.parametrize(
        ("failure", "says"),
        [
            (
                {"postError": {"name": "SSS_REQUEST_TIME_EXCEEDED", "message": "timed out"}},
                "SSS_REQUEST_TIME_EXCEEDED",
            ),
            ({"status": 401, "responseBody": '{"error": "bad_secret"}'}, 'HTTP 401 {"error": "bad_secret"}'),
            ({"status": 503, "responseBody": '{"error": "unavailable"}'}, "HTTP 503"),
        ],
    )
    def test_a_failed_notice_is_logged_and_never_thrown(
        tmp_path: Path, failure: dict[str, Any], says: str
    ) -> None:
        run = run_script(tmp_path, **failure)

        assert run.thrown is None and len(run.requests) == 1
        (error,) = run.logged("error")
        assert says in error and "customer 1137" in error
        assert all(SECRET not in entry["details"] for entry in run.logs)

    def test_without_its_parameters_the_script_logs_what_to_set_and_sends_nothing(tmp_path: Path) -> None:
        run = run_script(tmp_path, parameters={URL_PARAMETER: "https://runner.example.com/x"})

        assert run.requests == [] and run.thrown is None
        (error,) = run.logged("error")
        assert URL_PARAMETER in error and SECRET_PARAMETER in error and "1137" in error

    def test_a_record_type_the_runner_does_not_sync_is_not_sent(tmp_path: Path) -> None:
        run = run_script(tmp_path, recordType="salesorder")

        assert run.requests == [] and run.thrown is None
        assert any("salesorder records are not synced" in line for line in run.logged("audit"))
