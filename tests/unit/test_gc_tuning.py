"""`runtime/gc_tuning.freeze_startup_heap`: after it, a full collection no longer scans the
startup heap (in a fresh process: freezing is process-wide and cannot be undone selectively)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
import dltmw.runtime.node  # what a node process imports before it serves
from dltmw.runtime.gc_tuning import freeze_startup_heap
before = len(gc.get_objects())
frozen = freeze_startup_heap()
print(before, frozen, len(gc.get_objects()))
"""


def test_the_startup_heap_is_frozen_out_of_full_collections() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    before, frozen, scanned = (int(x) for x in run.stdout.split())
    assert before > 20_000, before  # a node's imports alone: ~64,000 tracked objects
    assert frozen >= before * 0.9, (before, frozen)
    assert scanned < before / 100, (before, scanned)  # what a full collection still walks


WINDOW = """
import gc
from dltmw.runtime.gc_tuning import frozen_heap
kept = [[i] for i in range(5000)]  # alive when the window opens
with frozen_heap() as frozen:
    inside = gc.get_freeze_count()
    scanned = len(gc.get_objects())
after = gc.get_freeze_count()
print(frozen, inside, scanned, after, len(gc.get_objects()) > len(kept))
"""


def test_a_frozen_window_keeps_the_heap_out_of_collections_and_hands_it_back() -> None:
    """What `dltmw bench` measures inside (runner._session): frozen during, collected after."""
    run = subprocess.run(
        [sys.executable, "-c", WINDOW], capture_output=True, text=True, timeout=120, check=True
    )
    frozen, inside, scanned, after, back = run.stdout.split()
    assert int(frozen) >= 5000 and int(inside) >= 5000, run.stdout
    assert int(scanned) < 1000, run.stdout  # a full collection inside walks almost nothing
    assert int(after) == 0 and back == "True", run.stdout  # unfrozen: collectable again
