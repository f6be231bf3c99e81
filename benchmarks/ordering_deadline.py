"""Does the gateway's ordering deadline re-send envelopes on a healthy, saturated channel?

bft-four (services/networks/bft-four.toml: four PBFT-lite replicas, two peers with gateways),
every orderer correct. A closed loop keeps `--in-flight` kv transactions in flight through both
gateways (half each) until `--txs` were submitted. Reported: valid tx/s, the envelopes the
gateways sent to further orderers (`dltmw_gateway_ordering_widened_total`), the replicas' view
changes (`dltmw_pbft_view_changes_total`), CPU ms per valid transaction of all node processes,
and the load average. The ordering deadline is node.toml's `[limits] ordering_deadline_s`
(`--deadline-s`, default: the node default).

    .venv/bin/python -m benchmarks.ordering_deadline --txs 3000 --in-flight 256
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import psutil

from dltmw.client import GatewayClient
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.v1 import transaction_pb2

TOPOLOGY = Path(__file__).parents[1] / "services/networks/bft-four.toml"
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
GATEWAYS = {"user1.org1": "peer0.org1", "user1.org2": "peer0.org2"}


def _cpu_s(pids: dict[str, int]) -> float:
    total = 0.0
    for pid in pids.values():
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def _metric(sup: Supervisor, node: str, name: str) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    address = sup.operations_address(node)
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


async def _load(net: Path, txs: int, in_flight: int) -> tuple[int, float]:
    clients = [await GatewayClient.connect(net, c) for c in GATEWAYS]
    next_tx, valid = 0, 0

    async def worker(client: GatewayClient) -> None:
        nonlocal next_tx, valid
        while next_tx < txs:
            k = next_tx
            next_tx += 1
            done = await client.submit_transaction("trades", "kv", "put", f"k{k}", "v")
            valid += done.status.result == VALID

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker(clients[i % 2]) for i in range(in_flight)))
    finally:
        for client in clients:
            await client.close()
    return valid, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--txs", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--deadline-s", type=float, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        topo, net = Path(tmp) / "topology.toml", Path(tmp) / "net"
        topo.write_text(TOPOLOGY.read_text().replace("BATCH_MS", "100"))
        init_network(topo, net)
        if args.deadline_s is not None:
            for node_toml in (net / "nodes").glob("*/node.toml"):
                extra = f"\n[limits]\nordering_deadline_s = {args.deadline_s}\n"
                node_toml.write_text(node_toml.read_text() + extra)
        sup = Supervisor(net)
        try:
            sup.up(timeout_s=60)
            pids = {n: p for n in sup.node_ids() if (p := sup.node_pid(n)) is not None}
            load_before = os.getloadavg()[0]
            cpu_before = _cpu_s(pids)
            valid, seconds = asyncio.run(_load(net, args.txs, args.in_flight))
            cpu_s = _cpu_s(pids) - cpu_before
            widened = sum(
                _metric(sup, p, "dltmw_gateway_ordering_widened_total") for p in GATEWAYS.values()
            )
            orderers = [n for n in sup.node_ids() if n.startswith("orderer.")]
            views = sum(_metric(sup, o, "dltmw_pbft_view_changes_total") for o in orderers)
        finally:
            sup.stop_all()
    print(
        json.dumps(
            {
                "txs": args.txs,
                "in_flight": args.in_flight,
                "valid": valid,
                "valid_tx_s": round(valid / seconds, 1),
                "widened": widened,
                "view_changes": views,
                "cpu_ms_per_tx": round(1000 * cpu_s / max(1, valid), 2),
                "load": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            }
        )
    )


if __name__ == "__main__":
    main()
