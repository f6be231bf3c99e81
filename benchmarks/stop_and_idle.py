"""How long a node takes to stop while others are connected to it, and what an idle network costs.

`PYTHONPATH=. .venv/bin/python -m benchmarks.stop_and_idle [ROUNDS]` runs ROUNDS (default 3)
rounds, each on a fresh `services/networks/two-org.toml` network of real processes (a solo
orderer, two peers with gateways), and prints the machine, the load average, the command and,
per round and as median (min-max):

- idle CPU: each node's CPU time (utime + stime from /proc) over IDLE_S seconds with nothing
  submitted, as a percentage of one core. Stop 27 measured 2.80 -> 0.05 % for the orderer once
  its driver paused ticks when quiescent (`core/effects.Quiescent`);
- stop time: SIGTERM to the orderer while both peers' Deliver streams are open, until its
  process has exited (`Supervisor.stop`). Stop 27 measured 5.39 -> 0.33 s once a stopping
  node ended its open subscriptions (`rpc/open_streams.py`).

Not a test: nothing is asserted, the figures go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network

TOPOLOGY = Path(__file__).parents[1] / "services" / "networks" / "two-org.toml"
IDLE_S = 30.0
SETTLE_S = 3.0  # after start: let the peers open Deliver and the first ticks pass
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def one_round(root: Path) -> tuple[dict[str, float], float]:
    """(idle CPU % of a core per node, the orderer's stop time in s) of one fresh network."""
    (root / "topology.toml").write_text(TOPOLOGY.read_text())
    init_network(root / "topology.toml", root / "net")
    sup = Supervisor(root / "net")
    try:
        sup.up(timeout_s=60)
        time.sleep(SETTLE_S)
        pids = {n: pid for n in sup.node_ids() if (pid := sup.node_pid(n)) is not None}
        before = {n: _cpu_s(p) for n, p in pids.items()}
        started = time.monotonic()
        time.sleep(IDLE_S)
        took = time.monotonic() - started
        idle = {n: 100 * (_cpu_s(p) - before[n]) / took for n, p in pids.items()}
        orderer = next(n for n in sup.node_ids() if n.startswith("orderer"))
        started = time.monotonic()
        sup.stop(orderer, grace_s=30)
        return idle, time.monotonic() - started
    finally:
        sup.stop_all()


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(rounds: int) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"command: PYTHONPATH=. python -m benchmarks.stop_and_idle {rounds}")
    idles: dict[str, list[float]] = {}
    stops: list[float] = []
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="dltmw-stop-idle-") as tmp:
            idle, stop_s = one_round(Path(tmp))
        stops.append(stop_s)
        for node, pct in idle.items():
            idles.setdefault(node, []).append(pct)
        shown = ", ".join(f"{n} {p:.2f} %" for n, p in sorted(idle.items()))
        print(f"round {r + 1}: idle CPU {shown}; orderer stop {stop_s:.2f} s")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for node, values in sorted(idles.items()):
        print(f"idle CPU, % of a core, {node}: {_median(values)}")
    print(f"orderer stop with two peers attached, s: {_median(stops)}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
