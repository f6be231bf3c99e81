"""Test tiers: the quick tier runs in `make test` (CI), the long tier in `make soak`.

Tests whose strength grows with repetition (fuzzers, kill -9 cycles, byzantine runs) are marked
`@pytest.mark.soak` and take their counts from `count(quick, soak)`, so one test body serves both
tiers. Each such test reports what it did with `record(kind, **fields)`: a JSON line appended to
the file named by `DLTMW_SOAK_REPORT` (set by `make soak`; unset in `make test`, where nothing is
written). `scripts/soak_summary.py` turns those lines into the summary `make soak` prints.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

TIER_ENV = "DLTMW_TIER"
REPORT_ENV = "DLTMW_SOAK_REPORT"


def soak() -> bool:
    """True in the long tier (`make soak`)."""
    return os.environ.get(TIER_ENV, "quick") == "soak"


def count(quick: int, soak_count: int) -> int:
    """`quick` in `make test`, `soak_count` in `make soak`."""
    return soak_count if soak() else quick


def record(kind: str, **fields: Any) -> None:
    """Append one JSON line describing a tier test's outcome to the soak report (if any)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    line = {"kind": kind, "tier": "soak" if soak() else "quick", "at": time.time(), **fields}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
