"""A node gives back what a burst of allocations left free inside malloc's arenas
(`runtime/memory.trim_forever`).

Shown in a child process (its arenas are its own): 80 MB of 4 KB blocks allocated from the
arena heap, all freed but every 50th — the survivors pin the heap, so `free` returns nothing to
the system and the freed space stays resident, as after a replica's catch-up. `trim_if_free`
sees it (mallinfo2) and gives it back.
"""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from dltmw.runtime.memory import TRIM_FREE_MIN, trim_if_free

CHILD = """
import ctypes, ctypes.util, sys
from dltmw.runtime import memory
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
blocks = [libc.malloc(4096) for _ in range(20_000)]
for b in blocks:
    libc.memset(b, 1, 4096)  # resident
for i, b in enumerate(blocks):
    if i % 50:
        libc.free(b)
before, free = rss(), memory.free_in_arenas()
trimmed = memory.trim_if_free() if sys.argv[1] == "trim" else False
print(before, rss(), free, trimmed)
"""

glibc = pytest.mark.skipif(
    sys.platform != "linux" or not ctypes.util.find_library("c"), reason="glibc malloc only"
)


def _child(mode: str) -> tuple[int, int, int, bool]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode], check=True, capture_output=True, text=True
    )
    before, after, free, trimmed = done.stdout.split()
    return int(before), int(after), int(free), trimmed == "True"


@glibc
def test_freed_space_pinned_in_an_arena_is_given_back() -> None:
    """Red without the trim (`release` a no-op): the 78 MB freed stay resident."""
    before, after, free, trimmed = _child("trim")
    assert free >= 70_000_000 >= TRIM_FREE_MIN
    assert trimmed
    assert before - after > 50_000_000, (before, after)
    before, after, _free, trimmed = _child("keep")  # the control: free() alone gives back none
    assert not trimmed and before - after < 5_000_000


def test_trims_only_from_the_threshold_on() -> None:
    calls: list[int] = []

    def release() -> bool:
        calls.append(1)
        return True

    assert not trim_if_free(100, lambda: 99, release) and not calls
    assert not trim_if_free(100, lambda: None, release) and not calls  # no mallinfo2
    assert trim_if_free(100, lambda: 100, release) and calls == [1]
