"""The C allocator settings of a node process (glibc `M_ARENA_MAX`, `M_MMAP_THRESHOLD`).

Why arenas. glibc's malloc gives each thread that allocates under contention an arena of its
own, up to 8 per core, and memory freed into an arena stays mapped there. A node allocates its
large objects (block bytes, parsed envelopes: everything above pymalloc's 512 bytes) with malloc
on many threads — the signature-verification pool, the sqlite writer and reader threads of every
store, gRPC's completion threads — so its resident memory grew with the number of threads that
ever touched a block, not with what it holds: a peer catching up 20,000 transactions peaked at
147 MB with the default and 123 MB with two arenas (benchmarks/RESULTS.md, "Large ledgers").
Two arenas keep the threads from serialising on one lock while capping that growth.

Why a fixed mmap threshold. An allocation of at least the threshold gets its own `mmap` and is
unmapped when freed, so the pages go back to the system at once. glibc starts at 128 KiB but
raises the threshold to the size of every mmapped chunk that is freed (up to 32 MiB): after the
first ~250 KB block buffer is freed, every later block buffer comes from an arena's heap, where
freed space stays resident (it is returned only when it sits at the heap's top) and fragments
between the small objects allocated after it. Setting the threshold explicitly turns that
adjustment off (glibc `mallopt(3)`), so block-sized buffers keep being mapped and unmapped; each
costs a system call and fresh zeroed pages, negligible beside a block's signature checks.

Why a periodic trim. Freed space inside an arena's heap stays resident: glibc returns only the
heap's top on `free`. After a burst of large short-lived objects — a replica resumed after a
stall reads what its peers queued for it, then catches up by fetched blocks — tens of MB sit
free between the small objects that outlived the burst: a PBFT-lite backup 100 s after such a
catch-up held 23 MB free in its arenas (mallinfo2) and 108 MiB resident against its peers'
85-90; `malloc_trim(0)` gave 9 MiB of it back (benchmarks/RESULTS.md 2026-12-05 rss59).
`trim_forever` asks glibc every `TRIM_EVERY_S` how much is free in the arenas and trims when
it is at least `TRIM_FREE_MIN` bytes (mallinfo2 and malloc_trim each walk the arenas' free
lists holding their locks: 3 to 21 ms measured with 300 MiB free, on a worker thread — an
allocation on the loop's thread may wait that long, once per `TRIM_EVERY_S`), so a node gives
back what a burst left behind without a call on any hot path.

`tune_malloc` runs first thing in the node process (`runtime/__main__.py` main), before any
thread starts: arenas already created are not merged. It is a no-op where the C library has no
`mallopt` (musl, macOS); an environment setting by the operator (`MALLOC_ARENA_MAX`,
`MALLOC_MMAP_THRESHOLD_`, glibc's own tunables) wins over each.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable

M_ARENA_MAX = -8  # glibc malloc.h
M_MMAP_THRESHOLD = -3  # glibc malloc.h
ARENAS_MAX = 2
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, pinned (module docstring)
TRIM_EVERY_S = 30.0
TRIM_FREE_MIN = 8 * 1024 * 1024  # free bytes in the arenas worth a trim


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (2.33+): sizes in bytes, as size_t."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once: `find_library` runs `ldconfig -p` in a child process
    (or gcc / ld where there is no ldconfig) at every call (review of rss59)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def free_in_arenas() -> int | None:
    """Bytes free inside malloc's arenas (`mallinfo2().fordblks`), or None where the C
    library has no mallinfo2 (musl, macOS, glibc before 2.33)."""
    libc = _libc()
    mallinfo2 = None if libc is None else getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)


def trim() -> bool:
    """Give the free pages of every arena back to the system (`malloc_trim(0)`); True when
    glibc released something."""
    libc = _libc()
    malloc_trim = None if libc is None else getattr(libc, "malloc_trim", None)
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = (ctypes.c_size_t,)
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))


def trim_if_free(
    free_min: int = TRIM_FREE_MIN,
    free: Callable[[], int | None] = free_in_arenas,
    release: Callable[[], bool] = trim,
) -> bool:
    """Trim when at least `free_min` bytes are free in the arenas; True when it trimmed."""
    held = free()
    if held is None or held < free_min:
        return False
    release()
    return True


async def trim_forever(every_s: float = TRIM_EVERY_S) -> None:
    """Every `every_s`, `trim_if_free` on a worker thread: a node's background task, started
    only where `free_in_arenas` answers (`runtime/__main__.py`)."""
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(trim_if_free)


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's `mallopt`, or None where the C library has none."""
    libc = _libc()
    if libc is None:
        return None
    try:
        mallopt = libc.mallopt
    except AttributeError:
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def limit_arenas(arenas: int = ARENAS_MAX) -> bool:
    """Cap malloc arenas at `arenas` (unless MALLOC_ARENA_MAX is set); True when applied."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, arenas))


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix malloc's mmap threshold at `threshold` bytes, which also stops glibc raising it
    (unless MALLOC_MMAP_THRESHOLD_ is set); True when applied."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, threshold))


def tune_malloc() -> None:
    """Both settings of this module, for a node process (before any thread starts)."""
    limit_arenas()
    pin_mmap_threshold()
