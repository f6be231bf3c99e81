"""`python -m dltmw` and `python -m dltmw.cli.main` run the same command line as the `dltmw`
console script (the latter printed nothing and exited 0: no `__main__` guard)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["dltmw", "dltmw.cli.main"])
def test_the_module_runs_the_command_line(module: str) -> None:
    command = [sys.executable, "-m", module, "--help"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: dltmw" in done.stdout and "bench" in done.stdout
