"""`dltmw bench` stops the node processes it started when it gets SIGTERM or SIGINT.

A real bench (real node processes, `--keep` so that their PID files can be read) is signalled
once every node is READY; the bench must exit non-zero within a bound and, by then, no node
process it started may remain. Red without `bench/interrupt.py`: SIGTERM ended the bench and left
the nodes (own sessions) running; SIGINT was turned into a cancellation the run could outlive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dltmw.ops.supervisor import process_alive

pytestmark = pytest.mark.integration

UP_S = 90.0  # the network's start on a loaded 2-core host
EXIT_S = 25.0  # GRACE_S + UNWIND_S of interrupt.py, and slack


def _node_pids(net: Path) -> dict[str, int]:
    """The node processes the bench started, once every node printed READY (else {})."""
    nodes = net / "nodes"
    pids = net / "run" / "pids"
    if not nodes.is_dir() or not pids.is_dir():
        return {}
    ids = sorted(p.name for p in nodes.iterdir() if p.is_dir())
    found: dict[str, int] = {}
    for node_id in ids:
        pid_file, out = pids / f"{node_id}.pid", net / "run" / "logs" / f"{node_id}.out"
        try:
            pid = int(pid_file.read_text())
            ready = b"READY" in out.read_bytes()
        except (OSError, ValueError):
            return {}
        if not ready:
            return {}
        found[node_id] = pid
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupted_bench_stops_its_nodes(tmp_path: Path, signum: int) -> None:
    keep = tmp_path / "keep"
    net = keep / "net"  # (runner.run_bench's layout)
    dltmw = Path(sys.executable).parent / "dltmw"
    command = [str(dltmw), "bench", "--workload", "bank", "--txs", "100000", "--duration", "60"]
    command += ["--results-dir", str(tmp_path / "results"), "--keep", str(keep)]
    bench = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + UP_S
        while time.monotonic() < deadline and bench.poll() is None:
            pids = _node_pids(net)
            if pids:
                break
            time.sleep(0.2)
        assert pids, f"the network did not come up (bench exit {bench.poll()})"
        bench.send_signal(signum)
        try:
            out, _ = bench.communicate(timeout=EXIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"bench still running {EXIT_S} s after {signal.Signals(signum).name}")
        text = out.decode(errors="replace")
        left = {n: p for n, p in pids.items() if process_alive(p)}
        assert not left, f"node processes left running: {left}; bench said: {text[-2000:]}"
        assert bench.returncode == 128 + signum, text[-2000:]
        assert "node processes stopped" in text, text[-2000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)
        bench.wait(10)
        for pid in pids.values():  # (only when red: the bench left them)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
