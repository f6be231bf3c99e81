"""Where is node X listening, and what must its TLS certificate say? Two sources.

Across hosts, a node's advertised endpoint is part of the channel config (`NodeConfig.endpoint`,
signed with it, like Fabric's anchor peers and orderer endpoints): a node learns the endpoints
of every channel it joins (`learn_channel`), and a client is given its gateway's
(`client.toml`). A link to such an endpoint verifies that the certificate names the advertised
host and chains to the node's own organisation's CA (`Route`), so an endpoint that presents
another organisation's certificate is refused in the handshake.

On one machine (`make demo`, the tests), nodes listen on port 0 (the kernel picks a free port,
so parallel networks never clash) and publish the address they got by writing `<dir>/<node_id>`
atomically (write + rename) once they serve; the certificate must name the node id. Others
resolve lazily, when they first connect, and wait with a deadline if the node has not started.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from dltmw.aio.files import write_durably
from dltmw.v1 import config_pb2

FENCE_SUFFIX = ".superseded"  # <dir>/<node id>.superseded names the standby that took over


@dataclass(frozen=True)
class Route:
    """How to reach a node with an advertised endpoint: its address, the name its TLS
    certificate must carry, and the CA (PEM) its certificate must chain to."""

    address: str
    tls_name: str
    roots_pem: bytes


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port` (an IPv6 literal in brackets) as (host, port); ValueError says what is wrong."""
    host, sep, port = endpoint.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} must be host:port with a port in 1..65535")
    if any(c.isspace() or c in "/@?#[]" for c in host):
        raise ValueError(f"endpoint {endpoint!r}: {host!r} is not a host name or address")
    return host, int(port)


def routes(config: config_pb2.ChannelConfig) -> dict[str, Route]:
    """The routes to the channel's peers and orderers that advertise an endpoint."""
    roots = {o.org_id: o.root_certificate_pem for o in config.organizations}
    roots |= {o.org_id: o.root_certificate_pem for o in config.orderer_organizations}
    out: dict[str, Route] = {}
    for node in [*config.peers, *config.orderers]:
        if node.endpoint and node.org_id in roots:
            host, _ = split_endpoint(node.endpoint)
            out[node.node_id] = Route(node.endpoint, host, roots[node.org_id])
    return out


class AddressBook:
    """Resolve node addresses: advertised routes first, else the local directory."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._routes: dict[str, Route] = {}

    def learn(self, known: dict[str, Route]) -> None:
        """Add or replace routes (a joined channel's config, a client's gateway)."""
        self._routes.update(known)

    def route(self, node_id: str) -> Route | None:
        """The advertised route to `node_id`, if it has one."""
        return self._routes.get(node_id)

    def tls_name(self, node_id: str) -> str:
        """The name `node_id`'s TLS certificate must carry: its advertised host, else its id."""
        route = self._routes.get(node_id)
        return route.tls_name if route is not None else node_id

    def publish(self, node_id: str, address: str) -> None:
        """Atomically record this node's address."""
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = self._dir / f".{node_id}.{os.getpid()}.tmp"
        tmp.write_text(address)
        tmp.replace(self._dir / node_id)

    def withdraw(self, node_id: str, address: str) -> None:
        """Remove this node's record if it still names `address`."""
        path = self._dir / node_id
        try:
            if path.read_text() == address:
                path.unlink()
        except FileNotFoundError:
            pass

    def supersede(self, node_id: str, by: str) -> None:
        """Record durably that `by` (a promoted standby) now serves `node_id`'s identity: the
        fence a revived `node_id` reads at start (runtime/standby.py)."""
        write_durably(self._dir / f"{node_id}{FENCE_SUFFIX}", by)

    def superseded_by(self, node_id: str) -> str | None:
        """The standby that took over `node_id`, if its promotion fenced `node_id` out."""
        try:
            return (self._dir / f"{node_id}{FENCE_SUFFIX}").read_text().strip() or None
        except FileNotFoundError:
            return None

    def lookup(self, node_id: str) -> str | None:
        """The advertised or recorded address, or None."""
        route = self._routes.get(node_id)
        if route is not None:
            return route.address
        try:
            return (self._dir / node_id).read_text().strip() or None
        except FileNotFoundError:
            return None

    async def resolve(self, node_id: str, timeout_s: float) -> str | None:
        """Wait up to `timeout_s` for `node_id` to publish its address."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            address = self.lookup(node_id)
            if address is not None or loop.time() >= deadline:
                return address
            await asyncio.sleep(0.05)
