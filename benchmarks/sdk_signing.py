"""CPU per transaction of ONE SDK `Client` under concurrent submits (an analysis tool, not a
test): what its creator signing per Transact request saves (benchmarks/RESULTS.md, branch sdkb).

    PYTHONPATH=. .venv/bin/python -m benchmarks.sdk_signing processes
    PYTHONPATH=. .venv/bin/python -m benchmarks.sdk_signing embedded lone|batch

`processes`: `dltmw init` of the integration tier's two-org network (AND policy, solo orderer,
the channel with dltmw's default `creator_batches`), every node its own process (`Supervisor`,
stopped at the end), 16 concurrent tasks x 100 kv puts through one `Client` = 1,600 tx; prints
tx/s, each node's CPU (from /proc, before/after) and this client process's CPU per tx.
`embedded`: `dltmw.open` (gRPC transport) and one bus: `lone`, 16 tasks x 100 `publish`;
`batch`, 4 tasks x 30 `publish_batch` of 100 (12,000 messages); CPU of the whole process per
message. Both print the client's `CreatorSigner` counters where the tree has them (so the same
file measures a tree from before them: run it with that tree on PYTHONPATH).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dltmw.bench import procstats
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.sdk.client import Client
from dltmw.sdk.network import open as open_network
from dltmw.sdk.profile import Profile
from tests.integration.conftest import TWO_ORG

TASKS, EACH = 16, 100


def _own_cpu_s() -> float:
    return procstats.snapshot({"own": procstats.own_pid()}).cpu_s["own"]


def _counters(client: Client) -> dict[str, Any]:
    signing = getattr(client, "signing", None)  # absent before branch sdkb
    if signing is None:
        return {"batches": None, "items": None}
    return {"batches": signing.batches, "items": signing.batched_items}


async def _processes(net: Path, sup: Supervisor) -> dict[str, Any]:
    pids = {n: p for n in sup.node_ids() if (p := sup.node_pid(n)) is not None}
    async with Client(Profile.from_network(net, "user1.org1")) as client:
        await asyncio.gather(
            *(client.submit("trades", "kv", "put", f"w{i}", "v") for i in range(16))
        )
        before = procstats.snapshot(pids)
        c0, w0 = _own_cpu_s(), time.perf_counter()

        async def task(t: int) -> None:
            for i in range(EACH):
                await client.submit("trades", "kv", "put", f"k{t}_{i}", "v")

        await asyncio.gather(*(task(t) for t in range(TASKS)))
        w1, c1 = time.perf_counter(), _own_cpu_s()
        n = TASKS * EACH
        used = procstats.cpu_delta(before, procstats.snapshot(pids))
        nodes = {k: round(1e3 * v / n, 3) for k, v in used.items()}
        return {
            "tx": n,
            "tx_per_s": round(n / (w1 - w0)),
            "node_cpu_ms_per_tx": nodes,
            "nodes_ms_per_tx": round(sum(nodes.values()), 3),
            "client_ms_per_tx": round(1e3 * (c1 - c0) / n, 3),
        } | _counters(client)


async def _embedded(directory: Path, mode: str) -> dict[str, Any]:
    tasks, each, size = (4, 30, 100) if mode == "batch" else (16, 100, 1)
    async with open_network(directory, synchronous="FULL", transport="grpc") as net:
        bus = net.bus("user1.org1")  # one client, shared by every task
        await bus.create_topic("t")
        batch = [(b"y" * 200, {"k": "v"})] * size
        await asyncio.gather(*(bus.publish_batch("t", batch) for _ in range(tasks)))  # warm up
        c0, w0 = _own_cpu_s(), time.perf_counter()

        async def task() -> None:
            for _ in range(each):
                if mode == "batch":
                    await bus.publish_batch("t", batch)
                else:
                    await bus.publish("t", b"y" * 200, {"k": "v"})

        await asyncio.gather(*(task() for _ in range(tasks)))
        w1, c1 = time.perf_counter(), _own_cpu_s()
        n = tasks * each * size
        return {
            "messages": n,
            "msg_per_s": round(n / (w1 - w0)),
            "cpu_us_per_msg": round(1e6 * (c1 - c0) / n, 1),
        } | _counters(bus.client)


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="sdk-signing-") as tmp:
        if argv[:1] == ["embedded"]:
            mode = argv[1] if len(argv) > 1 else "lone"
            print(json.dumps(asyncio.run(_embedded(Path(tmp) / "net", mode))))
            return
        topology = Path(tmp) / "topology.toml"
        topology.write_text(TWO_ORG.replace("BATCH_MS", "100"))
        net = Path(tmp) / "net"
        init_network(topology, net)
        sup = Supervisor(net)
        try:
            sup.up(timeout_s=60)
            print(json.dumps(asyncio.run(_processes(net, sup))))
        finally:
            sup.stop_all()


if __name__ == "__main__":
    main(sys.argv[1:])
