"""`python -m connectors.sandbox`: NetSuite, Zuora and Zoho CRM emulators on loopback, with demo data.

Prints each emulator's base URL and the demo credentials a connection needs, and writes them to a JSON
file (mode 0600) that the demo launcher reads. Point the product at it by running it with
`ML_CONNECTOR_SANDBOX=1` (which lets connections use loopback URLs) and entering these base URLs and
credentials as connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.netsuite.emulator import NetSuiteEmulator
from connectors.zoho.emulator import ZohoEmulator
from connectors.zuora.emulator import ZuoraEmulator

DEFAULT_PORTS = {"netsuite": 8801, "zuora": 8802, "zoho": 8803}
_LOADED = time.monotonic()  # the fallback start of `seconds_since_start` where /proc is missing

DEMO_CUSTOMERS: list[dict[str, Any]] = [
    {"companyName": "Northwind Traders", "email": "ap@northwind.test", "phone": "555-0101",
     "currency": {"id": "1", "refName": "USD"}},
    {"companyName": "Contoso Pharmaceuticals", "email": "billing@contoso.test", "phone": "555-0102",
     "currency": {"id": "2", "refName": "EUR"}},
    {"companyName": "Fabrikam Inc", "email": "finance@fabrikam.test", "phone": "555-0103",
     "currency": {"id": "1", "refName": "USD"}},
]  # fmt: skip


@dataclass(frozen=True)
class SandboxCredentials:
    """What a newcomer (or the demo launcher) needs to connect the product to the sandbox."""

    netsuite_url: str
    netsuite_account_id: str
    netsuite_client_id: str
    netsuite_certificate_id: str
    netsuite_private_key: str
    zuora_url: str
    zuora_client_id: str
    zuora_client_secret: str
    zoho_url: str
    zoho_client_id: str
    zoho_client_secret: str
    zoho_refresh_token: str

    @classmethod
    def load(cls, path: Path) -> SandboxCredentials:
        return cls(**json.loads(path.read_text()))


@dataclass
class Sandbox:
    netsuite: NetSuiteEmulator
    zuora: ZuoraEmulator
    zoho: ZohoEmulator
    credentials: SandboxCredentials


def build(host: str, ports: dict[str, int]) -> tuple[Sandbox, dict[str, socket.socket]]:
    """Emulators with registered demo clients and seeded data, and their bound listening sockets."""
    sockets = {name: _bind(host, port, name) for name, port in ports.items()}
    urls = {name: f"http://{host}:{sock.getsockname()[1]}" for name, sock in sockets.items()}
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    credentials = SandboxCredentials(
        netsuite_url=urls["netsuite"],
        netsuite_account_id="1234567_SB1",
        netsuite_client_id="demo-netsuite-client",
        netsuite_certificate_id="demo-certificate",
        netsuite_private_key=private_pem,
        zuora_url=urls["zuora"],
        zuora_client_id="demo-zuora-client",
        zuora_client_secret=secrets.token_urlsafe(24),
        zoho_url=urls["zoho"],
        zoho_client_id="1000.DEMOCLIENT",
        zoho_client_secret=secrets.token_urlsafe(24),
        zoho_refresh_token="1000." + secrets.token_hex(16),
    )
    netsuite = NetSuiteEmulator(credentials.netsuite_account_id)
    netsuite.register_m2m_client(
        credentials.netsuite_client_id, credentials.netsuite_certificate_id, public_pem
    )
    for customer in DEMO_CUSTOMERS:
        netsuite.seed("customer", dict(customer))
    zuora = ZuoraEmulator()
    zuora.register_client(credentials.zuora_client_id, credentials.zuora_client_secret)
    zoho = ZohoEmulator()
    zoho.register_client(
        credentials.zoho_client_id, credentials.zoho_client_secret, credentials.zoho_refresh_token
    )
    return Sandbox(netsuite, zuora, zoho, credentials), sockets


def _bind(host: str, port: int, name: str) -> socket.socket:
    sock = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # so asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"the {name} emulator cannot listen on {host}:{port} ({exc.strerror}); "
            f"stop whatever uses that port or pass --{name}-port with another one (0 picks a free port)"
        ) from None
    return sock


def write_credentials(credentials: SandboxCredentials, path: Path) -> None:
    """Write the credentials JSON readable by this user only (it holds a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(credentials), handle, indent=2)
    tmp.replace(path)


def describe(credentials: SandboxCredentials) -> str:
    """The text a newcomer reads: where each emulator is and how to point the product at it."""
    c = credentials
    return "\n".join(
        [
            "ml-connector sandbox: emulators of NetSuite, Zuora and Zoho CRM are up.",
            "",
            f"  NetSuite  {c.netsuite_url}   account {c.netsuite_account_id}, client id {c.netsuite_client_id},"
            f" certificate id {c.netsuite_certificate_id}, private key in the credentials file",
            f"  Zuora     {c.zuora_url}   client id {c.zuora_client_id}, client secret in the credentials file",
            f"  Zoho CRM  {c.zoho_url}   client id {c.zoho_client_id}, secret and refresh token in the file",
            "",
            "To point the product at them: run it with ML_CONNECTOR_SANDBOX=1 (allows loopback base URLs) and",
            "create connections with these base URLs and credentials; or run ./start.sh, which does all of it.",
        ]
    )


async def serve(sandbox: Sandbox, sockets: dict[str, socket.socket], on_ready: Callable[[], None]) -> None:
    """Serve the three emulators until interrupted; `on_ready` runs once all of them accept connections."""
    apps = {"netsuite": sandbox.netsuite.app, "zuora": sandbox.zuora.app, "zoho": sandbox.zoho.app}
    servers = {
        name: uvicorn.Server(
            uvicorn.Config(apps[name], log_level="warning", access_log=False, lifespan="auto")
        )
        for name in sockets
    }
    tasks = [asyncio.create_task(server.serve(sockets=[sockets[name]])) for name, server in servers.items()]
    while not all(server.started for server in servers.values()):
        if any(task.done() for task in tasks):
            break  # a server failed to start; gather below re-raises its error
        await asyncio.sleep(0.01)
    else:
        on_ready()
    await asyncio.gather(*tasks)


def seconds_since_start() -> float:
    """Seconds since this process started, interpreter start-up and imports included.

    Linux: the process start time in /proc/self/stat (field 22, clock ticks after boot) against the
    boot-time clock, so "Up in" means what a newcomer waits from pressing Enter. Elsewhere: since this
    module was loaded, which leaves interpreter start-up and the imports out.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            after_name = stat.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
        started = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22; the list starts at field 3
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _LOADED


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m connectors.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port)
    parser.add_argument("--credentials", type=Path, default=Path("data/sandbox.json"))
    args = parser.parse_args(argv)
    ports = {name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS}
    sandbox, sockets = build(args.host, ports)

    def ready() -> None:
        write_credentials(sandbox.credentials, args.credentials)
        print(describe(sandbox.credentials))
        print(
            f"\nCredentials: {args.credentials} (mode 0600). Up in {seconds_since_start():.2f}s. Ctrl-C stops."
        )
        sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sandbox, sockets, ready))


if __name__ == "__main__":
    main()
