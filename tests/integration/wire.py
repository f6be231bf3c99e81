"""Helpers for integration tests that talk to nodes below the SDK: raw calls by method path,
client TLS channels to any node, ErrorInfo of a failed call, the services a node lists through
reflection, node RSS, and networks whose node.toml files are edited before they start."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import psutil
import tomli_w
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from dltmw.net.addressbook import AddressBook
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.rpc.status import DOMAIN
from dltmw.rpc.tls import TlsMaterial, secure_channel

MiB = 1024 * 1024


def client_tls(net: Path, client_id: str) -> TlsMaterial:
    """TLS material of a client made by `dltmw init`."""
    home = net / "clients" / client_id
    return TlsMaterial.load(home / "tls.pem", home / "tls.key", net / "tls-roots.pem")


def node_address(net: Path, node_id: str) -> str:
    """The published address of a running node."""
    address = AddressBook(net / "run" / "endpoints").lookup(node_id)
    assert address is not None, f"{node_id} has no address"
    return address


def channel_to(
    net: Path,
    node_id: str,
    tls: TlsMaterial,
    own_connection: bool = False,
    keepalive_ms: int | None = None,
) -> grpc.aio.Channel:
    """An mTLS channel to a node (the SDK's, unless asked otherwise): `own_connection` keeps grpc
    from sharing its TCP connection with other channels to the same node (one connection per
    channel, like distinct clients); `keepalive_ms` pings the node that often, idle or not."""
    if not own_connection and keepalive_ms is None:
        return secure_channel(node_address(net, node_id), node_id, tls, 8 * MiB)
    options: list[tuple[str, Any]] = [
        ("grpc.ssl_target_name_override", node_id),
        ("grpc.max_send_message_length", 8 * MiB),
        ("grpc.max_receive_message_length", 8 * MiB),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if keepalive_ms is not None:
        options += [
            ("grpc.keepalive_time_ms", keepalive_ms),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    return grpc.aio.secure_channel(
        node_address(net, node_id), tls.channel_credentials(), options=options
    )


def error_info(error: grpc.aio.AioRpcError) -> tuple[str | None, dict[str, str]]:
    """(ErrorInfo reason, metadata) of a failed call; (None, {}) without dltmw details."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == DOMAIN:
            return info.reason, dict(info.metadata)
    return None, {}


async def listed_services(channel: grpc.aio.Channel) -> set[str]:
    """Service names a node lists through reflection."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in stub.ServerReflectionInfo(iter([request])):
        return {s.name for s in response.list_services_response.service}
    raise AssertionError("reflection answered nothing")


def rss_mb(sup: Supervisor, node_id: str) -> float:
    """Resident set size of a node process, MB."""
    pid = sup.nodes[node_id].process.pid
    return psutil.Process(pid).memory_info().rss / MiB


def cpu_s(sup: Supervisor, node_id: str) -> float:
    """User + system CPU seconds a node process has used."""
    times = psutil.Process(sup.nodes[node_id].process.pid).cpu_times()
    return times.user + times.system


# What each node of the integration TWO_ORG network serves (and so lists through reflection).
STANDARD_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
)
TWO_ORG_SERVICES = {
    "orderer0": {  # ReplicaService: an orderer may join a PBFT-lite channel at any time
        "dltmw.v1.AdminService",
        "dltmw.v1.OrdererService",
        "dltmw.v1.ReplicaService",
        *STANDARD_SERVICES,
    },
    "peer0.org1": {
        "dltmw.v1.AdminService",
        "dltmw.v1.CrossChainService",
        "dltmw.v1.EndorserService",
        "dltmw.v1.GatewayService",
        "dltmw.v1.PrivacyManagerService",
        *STANDARD_SERVICES,
    },
}


def logged_errors(log: str) -> list[str]:
    """Lines of a node's JSON log (runtime/logs.py) at level ERROR or CRITICAL, and any line that
    is not a JSON object at all (nothing else writes to the node's log)."""
    bad = []
    for line in log.splitlines():
        try:
            level = json.loads(line).get("level")
        except (ValueError, AttributeError):
            level = None
        if level not in ("DEBUG", "INFO", "WARNING"):
            bad.append(line)
    return bad


def node_log(net: Path, node_id: str) -> str:
    """A node's stderr log so far."""
    return (net / "run" / "logs" / f"{node_id}.log").read_text(errors="replace")


def edit_node_toml(net: Path, node_id: str, tables: Mapping[str, Mapping[str, Any]]) -> None:
    """Merge `tables` (e.g. {"limits": {"items_per_request_max": 10}}) into a node.toml."""
    path = net / "nodes" / node_id / "node.toml"
    config = tomllib.loads(path.read_text())
    for table, values in tables.items():
        config.setdefault(table, {}).update(values)
    path.write_text(tomli_w.dumps(config))


@contextmanager
def started_network(
    tmp_path: Path, topology: str, configure: Callable[[Path], None] = lambda _: None
) -> Iterator[tuple[Path, Supervisor]]:
    """Init a network, let `configure` edit it, start every node; stop them all (cleanly) after."""
    topo = tmp_path / "topology.toml"
    topo.write_text(topology)
    net = tmp_path / "net"
    init_network(topo, net)
    configure(net)
    sup = Supervisor(net)
    try:
        sup.up(timeout_s=90)
        yield net, sup
    finally:
        codes = sup.stop_all()
    assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"
