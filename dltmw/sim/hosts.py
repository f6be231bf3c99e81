"""Simulated hosts: the production `Node`, started, killed and restarted inside one process.

A `Host` runs one node of a generated network directory (`sim/material.py`) the way a machine
would run `dltmw-node`: `Node(config, transport)` with the node.toml written by `dltmw init` and
the simulated transport (`SimTransport`: `sim/grpc_client.py` channels, a `sim/grpc_server.py`
server). Only the transport is swapped here; the clock, the threads and the randomness are the
loop's (`sim/vloop.py`), the files are real sqlite files in a scratch directory.

Each start is a new incarnation (`vloop.Owner`), current while the node is built and started,
so every task and store it makes is its own. `kill()` is kill -9: the incarnation dies at once
(its calls break, its stores refuse any further work), its tasks are cancelled, and the `Node`
object is dropped; only what its stores committed survives for the next `start()`. `kill_at`
arms a kill at a store's next job — before it runs (the write is lost) or after it ran (it is
durable, but nobody heard of it): the crash points "mid-block" and "between commit and reply".

A node that fails for good (`Node.failed`: a task its TaskOwner could not keep alive) is a
finding: it is recorded in `fatal` and the host is left down.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from pathlib import Path

import grpc

from dltmw.rpc.channel_options import Keepalive
from dltmw.rpc.tls import TlsMaterial
from dltmw.runtime.config import Limits, NodeConfig
from dltmw.runtime.node import Node
from dltmw.sim.grpc_client import SimChannel
from dltmw.sim.grpc_server import SimServer
from dltmw.sim.vloop import OWNER, Owner
from dltmw.sim.wire import Endpoint, SimNetwork

logger = logging.getLogger(__name__)
PORT_BASE = 40000


class SimTransport:
    """`runtime/transport.Transport` over the simulated network, for one incarnation."""

    def __init__(self, net: SimNetwork, name: str, owner: Owner, ports: list[int]) -> None:
        self._net = net
        self._name = name
        self._owner = owner
        self._ports = ports  # shared counter of connection numbers (peer() strings)

    def channel(
        self,
        address: str,
        server_name: str,
        tls: TlsMaterial,
        max_message_bytes: int,
        keepalive: Keepalive,
    ) -> grpc.aio.Channel:
        """A channel from this incarnation to `server_name` (routed by name, not address)."""
        self._ports[0] += 1
        endpoint = Endpoint(
            self._name, self._owner, tls.cert_pem, f"ipv4:127.0.0.1:{PORT_BASE + self._ports[0]}"
        )
        return SimChannel(self._net, endpoint, server_name, max_message_bytes)  # type: ignore[return-value]

    def server(self, node_id: str, limits: Limits, keepalive: Keepalive) -> grpc.aio.Server:
        """This incarnation's server."""
        return SimServer(self._net, self._owner, node_id, limits.max_message_bytes)  # type: ignore[return-value]

    def listen(
        self,
        server: grpc.aio.Server,
        address: str,
        tls: TlsMaterial,
        roots: Callable[[], bytes] | None = None,
    ) -> int:
        """A port label (routing is by node id; no TLS)."""
        return server.add_secure_port(address, None)  # type: ignore[arg-type]


class Host:
    """One simulated machine running one node (see the module docstring)."""

    def __init__(self, net: SimNetwork, node_dir: Path, ports: list[int]) -> None:
        self._net = net
        self.config = NodeConfig.load(node_dir / "node.toml")
        self.node_id = self.config.node_id
        self._ports = ports
        self.node: Node | None = None
        self.owner: Owner | None = None
        self.incarnation = 0
        self.fatal: list[str] = []
        self._watch: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """Is an incarnation running?"""
        return self.owner is not None and self.owner.alive and self.node is not None

    async def start(self) -> None:
        """Start a new incarnation from what the node's files hold."""
        if self.owner is not None and self.owner.alive:
            return
        self.incarnation += 1
        owner = Owner(f"{self.node_id}#{self.incarnation}")
        context = contextvars.copy_context()
        context.run(OWNER.set, owner)
        transport = SimTransport(self._net, self.node_id, owner, self._ports)
        node = context.run(Node, self.config, transport)
        self.owner, self.node = owner, node
        starting = asyncio.get_running_loop().create_task(node.start(), context=context)
        try:
            await starting
        except asyncio.CancelledError:
            if owner.alive:  # we were cancelled, not the incarnation killed
                raise
            return
        self._watch = asyncio.get_running_loop().create_task(self._watch_fatal(owner, node))

    async def _watch_fatal(self, owner: Owner, node: Node) -> None:
        await node.failed.wait()
        if owner.alive:
            self.fatal.append(f"{owner.name}: a long-lived task failed for good")
            self.kill()

    def kill(self) -> None:
        """kill -9 (see the module docstring); a no-op when down."""
        owner, node, self.node = self.owner, self.node, None
        if owner is None or not owner.alive:
            return
        owner.alive = False
        if node is not None:
            node.killed()
        self._net.kill(owner)
        for task in owner.tasks():
            task.cancel()
        if self._watch is not None:
            self._watch.cancel()

    def kill_at(self, store: str, after: bool, on_kill: Callable[[], None] | None = None) -> None:
        """Kill at the next job of the store named `store`, before or after it runs; then
        call `on_kill()`."""

        def kill() -> None:
            self.kill()
            if on_kill is not None:
                on_kill()

        if self.owner is not None and self.owner.alive:
            self.owner.kill_at = (store, after, kill)

    async def restart(self) -> None:
        """Start again after a kill."""
        self.kill()
        await self.start()

    def data(self, name: str) -> Path:
        """A file in the node's data directory."""
        return self.config.data_dir / name
