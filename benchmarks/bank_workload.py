"""Closed-loop workload against a real two-org network: committed tx/s and latency.

`python -m benchmarks.bank_workload [--txs N] [--in-flight C] [--contract kv|bank]` starts the
two-org network (AND(Org1.peer, Org2.peer) for bank, OR for kv) as real processes on this machine,
runs N transactions with C in flight through peer0.org1's gateway (distinct keys, so MVCC
conflicts come only from the workload's own overlap), and prints the machine, the command and the
figures. The client shares the machine's two cores with the nodes, as in the Fabric reference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dltmw.client import GatewayClient
from dltmw.pki.network import init_network
from dltmw.runtime.supervisor import Supervisor

TOPOLOGY = Path(__file__).resolve().parents[1] / "services" / "networks" / "two-org.toml"


async def run(net: Path, txs: int, in_flight: int, contract: str) -> dict[str, float]:
    """Run the workload; returns the figures."""
    client = await GatewayClient.connect(net, "user1.org1")
    latencies: list[float] = []
    codes: dict[int, int] = {}
    sem = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            if contract == "kv":
                done = await client.submit_transaction("trades", "kv", "put", f"key{i}", "v" * 32)
            else:
                done = await client.submit_transaction("trades", "bank", "open", f"acct{i}", "100")
            latencies.append(time.perf_counter() - t0)
            codes[done.status.result] = codes.get(done.status.result, 0) + 1

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(txs)))
        elapsed = time.perf_counter() - t0
    finally:
        await client.close()
    lat = sorted(latencies)
    return {
        "committed_tx_s": sum(codes.values()) / elapsed,
        "valid_tx_s": codes.get(1, 0) / elapsed,
        "abort_rate": 1 - codes.get(1, 0) / max(1, sum(codes.values())),
        "p50_ms": statistics.median(lat) * 1000,
        "p90_ms": lat[int(len(lat) * 0.9)] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "elapsed_s": elapsed,
    }


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--txs", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--contract", choices=["kv", "bank"], default="kv")
    ns = parser.parse_args()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"command: python -m benchmarks.bank_workload {' '.join(sys.argv[1:])}")
    with tempfile.TemporaryDirectory(prefix="dltmw-bench-") as tmp:
        net = Path(tmp) / "net"
        init_network(TOPOLOGY, net)
        sup = Supervisor(net)
        try:
            sup.up()
            figures = asyncio.run(run(net, ns.txs, ns.in_flight, ns.contract))
        finally:
            sup.down()
    for key, value in figures.items():
        print(f"{key:16} {value:10.2f}")


if __name__ == "__main__":
    main()
