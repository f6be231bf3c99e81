"""A node process caps glibc's malloc arenas (`runtime/memory.py`).

Shown in a child process (arenas are per process): eight threads allocating large blocks at
once get up to eight arenas from glibc by default, and at most `ARENAS_MAX` after
`limit_arenas`; `malloc_stats()` prints one "Arena N:" section per arena on stderr.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from dltmw.runtime.memory import ARENAS_MAX

CHILD = """
import ctypes, ctypes.util, sys, threading
from dltmw.runtime.memory import limit_arenas
if sys.argv[1] == "limit":
    assert limit_arenas()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    for _ in range(2000):  # contention: every thread in malloc at once
        libc.free(libc.malloc(64 * 1024))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc.malloc_stats()
"""

glibc = pytest.mark.skipif(
    sys.platform != "linux" or not ctypes.util.find_library("c"), reason="glibc malloc only"
)


def _arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


@glibc
def test_limit_arenas_caps_the_arenas_of_many_allocating_threads() -> None:
    assert _arenas("default") > ARENAS_MAX  # the default grows with the threads
    assert 1 <= _arenas("limit") <= ARENAS_MAX


def test_an_operator_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from dltmw.runtime.memory import limit_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_arenas() is False
