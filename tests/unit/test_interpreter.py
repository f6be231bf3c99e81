"""`runtime/interpreter.tune_for_notary`: a notary process's switch interval and young
collection threshold are the configured ones (in a fresh process: both are process-wide)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, sys
from dltmw.runtime.config_file import NotaryTable
from dltmw.runtime.interpreter import tune_for_notary
middle, old = gc.get_threshold()[1:]
tune_for_notary(NotaryTable(switch_interval_ms=0.5, gc_young_threshold=50_000))
print(sys.getswitchinterval(), *gc.get_threshold(), middle, old)
"""


def test_the_settings_are_applied_and_the_older_generations_kept() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    interval, young, middle, old, middle_before, old_before = run.stdout.split()
    assert float(interval) == 0.0005
    assert int(young) == 50_000
    assert (middle, old) == (middle_before, old_before)
