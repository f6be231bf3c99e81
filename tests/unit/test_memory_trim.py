"""A PBFT-lite orderer returns malloc's free memory to the system after a stable checkpoint
(`runtime/memory.trim`, called by the executor once the checkpoint's compaction is written).

Why (`runtime/memory.py`): memory freed inside a heap stays resident until `malloc_trim`. Shown
in a child process with what a replica frees at a checkpoint — many ~2 KB buffers (envelopes,
votes: above pymalloc's 512 bytes, below the mmap threshold, so in malloc's heap) of which a few
outlive the rest: their pages stay resident after the free, and `trim` releases them.
"""

from __future__ import annotations

import asyncio
import ctypes.util
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from dltmw.core.pbft import PbftConfig, StableRecord
from dltmw.runtime.roles.orderer import pbft as pbft_role

CHILD = """
import sys
from dltmw.runtime.memory import tune_malloc, trim
def anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
tune_malloc()
held = [bytes(2000) + bytes([i % 256]) for i in range(40_000)]  # ~80 MB in malloc's heap
kept = held[::16]  # a few outlive the rest, spread over the heap (as retained records do)
del held
freed = anon_kib()
released = trim() if sys.argv[1] == "trim" else False
print(freed, anon_kib(), int(released))
"""

glibc = pytest.mark.skipif(
    sys.platform != "linux" or not ctypes.util.find_library("c"), reason="glibc malloc only"
)


def _child(mode: str) -> tuple[int, int, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    freed, after, released = (int(w) for w in done.stdout.split())
    return freed, after, released


@glibc
def test_trim_returns_the_free_pages_inside_the_heap() -> None:
    freed, after, released = _child("trim")
    assert released == 1
    assert freed - after > 40_000  # KiB: most of the ~75 MB freed (2 KB in 32 KB kept)


@glibc
def test_without_trim_the_freed_memory_stays_resident() -> None:
    freed, after, _released = _child("none")
    assert freed - after < 1_000  # the control: free alone gives nothing back


class Store:
    def __init__(self) -> None:
        self.compacted: list[tuple[int, int]] = []

    async def append(self, _records: object) -> None:
        pass

    async def compact(self, stable_seq: int, keep: int) -> None:
        self.compacted.append((stable_seq, keep))


def test_the_executor_trims_after_compacting_at_a_stable_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    store = Store()
    monkeypatch.setattr(pbft_role, "trim", lambda: calls.append(len(store.compacted)) or True)
    channel: Any = SimpleNamespace(
        store=store,
        ledger=SimpleNamespace(height=40),
        config=PbftConfig(n=4, checkpoint_interval=16, decided_retain=8),
    )
    executor = pbft_role.PbftOrdererExecutor(channel)
    asyncio.run(executor.persist([]))
    assert calls == []  # nothing compacted: nothing to trim
    asyncio.run(executor.persist([StableRecord(32, b"d", ())]))
    assert store.compacted and calls == [1]  # after the compaction was written
