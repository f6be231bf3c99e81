"""Bounding the C allocator's per-thread arenas of a node process (glibc `M_ARENA_MAX`).

Why. glibc's malloc gives each thread that allocates under contention an arena of its own, up
to 8 per core, and memory freed into an arena stays mapped there. A node allocates its large
objects (block bytes, parsed envelopes: everything above pymalloc's 512 bytes) with malloc on
many threads — the signature-verification pool, the sqlite writer and reader threads of every
store, gRPC's completion threads — so its resident memory grew with the number of threads that
ever touched a block, not with what it holds: a peer catching up 20,000 transactions peaked at
147 MB with the default and 123 MB with two arenas (benchmarks/RESULTS.md, "Large ledgers").
Two arenas keep the threads from serialising on one lock while capping that growth.

`limit_arenas` runs first thing in the node process (`runtime/__main__.py` main), before any thread
starts: arenas already created are not merged. It is a no-op where the C library has no
`mallopt` (musl, macOS); an environment `MALLOC_ARENA_MAX` set by the operator wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc malloc.h
ARENAS_MAX = 2


def limit_arenas(arenas: int = ARENAS_MAX) -> bool:
    """Cap malloc arenas at `arenas` (unless MALLOC_ARENA_MAX is set); True when applied."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
