"""A node process pins malloc's mmap threshold (`runtime/memory.py`), so block-sized buffers
keep their own mappings and go back to the system when freed.

Shown in a child process (the threshold is per process) with what a node allocates: Python
`bytes` of a block's size (above pymalloc's 512 bytes they are glibc `malloc` chunks). After one
1 MiB buffer is freed, glibc by default raises its threshold past a 512 KiB buffer, which then
comes from the heap; pinned, the 512 KiB buffer is still mmapped. glibc marks an mmapped chunk
with bit 0x2 (IS_MMAPPED) of the size word just before the pointer malloc returned, which for a
`bytes` object is the object's address.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

CHILD = """
import ctypes, sys
from dltmw.runtime.memory import tune_malloc
if sys.argv[1] == "tuned":
    tune_malloc()
def mmapped(obj):
    return bool(ctypes.c_size_t.from_address(id(obj) - ctypes.sizeof(ctypes.c_size_t)).value & 2)
first = bytes(1024 * 1024)
assert mmapped(first)  # above the initial 128 KiB either way
del first  # by default this raises the threshold to 1 MiB
later = [bytes(512 * 1024) for _ in range(4)]
print(sum(mmapped(b) for b in later))
"""

glibc = pytest.mark.skipif(
    sys.platform != "linux" or not ctypes.util.find_library("c"), reason="glibc malloc only"
)


def _mmapped_later(mode: str) -> int:
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
    return int(done.stdout)


@glibc
def test_block_sized_buffers_stay_mmapped_after_a_larger_one_was_freed() -> None:
    assert _mmapped_later("default") == 0  # glibc raised its threshold past them
    assert _mmapped_later("tuned") == 4


def test_an_operator_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from dltmw.runtime.memory import pin_mmap_threshold

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert pin_mmap_threshold() is False
