"""`python -m demo` (what ./start.sh runs): emulators with demo data, a wired demo workspace, the runner
and the app, as child processes; prints the URL to open and stops everything on Ctrl-C."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
from sqlalchemy.engine import Engine

from connectors.sandbox import DEFAULT_PORTS, SandboxCredentials
from demo.wiring import wire
from storage import migrate
from storage.crypto import get_vault
from storage.settings import get_settings
from storage.users import create_first_admin, has_users

REPO = Path(__file__).resolve().parents[1]
STARTUP_DEADLINE = 60.0  # seconds for each child to come up
DEMO_NEW_CUSTOMERS = [
    {
        "companyName": "Adventure Works",
        "email": "ap@adventure-works.test",
        "currency": {"id": "1", "refName": "USD"},
    },
    {
        "companyName": "Tailspin Toys",
        "email": "accounts@tailspin.test",
        "currency": {"id": "3", "refName": "GBP"},
    },
]


class Children:
    """The child processes, stopped together."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(args, cwd=REPO, env=env)
        self.processes.append((name, process))
        return process

    def check(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise SystemExit(
                    f"the {name} process exited with status {process.returncode}; see its output above"
                )

    def stop(self) -> None:
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()  # SIGTERM: uvicorn and Streamlit shut down cleanly on it
        deadline = time.monotonic() + 10
        for _name, process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


DEMO_ADMIN_FILE = "demo-admin-password"  # in the data directory, mode 0600


def demo_admin(engine: Engine, data_dir: Path) -> str:
    """The demo's admin password: made up and stored (0600) on the first demo start, read back after, so
    the banner can say how to sign in. A database whose admin was made some other way is left alone."""
    stored = data_dir / DEMO_ADMIN_FILE
    if stored.exists():
        return stored.read_text().strip()
    if has_users(engine):
        return "(the password you chose)"
    password = secrets.token_urlsafe(12)
    create_first_admin(engine, username="admin", password=password)
    fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


def wait_until(ready: Callable[[], bool], children: Children, what: str) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while not ready():
        children.check()
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up within {STARTUP_DEADLINE:.0f}s")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx2.get(url, timeout=1.0).status_code < 500
    except httpx2.HTTPError:
        return False


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--ui-port", type=int, default=8501)
    parser.add_argument("--runner-port", type=int, default=8700)
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port)
    parser.add_argument(
        "--no-demo-records", action="store_true", help="do not create demo customers at start"
    )
    args = parser.parse_args(argv)
    # Stop cleanly on SIGTERM as on Ctrl-C (and on SIGINT even when started in the background).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)

    os.environ["ML_CONNECTOR_SANDBOX"] = "1"
    os.environ["ML_CONNECTOR_RUNNER_PORT"] = str(args.runner_port)
    get_settings.cache_clear()
    settings = get_settings()
    env = dict(os.environ)
    python = sys.executable
    credentials_file = settings.data_dir / "sandbox.json"
    credentials_file.unlink(missing_ok=True)
    children = Children()
    try:
        sandbox_args = [python, "-m", "connectors.sandbox", "--credentials", str(credentials_file)]
        for name in DEFAULT_PORTS:
            sandbox_args += [f"--{name}-port", str(getattr(args, f"{name}_port"))]
        children.start("sandbox", sandbox_args, env)
        wait_until(credentials_file.exists, children, "the emulators")
        creds = SandboxCredentials.load(credentials_file)
        wait_until(lambda: answers(f"{creds.zuora_url}/_emulator/requests"), children, "the emulators")

        migrate.upgrade()
        from storage.db import get_engine

        wiring = wire(get_engine(), get_vault(), creds)
        admin_password = demo_admin(get_engine(), settings.data_dir)

        children.start("runner", [python, "-m", "runner"], env)
        runner_url = f"http://{settings.runner_host}:{args.runner_port}"
        wait_until(lambda: answers(f"{runner_url}/healthz"), children, "the runner")
        # Deploy "our User Event script" in the emulated NetSuite account, once per integration.
        for key, secret in (
            (wiring.integration_key, wiring.netsuite_secret),
            (wiring.zoho_integration_key, wiring.zoho_netsuite_secret),
        ):
            httpx2.post(
                f"{creds.netsuite_url}/_emulator/webhooks",
                json={"url": f"{runner_url}/webhooks/netsuite/{key}", "secret": secret},
            )

        ui_args = [
            python, "-m", "streamlit", "run", "app.py",
            "--server.port", str(args.ui_port), "--server.address", "127.0.0.1",
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
        ]  # fmt: skip
        children.start("app", ui_args, env)
        ui_url = f"http://127.0.0.1:{args.ui_port}"
        wait_until(lambda: answers(f"{ui_url}/_stcore/health"), children, "the app")

        if not args.no_demo_records:
            for customer in DEMO_NEW_CUSTOMERS:
                httpx2.post(f"{creds.netsuite_url}/_emulator/seed/customer?notify=true", json=customer)

        print(
            "\n".join(
                [
                    "",
                    "ml-connector is running (demo mode, emulated NetSuite, Zuora and Zoho CRM).",
                    f"  Open the app:     {ui_url}   (sign in as admin / {admin_password})",
                    f"  Runner:           {runner_url}  (/healthz, /metrics)",
                    f"  NetSuite emulator {creds.netsuite_url}   Zuora emulator {creds.zuora_url}   "
                    f"Zoho emulator {creds.zoho_url}",
                    f"  Database:         {settings.effective_database_url}",
                    "  Try it: create a customer in the NetSuite emulator and watch it reach Zuora:",
                    f"    curl -X POST '{creds.netsuite_url}/_emulator/seed/customer?notify=true' "
                    "-H 'Content-Type: application/json' -d '{\"companyName\": \"My First Customer\"}'",
                    "  Ctrl-C stops everything.",
                    "",
                ]
            ),
            flush=True,
        )
        while True:
            children.check()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    finally:
        children.stop()


if __name__ == "__main__":
    main()
