"""`dltmw failover NET NODE`: promote the standby of a peer whose process is gone.

Order of steps, each a guard for the next: find the standby (NODE is the active or its standby,
from the network's topology); unless the active's id already resolves to the standby's address
(promoted before), ask the active's published address for a health check — any answer within
HEALTH_TIMEOUT_S means it is alive and nothing is done (`ActiveAlive`); then ask the standby,
signed as its organisation's admin, to promote itself. The standby checks the active again
before it changes anything (runtime/standby.py), so a caller that skips this check, or an active
that comes back in between, is still fenced. The standby then publishes its address under the
active's id: nodes and clients reach it when they reconnect.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dltmw.client.contracts import MAX_MESSAGE_BYTES, NodeAdmin
from dltmw.rpc.tls import link_tls, secure_channel
from dltmw.v1 import standby_pb2

HEALTH_TIMEOUT_S = 2.0
SILENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class ActiveAlive(Exception):
    """The active still answers: promoting its standby would run one identity twice."""


@dataclass(frozen=True)
class Pair:
    """An active peer and its standby."""

    active: str
    standby: str


def pair_of(network_dir: Path, node_id: str) -> Pair:
    """The active/standby pair `node_id` belongs to (KeyError says why there is none)."""
    with (network_dir / "topology.toml").open("rb") as f:
        nodes = {n["id"]: n for n in tomllib.load(f)["nodes"]}
    if node_id not in nodes:
        raise KeyError(f"the network has no node {node_id!r}")
    if active := nodes[node_id].get("standby_of"):
        return Pair(active, node_id)
    standbys = [n["id"] for n in nodes.values() if n.get("standby_of") == node_id]
    if len(standbys) != 1:
        raise KeyError(f"{node_id} has {len(standbys)} standby nodes in the topology, not one")
    return Pair(node_id, standbys[0])


async def answers(admin: NodeAdmin, node_id: str) -> bool:
    """Whether the address published for `node_id` answers a health check in time."""
    address = admin.files.addresses.lookup(node_id)
    if address is None:
        return False
    name, tls = link_tls(admin.files.tls, admin.files.addresses, node_id)
    async with secure_channel(address, name, tls, MAX_MESSAGE_BYTES) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code() not in SILENT_CODES
    return True


async def failover(
    network_dir: Path, node_id: str, client_id: str | None = None
) -> standby_pb2.PromoteResponse:
    """Promote the standby of `node_id`'s pair once its active is not alive."""
    pair = pair_of(network_dir, node_id)
    admin = NodeAdmin(network_dir, pair.standby, client_id)
    book = admin.files.addresses
    standby_at = book.lookup(pair.standby)
    promoted_before = standby_at is not None and book.lookup(pair.active) == standby_at
    if not promoted_before and await answers(admin, pair.active):
        raise ActiveAlive(
            f"{pair.active} still answers at {book.lookup(pair.active)}: stop it (or make sure"
            f" it is gone) before promoting {pair.standby}"
        )
    return await admin.promote(pair.active)
