"""Keeping the cyclic garbage collector off the node's startup heap (`gc.freeze`).

Why. A started node holds ~65,000 container objects that live as long as the process: modules,
classes, functions, protobuf descriptors, the parsed config and identities. CPython's collector
walks every one of them at each full (generation 2) collection, and the event loop stands
still meanwhile: 13 to 36 ms for a node's imports alone, 25 to 123 ms inside the nodes of a
100 tx/s run on this loaded machine (benchmarks/RESULTS.md, "Collector pauses"). A full
collection comes whenever the objects that survived since the last one reach a quarter of the
long-lived heap (caches filling, ledgers growing), so such a pause can land on any
transaction. `gc.freeze()` moves everything alive at that moment into a permanent generation
the collector never walks: afterwards a full collection walks the ~1,000 objects the running
node added (measured). What the node allocates later is collected as before; a frozen object
dropped later is still freed by reference counting, and only one caught in a reference cycle
stays (at most the startup heap, once: the config a config block replaces, for instance).

`freeze_startup_heap` runs once in the node process (`runtime/__main__.py`), right after the
node announced READY (so the collection before the freeze is not on the restart-to-serving
path), and never in a process that embeds dltmw (`dltmw.open`): that heap is its host's.

`frozen_heap` does the same for a window only and undoes it after: `dltmw bench` measures
inside it. The bench process is the load generator AND the client whose latency is reported;
unfrozen, its heap (imports, rich, matplotlib, the network's setup) made each full collection
stand its loop still for 0.2-0.7 s inside a 15 s run at 550 tx/s, and the young and middle
collections cost ~0.1 ms per transaction (benchmarks/RESULTS.md, 2026-12-03 17:05, lat14):
every transaction in flight then carried that pause into its latency. Unfreezing at the end
hands the window's objects back to the collector (a later run in the same process).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def freeze_startup_heap() -> int:
    """Collect what startup left behind, then freeze the rest; returns the objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextmanager
def frozen_heap() -> Iterator[int]:
    """`freeze_startup_heap` for the duration of the block, then `gc.unfreeze`; yields the count."""
    frozen = freeze_startup_heap()
    try:
        yield frozen
    finally:
        gc.unfreeze()
