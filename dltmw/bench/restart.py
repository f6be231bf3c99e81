"""`--restart-check`: after a run, how long one node takes from restart to serving a query.

The node (the first peer; in the other flows the first vault, else the first notary) is stopped
cleanly, then started; the clock runs from the start until its AdminService answers a signed
NodeStatus query (so the node has opened its stores, replayed what it must and listens with
TLS). Reported with the ledger height it held (the sum of its channels' heights; 0 for a node
without channels) — restart time grows with what the node holds, so the figure needs it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc

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


async def _serving(net: Path, node: str, deadline: float) -> int:
    """Poll NodeStatus until it answers (returns the summed channel heights)."""
    while True:
        try:
            status = await NodeAdmin(net, node).status()
            return sum(int(c.height) for c in status.channels)
        except (grpc.aio.AioRpcError, ConnectionError) as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{node} did not serve within {DEADLINE_S} s: {exc}") from exc
        await asyncio.sleep(POLL_S)


def restart_to_serving(sup: Supervisor, net: Path, shape: NetworkShape) -> dict[str, Any]:
    """Stop one node, start it, time until it serves; its height before and after."""
    node = restart_node(shape)
    before = asyncio.run(_serving(net, node, time.monotonic() + 10.0))
    t_stop = time.perf_counter()
    sup.stop(node)
    stopped_s = time.perf_counter() - t_stop
    t0 = time.perf_counter()
    sup.start(node)
    height = asyncio.run(_serving(net, node, time.monotonic() + DEADLINE_S))
    return {
        "node": node,
        "restart_to_serving_s": time.perf_counter() - t0,
        "stop_s": stopped_s,
        "ledger_height_before": before,
        "ledger_height": height,
        "pid": sup.nodes[node].process.pid,
    }
