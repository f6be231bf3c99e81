"""`dltmw demo` end to end, as `make demo` runs it: every flow passes, the closing summary says
so in one line per flow, and the nodes' logs are kept where the demo says they are."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dltmw.cli.demo import FLOWS

pytestmark = pytest.mark.integration
DLTMW = Path(sys.executable).parent / "dltmw"
NODES = 7  # services/networks/capital-market.toml


def test_the_demo_passes_every_flow_and_keeps_its_logs(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(DLTMW), "demo"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = done.stdout
    kept = re.search(r"^logs: (.+)$", out, re.M)
    logs = Path(kept[1]) if kept else None
    try:
        assert done.returncode == 0, f"demo failed:\n{out}\n{done.stderr}"
        assert "Traceback" not in out + done.stderr
        summary = out.split("\nsummary\n", 1)[1].splitlines()
        found = (re.match(r"^(PASS|FAIL) (\w+) ", line) for line in summary)
        verdicts = {m[2]: m[1] for m in found if m}
        assert verdicts == {name: "PASS" for name in FLOWS}, out
        assert logs is not None, "the demo did not say where its logs are"
        node_logs = sorted(logs.glob("*.log"))
        assert len(node_logs) == NODES, node_logs
        for path in node_logs:
            lines = path.read_text().splitlines()
            assert lines, f"{path} is empty"
            first = json.loads(lines[0])  # JSON lines, stamped with the node
            assert first["node"] == path.stem and first["level"] == "INFO"
            serving = [json.loads(x)["message"] for x in lines if "startup objects frozen" in x]
            assert serving, f"{path}: no 'serving on' line"  # runtime/gc_tuning.py ran
            frozen = int(re.search(r"(\d+) startup objects frozen", serving[0])[1])
            assert frozen > 20_000, serving[0]
    finally:
        if logs is not None:
            shutil.rmtree(logs, ignore_errors=True)
