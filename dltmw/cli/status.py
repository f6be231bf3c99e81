"""`dltmw status NET`: every node of a network — running or not, health, height per channel, the
view of each PBFT-lite orderer, and where its HTTP operations endpoint is (from its READY line;
docs/operations.md).

A node runs when a process holds its data-directory lock (`runtime/process.py`: the lock, not a
PID file, says so). A running node is asked over mutual TLS, as its organisation's admin client
(`clients/admin.<org>`, made by `dltmw init`), for its health (grpc.health.v1, the empty name:
the node as a whole) and its NodeStatus (signed query). One node's trouble is shown in its row
and never stops the others from being reported.

Exit status: 0 when every node runs and is SERVING, 1 otherwise (so scripts can wait on it).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from dltmw.aio.clock import utc_now
from dltmw.client.files import ClientFiles
from dltmw.net.addressbook import AddressBook
from dltmw.net.topology import Topology
from dltmw.ops.supervisor import Supervisor
from dltmw.rpc.tls import link_tls, secure_channel
from dltmw.runtime.config import NodeConfig
from dltmw.v1 import admin_service_pb2, admin_service_pb2_grpc

console = Console()
CALL_TIMEOUT_S = 5.0
MiB = 1024 * 1024


@dataclass
class ChannelRow:
    """One channel as one node holds it."""

    channel: str
    height: int
    roles: list[str]
    orderer_view: int | None  # PBFT-lite orderers only


@dataclass
class NodeRow:
    """One node of the network."""

    node: str
    org: str
    roles: list[str]
    pid: int | None
    address: str | None
    health: str
    channels: list[ChannelRow] = field(default_factory=list)
    problem: str = ""
    operations: str | None = None  # the HTTP operations endpoint (docs/operations.md)
    standby: str = ""  # "standby of X" / "promoted as X" for a standby node, else ""


async def _ask(network: Path, row: NodeRow, pbft: set[str]) -> None:
    """Fill health and channels of a running node (or the problem met)."""
    files = ClientFiles.load(network, f"admin.{row.org.lower()}")
    name, tls = link_tls(files.tls, files.addresses, row.node)
    channel = secure_channel(row.address or "", name, tls, 4 * MiB)
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S
        )
        row.health = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        query = admin_service_pb2.NodeStatusQuery(requester=files.signer.identity_bytes)
        query.timestamp.FromDatetime(utc_now())
        data = query.SerializeToString()
        status = await admin_service_pb2_grpc.AdminServiceStub(channel).NodeStatus(
            admin_service_pb2.NodeStatusRequest(query=data, signature=files.signer.sign(data)),
            timeout=CALL_TIMEOUT_S,
        )
        if status.standby_of:
            verb = "promoted as" if status.promoted else "standby of"
            row.standby = f"{verb} {status.standby_of}"
        for ch in status.channels:
            view = ch.orderer_view if "orderer" in ch.roles and ch.channel_id in pbft else None
            row.channels.append(ChannelRow(ch.channel_id, ch.height, list(ch.roles), view))
    except grpc.aio.AioRpcError as exc:
        row.problem = f"{exc.code().name}: {exc.details()}"
    finally:
        await channel.close(None)


async def collect(network: Path) -> list[NodeRow]:
    """The status of every node of `network`."""
    sup = Supervisor(network)
    book = AddressBook(network / "run" / "endpoints")
    topology = Topology.load(network / "topology.toml")
    pbft = {c["id"] for c in topology.raw.get("channels", []) if c.get("ordering") == "pbft"}
    rows = []
    for node_id in sup.node_ids():
        config = NodeConfig.load(sup.config_path(node_id))
        pid = sup.node_pid(node_id)
        address = book.lookup(node_id) if pid else None
        row = NodeRow(node_id, config.org_id, sorted(config.roles), pid, address, "-")
        row.operations = sup.operations_address(node_id) if pid else None
        rows.append(row)
    await asyncio.gather(*(_ask(network, r, pbft) for r in rows if r.address))
    for r in rows:
        if r.pid and not r.address:
            r.problem = "running but not serving yet"
    return rows


def _channel_text(c: ChannelRow) -> str:
    view = f" view {c.orderer_view}" if c.orderer_view is not None else ""
    return f"{c.channel} {c.height}{view}"


def _print(rows: list[NodeRow]) -> None:
    table = Table(title="nodes")
    columns = ("node", "org", "roles", "process", "address", "operations", "health")
    for column in (*columns, "channels (height)"):
        table.add_column(column)
    for r in rows:
        channels = ", ".join(_channel_text(c) for c in r.channels)
        table.add_row(
            r.node,
            r.org,
            ",".join(r.roles) + (f" ({r.standby})" if r.standby else ""),
            f"pid {r.pid}" if r.pid else "[yellow]stopped[/]",
            r.address or "-",
            r.operations or "-",
            r.health if r.health == "SERVING" else f"[red]{r.health}[/]",
            channels or r.problem,
        )
    console.print(table)


def status(network: Path, as_json: bool) -> None:
    """Report every node; exit 1 unless all run and are SERVING."""
    rows = asyncio.run(collect(network))
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        _print(rows)
    if not all(r.pid and r.health == "SERVING" for r in rows):
        raise typer.Exit(1)
