"""Where a child process spends its CPU: py-spy samples (`--profile` on a benchmark) summarised.

py-spy (installed in the venv) attaches to the process by pid and writes its samples as raw collapsed
stacks, one line per distinct stack: `outer (file:line);…;inner (file:line) <count>`. It samples with
`--gil`, only the thread holding Python's GIL, so the samples are the process's Python CPU (time in C
code that lets the GIL go, such as SQLite executing a statement or waiting for its lock, is not in
them); stacks ending in a wait are dropped too. The summary names, as shares of those samples:

* by package: the package of the innermost frame (sqlalchemy, h11, json, runner, …), what burns CPU;
* by our function: the innermost function of this repository on the stack, with everything it calls
  (ApiClient.send with the HTTP client under it, session_scope with SQLAlchemy under it), so which
  part of our code hands the CPU to which library; "(no code of ours)" is the event loop, the HTTP
  server and the thread pool on their own.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import REPO, note, print_table

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
OUR_PACKAGES = ("runner", "storage", "connectors", "demo")
ENTRY_POINTS = ("runner.__main__",)  # on every stack of the event loop: says nothing
# Innermost frames of a thread that waits rather than works: (function, file name).
IDLE = frozenset(
    {
        ("Condition.wait", "threading.py"),
        ("Condition._acquire_restore", "threading.py"),
        ("Event.wait", "threading.py"),
        ("Thread._wait_for_tstate_lock", "threading.py"),
        ("EpollSelector.select", "selectors.py"),
        ("select", "selectors.py"),
    }
)


@dataclass
class Profile:
    samples: int = 0
    by_package: list[tuple[str, float]] = field(default_factory=list)
    by_our_function: list[tuple[str, float]] = field(default_factory=list)
    raw_file: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "by_package": self.by_package,
            "by_our_function": self.by_our_function,
            "raw_file": self.raw_file,
        }


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on PATH; None when there is none."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def recording(pid: int, out: Path, rate: int = 100) -> Iterator[list[Profile]]:
    """Sample process `pid` while the block runs; yields a list that holds the Profile afterwards
    (empty when py-spy is missing or cannot attach)."""
    found: list[Profile] = []
    executable = py_spy()
    if executable is None:
        note("py-spy not found: no profile")
        yield found
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            executable,
            "record",
            "--pid",
            str(pid),
            "--gil",
            "--format",
            "raw",
            "--rate",
            str(rate),
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield found
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        try:
            _out, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            err = b""
        if out.exists():
            found.append(summarise(out))
        else:
            note(f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}")


def summarise(raw: Path, top: int = 12) -> Profile:
    packages: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(text) for text in stack.split(";")]
        function, file = frames[-1]
        if (function, file.rsplit("/", 1)[-1]) in IDLE:
            continue
        total += count
        packages[_package(frames[-1][1])] += count
        mine = [f"{_module(file)}.{name}" for name, file in frames if _is_ours(file)]
        mine = [name for name in mine if not name.startswith(ENTRY_POINTS)]
        ours[mine[-1] if mine else "(no code of ours)"] += count
    if not total:
        return Profile(raw_file=str(raw))
    return Profile(
        samples=total,
        by_package=[(name, round(n / total, 3)) for name, n in packages.most_common(top)],
        by_our_function=[(name, round(n / total, 3)) for name, n in ours.most_common(top)],
        raw_file=str(raw.relative_to(REPO)) if raw.is_relative_to(REPO) else str(raw),
    )


def _frame(text: str) -> tuple[str, str]:
    found = FRAME.match(text.strip())
    return (found["function"], found["file"]) if found else (text.strip(), "")


def _parts(file: str) -> list[str]:
    """The file's path from its top-level package on (site-packages/… and the repository cut off)."""
    path = file.replace("\\", "/")
    for marker in ("site-packages/", "dist-packages/", f"{REPO.as_posix()}/"):
        if marker in path:
            path = path.rsplit(marker, 1)[1]
    if path.startswith("/"):  # the standard library: /…/lib/python3.11/json/decoder.py → json/decoder.py
        path = re.sub(r"^.*/lib/python\d+\.\d+/", "", path)
    return [p for p in path.split("/") if p]


def _package(file: str) -> str:
    parts = _parts(file)
    if not parts:
        return "(native)"
    return parts[0].removesuffix(".py")


def _is_ours(file: str) -> bool:
    parts = _parts(file)
    return bool(parts) and parts[0] in OUR_PACKAGES and "site-packages" not in file


def _module(file: str) -> str:
    return ".".join(_parts(file)).removesuffix(".py")


def print_profile(title: str, profile: Profile) -> None:
    if not profile.samples:
        return
    rows = []
    for i in range(max(len(profile.by_package), len(profile.by_our_function))):
        package = profile.by_package[i] if i < len(profile.by_package) else ("", None)
        ours = profile.by_our_function[i] if i < len(profile.by_our_function) else ("", None)
        rows.append(
            (
                package[0],
                f"{package[1]:.0%}" if package[1] is not None else "",
                ours[0],
                f"{ours[1]:.0%}" if ours[1] is not None else "",
            )
        )
    print_table(
        f"{title}: {profile.samples:,} py-spy samples holding the GIL ({profile.raw_file})",
        ("innermost package", "share", "innermost function of ours, with what it calls", "share"),
        rows,
    )
