"""The CPython settings of a process that hosts a notary (`[notary]` in node.toml).

Why. A notary's work per request is Python under one GIL shared by its threads: the verify pool
admits requests, the store thread writes and commits each batch, the event loop parses and
answers. Two interpreter settings decide how that lock and the collector behave under such a load:

- The switch interval (`sys.setswitchinterval`, 5 ms by default) is how long a thread that
  holds the GIL may keep it while another waits. The store thread gives the GIL up around every
  sqlite step (each inserted row) and must then wait for it again; with verify threads running
  Python beside it, each wait can last up to the interval, so a batch's commit stretches over
  many intervals while its CPU stays small (benchmarks/RESULTS.md, 2026-12-01 14:00 and 16:36).
- The young-generation threshold (`gc.set_threshold`'s first value, 700 by default) starts a
  collection after that many more container objects were allocated than freed. A notary's batch
  in flight holds tens of thousands of small tuples (requests, refs, decisions) that all die
  together when it is answered, so the collector ran ~750 young, ~70 middle and ~7 full
  collections in a 40,000-notarisation run (a full one up to ~100 ms, the loop standing still),
  walking objects that reference counting frees anyway.

Both are process-wide, hence set only in a node process hosting the notary role, once it
serves (`runtime/__main__.py`), and never where dltmw is embedded. The defaults are CPython's
unless the measurement in RESULTS says otherwise (`config_file.NotaryTable`).
"""

from __future__ import annotations

import gc
import sys

from dltmw.runtime.config_file import NotaryTable


def tune_for_notary(settings: NotaryTable) -> str:
    """Apply `settings` to this interpreter; a description for the log."""
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    _, middle, old = gc.get_threshold()
    gc.set_threshold(settings.gc_young_threshold, middle, old)
    return (
        f"switch interval {sys.getswitchinterval() * 1000:g} ms, "
        f"collector thresholds {gc.get_threshold()}"
    )
