"""`dltmw.open` and `dltmw.connect`: a whole network in this process, or one that runs elsewhere.

`open(...)` makes the network's material (like `dltmw init`) in a directory the caller names, or
a temporary one, and starts every node of it on the caller's event loop: real nodes (the same
`runtime.Node` a node process runs, each listening with gRPC and mutual TLS on 127.0.0.1), real
sqlite files.
`transport="inproc"` (the default, measured cheaper and faster: benchmarks/RESULTS.md,
2026-12-02) keeps the calls between the nodes, and from the clients made here to
them, inside the process (`rpc/inproc*.py`: bounded pipes, the same certificate checks,
statuses and deadlines, no HTTP/2 or TLS records); every node still listens on its gRPC port,
so programs outside the process reach it as before. `transport="grpc"` uses gRPC throughout.
`connect(...)` attaches to a network whose nodes run elsewhere (a `dltmw init` directory whose
nodes were started by `dltmw up`, or profiles). Both give the same `Network` handle: typed
clients (`sdk/client.py`) and the message bus (`sdk/bus.py`), so a program written against one
runs unchanged against the other.

In-process nodes log through the standard `logging` of the host program, share its event loop
and stop when the `async with` block ends (each with its own two-stage stop). A directory that
already holds a network is reopened as it is: its ledgers continue where they stopped.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import grpc

from dltmw.pki.network import init_network
from dltmw.rpc.inproc import InprocNetwork
from dltmw.rpc.inproc_call import inproc_or_grpc
from dltmw.rpc.tls import TlsMaterial, secure_channel
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.node import Node
from dltmw.runtime.transport import GRPC, InprocTransport, Transport
from dltmw.sdk.bus import Bus
from dltmw.sdk.client import Client
from dltmw.sdk.profile import Profile
from dltmw.sdk.vault import Vault

__all__ = ["DEFAULT_TOPOLOGY", "Network", "connect", "open"]

TransportName = Literal["inproc", "grpc"]
DEFAULT_TRANSPORT: TransportName = "inproc"  # measured better (benchmarks/RESULTS.md, 2026-12-02)

# Two member organisations, one peer + gateway each, one solo orderer, one channel `main` with
# the built-in contracts, blocks cut at 10 ms: Fabric's test network, sized for a program.
DEFAULT_TOPOLOGY = """\
name = "embedded"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "OrdererOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway"]
[[clients]]
id = "user1.org1"
org = "Org1"
[[clients]]
id = "user1.org2"
org = "Org2"
[[channels]]
id = "main"
members = ["Org1", "Org2"]
orderers = ["orderer0"]
ordering = "none"
endorsement_policy = "AND(Org1.peer, Org2.peer)"
contracts = [{ name = "bank" }, { name = "kv" }, { name = "bus" }]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 10 }
"""
STOP_GRACE_S = 0.5  # the clients made here are closed first: nothing of theirs is in flight


class Network:
    """A running network: in this process (`open`) or elsewhere (`connect`)."""

    def __init__(
        self,
        directory: Path,
        topology: Path | None = None,
        in_process: bool = True,
        synchronous: str = "FULL",
        remove_on_exit: bool = False,
        transport: TransportName = DEFAULT_TRANSPORT,
    ) -> None:
        if transport not in ("inproc", "grpc"):
            raise ValueError(f"transport must be 'inproc' or 'grpc', not {transport!r}")
        self.directory = directory
        self.transport_name = transport
        self._inproc = InprocNetwork() if in_process and transport == "inproc" else None
        self._topology = topology
        self.in_process = in_process
        self._synchronous = synchronous
        self._remove = remove_on_exit
        self.nodes: dict[str, Node] = {}
        self._clients: list[Client] = []
        self._vaults: list[Vault] = []

    async def __aenter__(self) -> Network:
        try:
            if self.in_process:
                await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start(self) -> None:
        if not (self.directory / "nodes").is_dir():
            if self._topology is not None:
                init_network(self._topology, self.directory, synchronous=self._synchronous)
            else:
                with tempfile.TemporaryDirectory(prefix="dltmw-topology-") as tmp:
                    topology = Path(tmp) / "topology.toml"
                    topology.write_text(DEFAULT_TOPOLOGY)
                    init_network(topology, self.directory, synchronous=self._synchronous)
        configs = [NodeConfig.load(p) for p in sorted(self.directory.glob("nodes/*/node.toml"))]
        transport: Transport = GRPC if self._inproc is None else InprocTransport(self._inproc)
        for config in configs:
            self.nodes[config.node_id] = Node(config, transport)
        await asyncio.gather(*(node.start() for node in self.nodes.values()))

    def profile(self, client_id: str) -> Profile:
        """The connection profile of `client_id` (its gateways in order of preference)."""
        return Profile.from_network(self.directory, client_id)

    def client(self, client_id: str, deadline_s: float = 60.0) -> Client:
        """A client of `client_id` (connects on first use; closed with the network)."""
        client = Client(self.profile(client_id), deadline_s=deadline_s, channels=self._channel)
        self._clients.append(client)
        return client

    def _channel(
        self,
        address: str,
        server_name: str,
        tls: TlsMaterial,
        max_message_bytes: int,
        *,
        extra: Sequence[tuple[str, str | int]] = (),
    ) -> grpc.aio.Channel:
        """A client's channel to a gateway: in process when the transport is, else gRPC."""
        if self._inproc is None:
            return secure_channel(address, server_name, tls, max_message_bytes, extra=extra)
        net = self._inproc
        return inproc_or_grpc(net, address, server_name, tls, max_message_bytes, None, extra)

    async def vault(self, client_id: str, node_id: str) -> Vault:
        """The UTXO flows of `client_id` through the vault of node `node_id` (closed with the
        network)."""
        vault = await Vault.connect(self.directory, client_id, node_id)
        self._vaults.append(vault)
        return vault

    def bus(self, client_id: str, channel_id: str = "main") -> Bus:
        """The message bus of `channel_id`, used as `client_id`."""
        return Bus(self.client(client_id), channel_id)

    async def close(self) -> None:
        """Close every client made here, stop in-process nodes, remove a temporary directory."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.close()
        vaults, self._vaults = self._vaults, []
        for vault in vaults:
            await vault.close()
        nodes, self.nodes = self.nodes, {}
        # The gateways' streams to the other nodes first (their clients are closed already):
        # stopping nodes would otherwise break them under each other, each break a warning.
        for node in nodes.values():
            if node.gateway is not None:  # a node of the gateway role
                await node.gateway.close()
        # Peers first: an orderer stopping first would break their Deliver streams (loudly).
        for wave in (
            [n for n in nodes.values() if n.config.roles != {"orderer"}],
            [n for n in nodes.values() if n.config.roles == {"orderer"}],
        ):
            await asyncio.gather(*(node.stop(grace_s=STOP_GRACE_S) for node in wave))
        if self._remove:  # the temporary directory `open` made around it
            shutil.rmtree(self.directory.parent, ignore_errors=True)


def open(
    directory: Path | str | None = None,
    topology: Path | str | None = None,
    synchronous: str = "FULL",
    transport: TransportName = DEFAULT_TRANSPORT,
) -> Network:
    """A network run in this process (module docstring): `async with dltmw.open() as net:`.

    `directory`: where its keys, configs and ledgers live (made on first use; reopened as it is
    afterwards); None: a temporary directory removed at the end. `topology`: a topology TOML
    (`docs/config.md`); None: `DEFAULT_TOPOLOGY`. `synchronous`: sqlite's FULL (an acknowledged
    transaction survives power loss) or NORMAL (survives a process crash)."""
    if directory is None:
        path, remove = Path(tempfile.mkdtemp(prefix="dltmw-")) / "net", True
    else:
        path, remove = Path(directory), False
    return Network(
        path,
        Path(topology) if topology is not None else None,
        in_process=True,
        synchronous=synchronous,
        remove_on_exit=remove,
        transport=transport,
    )


def connect(directory: Path | str) -> Network:
    """A network of a `dltmw init` directory whose nodes run elsewhere (`dltmw up`)."""
    return Network(Path(directory), in_process=False)
