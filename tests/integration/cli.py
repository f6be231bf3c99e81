"""The `dltmw` command line as the integration tests run it: the venv's own entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DLTMW = Path(sys.executable).parent / "dltmw"


def dltmw(*argv: str) -> str:
    """Run `dltmw ARGV...` (bounded in time); its output, and it must succeed."""
    done = subprocess.run(
        [str(DLTMW), *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
