"""`--restart-check`: after a run, how long one node takes from restart to serving a query.

The node (the first peer; in the other flows the first vault, else the first notary) is stopped
cleanly, then started; the clock runs from the process start until its health (grpc.health.v1)
is SERVING and its AdminService answers a signed NodeStatus query naming at least the height it
held before the stop (so the node has opened its stores, replayed what it must and listens with
TLS). Reported with the ledger height it held (the sum of its channels' heights; 0 for a node
without channels) — restart time grows with what the node holds, so the figure needs it.
`restart_times` repeats it for any node (the large-ledger check, `bench/bigrun.py`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from dltmw.bench.topology import NetworkShape
from dltmw.client.contracts import NodeAdmin
from dltmw.ops.supervisor import Supervisor

DEADLINE_S = 120.0
POLL_S = 0.02


def restart_node(shape: NetworkShape) -> str:
    """Which node the check restarts."""
    nodes = shape.peer_ids() or shape.vault_ids() or shape.notary_ids()
    if not nodes:
        raise ValueError("the network has no peer, vault or notary to restart")
    return nodes[0]


async def _serving(net: Path, node: str, deadline: float, height: int = 0) -> int:
    """Poll health and NodeStatus until the node is SERVING and answers with at least
    `height` (returns the summed channel heights)."""
    while True:
        try:
            admin = NodeAdmin(net, node)
            if await admin.health() == health_pb2.HealthCheckResponse.SERVING:
                status = await admin.status()
                held = sum(int(c.height) for c in status.channels)
                if held >= height:
                    return held
        except (grpc.aio.AioRpcError, ConnectionError) as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{node} did not serve within {DEADLINE_S} s: {exc}") from exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{node} did not serve its height {height} within {DEADLINE_S} s")
        await asyncio.sleep(POLL_S)


def restart_one(sup: Supervisor, net: Path, node: str) -> dict[str, Any]:
    """Stop `node`, start it, time until it serves; its height before and after."""
    before = asyncio.run(_serving(net, node, time.monotonic() + 10.0))
    t_stop = time.perf_counter()
    sup.stop(node)
    stopped_s = time.perf_counter() - t_stop
    t0 = time.perf_counter()
    sup.start(node)
    height = asyncio.run(_serving(net, node, time.monotonic() + DEADLINE_S, before))
    return {
        "node": node,
        "restart_to_serving_s": time.perf_counter() - t0,
        "stop_s": stopped_s,
        "ledger_height_before": before,
        "ledger_height": height,
        "pid": sup.nodes[node].process.pid,
    }


def restart_to_serving(sup: Supervisor, net: Path, shape: NetworkShape) -> dict[str, Any]:
    """`restart_one` of the network's `restart_node`."""
    return restart_one(sup, net, restart_node(shape))
