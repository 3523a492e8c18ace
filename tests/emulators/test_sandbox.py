"""`python -m connectors.sandbox` as a newcomer runs it: up quickly, and its output says what to do."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from tests.support.live import wait_for

REPO = Path(__file__).resolve().parents[2]


def test_sandbox_starts_all_three_emulators_and_explains_how_to_use_them(tmp_path: Path) -> None:
    credentials = tmp_path / "sandbox.json"
    output = tmp_path / "out.txt"
    args = [sys.executable, "-m", "connectors.sandbox", "--credentials", str(credentials)]
    args += ["--netsuite-port", "0", "--zuora-port", "0", "--zoho-port", "0"]
    started = time.monotonic()
    with output.open("w") as out:
        process = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(
                lambda: "Up in" in output.read_text() or process.poll() is not None,
                timeout=30,
                what="sandbox",
            )
            print(f"sandbox ready {time.monotonic() - started:.2f}s after the command started")
            text = output.read_text()
            creds = json.loads(credentials.read_text())

            assert process.poll() is None, text
            assert oct(credentials.stat().st_mode & 0o777) == "0o600"
            for url in (creds["netsuite_url"], creds["zuora_url"], creds["zoho_url"]):
                assert url in text
                assert httpx2.get(f"{url}/_emulator/requests").status_code == 200
            assert "ML_CONNECTOR_SANDBOX=1" in text and "./start.sh" in text
            assert creds["zuora_client_secret"] not in text  # secrets stay in the 0600 file
            customers = httpx2.get(f"{creds['netsuite_url']}/_emulator/records/customer").json()
            assert len(customers) >= 3  # demo data is seeded
        finally:
            process.terminate()
            process.wait(20)
