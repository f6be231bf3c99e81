"""`python -m benchmarks.gc_pause`: how long a full garbage collection stops a node process,
before and after `runtime/gc_tuning.freeze_startup_heap` (not a test).

Imports what a node process imports before it serves, then times `gc.collect()` (median of 7)
with the startup heap scanned, freezes it, and times again; prints the objects walked each time.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time

import dltmw.runtime.__main__  # the node process's imports
import dltmw.runtime.node  # noqa: F401
from dltmw.runtime.gc_tuning import freeze_startup_heap

ROUNDS = 7


def full_collection_ms() -> float:
    """Median wall time of a full collection, in ms."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, load {os.getloadavg()}"
    )
    print("command: python -m benchmarks.gc_pause")
    walked, before = len(gc.get_objects()), full_collection_ms()
    frozen = freeze_startup_heap()
    after = full_collection_ms()
    print(f"before: {walked} objects walked, full collection {before:.2f} ms (median of {ROUNDS})")
    print(f"after:  {len(gc.get_objects())} objects walked ({frozen} frozen), {after:.3f} ms")


if __name__ == "__main__":
    main()
