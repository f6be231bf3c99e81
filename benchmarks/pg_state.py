"""`python -m benchmarks.pg_state`: the same `dltmw bench` workload with the peers' ledgers in
sqlite and in PostgreSQL (not a test).

Starts a PostgreSQL server with its DURABLE defaults (fsync, synchronous_commit on: a committed
block survives a crash, as sqlite's `synchronous=FULL` which the sqlite runs use) through the
tests' launcher (`tests/pg_server.py`: initdb in a temporary directory, 127.0.0.1, stopped by
PID), then runs `dltmw bench` `--runs` times per backend, interleaved (sqlite, postgresql,
sqlite, ...) so that the shared machine's load hits both alike, and prints each run and the
medians of valid tx/s, p50/p99 latency and CPU per valid transaction. Nothing is appended to
RESULTS.md by the runs themselves (`--no-append`); the figures are copied there by hand with the
command and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pg_server  # (the tests launcher, shared rather than copied)

BACKENDS = ("sqlite", "postgresql")


def _server_cpu_s(server: pg_server.PgServer) -> float:
    """CPU seconds used so far by the PostgreSQL server's processes (the postmaster, its live
    backends, and the ended ones it reaped: `dltmw bench` counts only the nodes and client)."""
    root = psutil.Process(server.process.pid)
    own = root.cpu_times()
    total = own.children_user + own.children_system
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _run(args: argparse.Namespace, backend: str, dsn: str, out: Path) -> dict[str, Any]:
    command = [str(Path(sys.executable).with_name("dltmw")), "bench", "--no-probe"]
    command += ["--no-append", "--results-dir", str(out), "--workload", args.workload]
    command += ["--txs", str(args.txs), "--duration", str(args.duration)]
    if backend == "postgresql":
        command += ["--postgresql-dsn", dsn]
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=args.duration + 300
    )
    if done.returncode != 0:
        raise SystemExit(f"{backend} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    (report,) = (out / "results").glob("*/report.json")
    summary: dict[str, Any] = json.loads(report.read_text())
    return summary


def _figures(s: dict[str, Any], server_cpu_s: float) -> dict[str, float]:
    cpu = sum(s["cpu_ms_per_committed_tx"].values()) * s["counts"]["committed"]
    valid = max(1, s["counts"]["valid"])
    return {
        "valid_tx_s": s["rates"]["valid_tx_s"],
        "p50_ms": s["latency_ms"]["p50"],
        "p99_ms": s["latency_ms"]["p99"],
        "cpu_ms_per_valid_tx": cpu / valid,
        # the server's CPU over the whole run (start-up and setup included), per valid tx
        "server_cpu_ms_per_valid_tx": server_cpu_s * 1000 / valid,
        "ledgers_agree": float(s["checks"]["ledgers_agree"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workload", default="kv")
    parser.add_argument("--txs", type=int, default=3000)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    print("load average before:", os.getloadavg())
    figures: dict[str, list[dict[str, float]]] = {b: [] for b in BACKENDS}
    with pg_server.running(settings=()) as server, tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            for backend in BACKENDS:
                before = _server_cpu_s(server)
                summary = _run(args, backend, server.dsn, Path(tmp) / f"{backend}{i}")
                f = _figures(summary, _server_cpu_s(server) - before)
                figures[backend].append(f)
                print(backend, i, {k: round(v, 2) for k, v in f.items()}, flush=True)
    print("load average after:", os.getloadavg())
    for backend, runs in figures.items():
        medians = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
        print("median", backend, medians)


if __name__ == "__main__":
    main()
