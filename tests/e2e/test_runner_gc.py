"""The runner process tunes its memory management at start (runner/__main__.py): fewer young
collections, what start-up built frozen out of every full collection, and two malloc arenas."""

from __future__ import annotations

import gc
import subprocess
import sys

from runner.__main__ import GC_THRESHOLDS


def run_python(script: str) -> str:
    """What `script` prints, run in a fresh interpreter: the test process's own memory management stays
    as it is."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_tune_gc_freezes_what_exists_and_collects_less_often() -> None:
    script = (
        "import gc\n"
        "from runner.__main__ import tune_gc\n"
        "before = gc.get_freeze_count()\n"
        "tune_gc()\n"
        "print(before, gc.get_freeze_count(), *gc.get_threshold())\n"
    )
    before, frozen, *thresholds = (int(n) for n in run_python(script).split())
    assert before == 0 and frozen > 10_000  # the modules' objects, at least
    assert tuple(thresholds) == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > gc.get_threshold()[0]  # less often than CPython's default


def test_cycles_are_still_collected_after_tuning() -> None:
    script = (
        "import gc, weakref\n"
        "from runner.__main__ import tune_gc\n"
        "tune_gc()\n"
        "class Node: pass\n"
        "a, b = Node(), Node()\n"
        "a.other, b.other = b, a\n"
        "gone = weakref.ref(a)\n"
        "del a, b\n"
        "kept = [[] for _ in range(30_000)]  # net allocations past the threshold: a young collection\n"
        "print(gone() is None)\n"
    )
    assert run_python(script).strip() == "True"


def test_the_runner_caps_mallocs_arenas_on_glibc() -> None:
    script = (
        "import platform\n"
        "from runner.__main__ import limit_malloc_arenas\n"
        "print(platform.libc_ver()[0], limit_malloc_arenas())\n"
    )
    libc, capped = run_python(script).split()
    assert capped == ("True" if libc == "glibc" else "False")
