"""docs/embedding.md and examples/embedded/ are run, not just present: the quick start's code
block and every example run as their own processes and must print what they promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "embedding.md"


def _run(path: Path) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(path)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_quick_start_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/embedding.md has no python block"
    script = tmp_path / "quick_start.py"
    script.write_text(blocks[0])
    out = _run(script)
    assert "opened in block" in out and "balance 100" in out
    assert "refused: insufficient funds" in out
    assert "org2 got XS1234 100 @ 99.50 {'kind': 'fill'}" in out


@pytest.mark.parametrize("name", ["pubsub", "settlement"])
def test_example_runs(name: str) -> None:
    out = _run(ROOT / "examples" / "embedded" / f"{name}.py")
    assert out.strip().splitlines()[-1] == "OK", out
