"""A simulated deployment: every node of a topology on simulated hosts, the wire, SDK clients.

The scenarios (`sim/scenarios/`) drive one `Deployment` inside a `vloop.VirtualLoop`: they start
the nodes, make clients with the real SDK (`client/`) on simulated channels, schedule faults on
the wire and the hosts, and read the nodes' files for their checkers when the run is over. The
trace (`log`) holds what a reader needs to follow a run: the workload, every fault, every crash
and restart, with the virtual time.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dltmw.client.files import ClientFiles
from dltmw.client.gateway import GatewayClient
from dltmw.runtime.config import NodeConfig
from dltmw.sim.grpc_client import SimChannel
from dltmw.sim.hosts import PORT_BASE, Host
from dltmw.sim.material import fresh_copy
from dltmw.sim.vloop import Owner, VirtualLoop
from dltmw.sim.wire import Endpoint, SimNetwork

MESSAGE_BYTES_MAX = 4 * 1024 * 1024


class Deployment:
    """The nodes, wire and clients of one simulated run."""

    def __init__(self, topology: str, trace: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualLoop):
            raise TypeError("a Deployment runs on a sim.vloop.VirtualLoop")
        self.loop = loop
        self.rng = loop.rng
        self.root = fresh_copy(topology)
        self.net = SimNetwork(loop.rng)
        self._ports = [0]
        self.hosts = {
            d.name: Host(self.net, d, self._ports)
            for d in sorted((self.root / "nodes").iterdir())
            if (d / "node.toml").exists()
        }
        self.trace: list[str] | None = [] if trace else None
        self._clients: list[GatewayClient] = []
        self._background: list[asyncio.Task[Any]] = []

    # --- trace and time ------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds since the start."""
        return self.loop.time()

    def log(self, line: str) -> None:
        """Append a trace line (only when tracing)."""
        if self.trace is not None:
            self.trace.append(f"{self.now:8.3f} {line}")

    def at(self, when_s: float, action: Callable[[], Awaitable[None] | None]) -> None:
        """Run `action` at virtual time `when_s` (a coroutine function runs as a task)."""

        async def later() -> None:
            await asyncio.sleep(max(0.0, when_s - self.now))
            result = action()
            if result is not None:
                await result

        self._background.append(self.loop.create_task(later()))

    # --- nodes ---------------------------------------------------------------------------

    def add_to_node_toml(self, node_id: str, text: str) -> None:
        """Append `text` (e.g. a `[limits]` table) to a node's node.toml before it starts."""
        host = self.hosts[node_id]
        path = self.root / "nodes" / node_id / "node.toml"
        path.write_text(path.read_text() + "\n" + text)
        host.config = NodeConfig.load(path)

    async def start(self) -> None:
        """Start every node (in name order: deterministic)."""
        for host in self.hosts.values():
            await host.start()
        self.log(f"started {', '.join(self.hosts)}")

    def kill(self, node_id: str, why: str = "") -> None:
        """kill -9 a node now."""
        host = self.hosts[node_id]
        if host.up:
            host.kill()
            self.log(f"{node_id} killed{f' ({why})' if why else ''}")

    def kill_at(
        self, node_id: str, store: str, after: bool, then: Callable[[], None] | None = None
    ) -> None:
        """Kill a node at its store's next job: before it runs (lost), or after it is durable
        (nobody told); then call `then()`. Counted as `killed-before-<store>` /
        `killed-after-<store>` and `killed:<node_id>`."""
        host = self.hosts[node_id]
        when = "after" if after else "before"
        if not host.up:
            return

        def killed() -> None:
            self.net.count(f"killed-{when}-{store}")
            self.net.count(f"killed:{node_id}")
            self.log(f"{node_id} killed {when} a {store} job")
            if then is not None:
                then()

        host.kill_at(store, after, killed)
        self.log(f"{node_id} to be killed {when} its next {store} job")

    async def restart(self, node_id: str) -> None:
        """Start a node again (a no-op when it is up)."""
        host = self.hosts[node_id]
        if not host.up:
            await host.start()
            self.log(f"{node_id} restarted (incarnation {host.incarnation})")

    async def heal(self) -> None:
        """The end of the faults: the wire heals, armed kills are disarmed, every node that is
        down starts again."""
        self.net.heal_all()
        for host in self.hosts.values():
            if host.owner is not None:
                host.owner.kill_at = None
        self.log("heal: network faults removed, every node restarted")
        for node_id in self.hosts:
            await self.restart(node_id)

    async def settle(self, done: Callable[[], bool], until_s: float) -> bool:
        """Wait until `done()` (checked every 0.1 virtual seconds) or virtual time `until_s`."""
        while self.now < until_s:
            await asyncio.sleep(0.1)
            if done():
                return True
        return False

    def fatal(self) -> list[str]:
        """Nodes that failed for good (each a violation)."""
        return [f for host in self.hosts.values() for f in host.fatal]

    # --- clients -------------------------------------------------------------------------

    def channel(self, client_id: str, target: str) -> tuple[ClientFiles, SimChannel]:
        """A client's files and a simulated channel from it to node `target`."""
        files = ClientFiles.load(self.root, client_id)
        self._ports[0] += 1
        connection = f"ipv4:127.0.0.1:{PORT_BASE + self._ports[0]}"
        endpoint = Endpoint(client_id, Owner(client_id), files.tls.cert_pem, connection)
        return files, SimChannel(self.net, endpoint, target, MESSAGE_BYTES_MAX)

    def gateway_client(self, client_id: str, gateway: str | None = None) -> GatewayClient:
        """The SDK's GatewayClient of `client_id`, connected to its (or the named) gateway."""
        files = ClientFiles.load(self.root, client_id)
        target = gateway or files.gateway
        if target is None:
            raise ValueError(f"{client_id} has no gateway")
        files, channel = self.channel(client_id, target)
        client = GatewayClient(files.signer, channel)  # type: ignore[arg-type]
        self._clients.append(client)
        return client

    # --- end of the run ------------------------------------------------------------------

    async def stop(self) -> None:
        """Freeze every node (as if all were killed at once) and end background tasks; the
        files stay for the checkers."""
        for task in self._background:
            task.cancel()
        for host in self.hosts.values():
            host.kill()
        for client in self._clients:
            if client.pipeline is not None:
                await client.pipeline.close()
        await asyncio.gather(*self._background, return_exceptions=True)

    def remove(self) -> None:
        """Delete the run's files."""
        shutil.rmtree(self.root.parent, ignore_errors=True)

    def data(self, node_id: str) -> Path:
        """A node's data directory."""
        return self.hosts[node_id].config.data_dir
