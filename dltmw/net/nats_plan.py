"""The plan of a NATS JetStream cluster: its members' ports and directories, fixed once.

`dltmw init` makes the plan of a topology's `[jetstream]` cluster and writes it as
`jetstream/cluster.toml` with one nats-server config file per member; orderers get the client
URLs in their node.toml. `ops/nats_cluster.NatsCluster` runs the members from the plan. Ports
never change after the plan is made, so a member killed and restarted is the same member: it
rejoins the routes and catches up from its own store.

Where the members run: on one machine (the default) every member listens on 127.0.0.1 on free
ports planned below the kernel's ephemeral range (`net/ports`: a port the OS hands out for
port 0 may be taken by an outgoing connection before the member starts); across hosts the
topology names each member's address (`hosts`), and each member listens on its own host at
fixed ports (4222 clients, 6222 routes, 8222 monitoring, NATS's own defaults), since the OS of
another host cannot be asked.

TLS (the default for a topology's cluster, `[jetstream] tls`): every member presents a
certificate of the cluster's organisation (`<member>/tls.pem`, naming its host), routes are
mutual TLS between members, and a client must present a TLS certificate chaining to `ca.pem`
(the CAs of the organisations whose orderers use the cluster) whose subject is one of `users`
(nats-server's `verify_and_map`): the stream's envelopes can be appended only by the channel's
orderers, never by another member's peer or client holding a certificate of the network.
The monitoring port stays plain HTTP on the member's address (health and counters only).

Why the pings are short: a member cut off by a network partition says nothing; TCP only
notices when a write times out (minutes). Every member pings its routes and clients every
PING_INTERVAL_S and drops a link after PING_MAX unanswered pings, and the orderers' client
does the same (`[jetstream] ping_interval_ms`), so a partitioned member is left within a few
seconds and the others go on (a majority keeps the stream's quorum).
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from dltmw.net.ports import plan_ports

PLAN_FILE = "cluster.toml"
LOOPBACK = "127.0.0.1"
CLIENT_PORT, ROUTE_PORT, MONITOR_PORT = 4222, 6222, 8222  # NATS's defaults, across hosts
PING_INTERVAL_S = 2
PING_MAX = 2


@dataclass(frozen=True)
class NatsMember:
    """One member: its name, the address it listens on, its client, route and monitoring
    ports."""

    name: str
    client_port: int
    route_port: int
    monitor_port: int
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        """The client URL of this member."""
        return f"nats://{self.host}:{self.client_port}"

    @property
    def health_url(self) -> str:
        """The monitoring endpoint saying whether its JetStream is up."""
        return f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true"


@dataclass(frozen=True)
class NatsPlan:
    """A cluster's members and the directory their configs and stores live under."""

    directory: Path
    members: tuple[NatsMember, ...]
    name: str = "dltmw"
    tls: bool = False
    users: tuple[str, ...] = ()  # with tls: the subjects of the client certificates let in

    @staticmethod
    def fresh(
        directory: Path, size: int = 3, name: str = "dltmw", hosts: Sequence[str] = ()
    ) -> NatsPlan:
        """A plan of `size` members: on free ports of 127.0.0.1 outside the ephemeral range,
        or, given `hosts` (one address per member), each on its own host at NATS's default
        ports."""
        if size < 1:
            raise ValueError("a NATS cluster needs at least one server")
        if hosts and len(hosts) != size:
            raise ValueError(f"a NATS cluster of {size} servers needs {size} hosts")
        if hosts:
            members = tuple(
                NatsMember(f"n{i}", CLIENT_PORT, ROUTE_PORT, MONITOR_PORT, host)
                for i, host in enumerate(hosts)
            )
        else:
            ports = iter(plan_ports(3 * size, LOOPBACK))  # distinct within the plan
            members = tuple(
                NatsMember(f"n{i}", next(ports), next(ports), next(ports)) for i in range(size)
            )
        return NatsPlan(directory, members, name)

    @property
    def ca_file(self) -> Path:
        """With tls: the CAs a client's and a member's certificate must chain to."""
        return self.directory / "ca.pem"

    def tls_files(self, member: NatsMember) -> tuple[Path, Path]:
        """With tls: the member's certificate and key."""
        return self.member_dir(member) / "tls.pem", self.member_dir(member) / "tls.key"

    @property
    def urls(self) -> list[str]:
        """Every member's client URL."""
        if self.tls:
            return [m.url.replace("nats://", "tls://", 1) for m in self.members]
        return [m.url for m in self.members]

    def member_dir(self, member: NatsMember) -> Path:
        """Where a member keeps its config, log, PID file and store."""
        return self.directory / member.name

    def config_text(self, member: NatsMember) -> str:
        """The nats-server config of `member`: JetStream with its own store, routes to all."""
        routes = ", ".join(f"nats-route://{m.host}:{m.route_port}" for m in self.members)
        cert, key = self.tls_files(member)
        files = f'cert_file: "{cert}"\n    key_file: "{key}"\n    ca_file: "{self.ca_file}"\n'
        cluster = ""
        if len(self.members) > 1:
            route_tls = f"  tls {{\n    {files}    verify: true\n  }}\n" if self.tls else ""
            cluster = (
                f'cluster {{\n  name: "{self.name}"\n'
                f'  listen: "{member.host}:{member.route_port}"\n'
                f"  routes: [{routes}]\n{route_tls}}}\n"
            )
        client_tls = ""
        if self.tls:
            users = ", ".join(f'{{user: "{u}"}}' for u in self.users)
            client_tls = (
                f"tls {{\n    {files}    verify_and_map: true\n}}\n"
                f"authorization {{\n  users = [{users}]\n}}\n"
            )
        store = self.member_dir(member) / "store"
        return (
            f'server_name: "{member.name}"\nlisten: "{member.host}:{member.client_port}"\n'
            f'http: "{member.host}:{member.monitor_port}"\n'
            f'ping_interval: "{PING_INTERVAL_S}s"\nping_max: {PING_MAX}\n'
            f'jetstream {{\n  store_dir: "{store}"\n'
            "  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n" + client_tls + cluster
        )

    def write(self) -> None:
        """Write `cluster.toml` and every member's `nats.conf`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        doc: dict[str, object] = {
            "name": self.name,
            "tls": self.tls,
            "users": list(self.users),
            "members": [
                {
                    "name": m.name,
                    "client_port": m.client_port,
                    "route_port": m.route_port,
                    "monitor_port": m.monitor_port,
                    "host": m.host,
                }
                for m in self.members
            ],
        }
        (self.directory / PLAN_FILE).write_text(tomli_w.dumps(doc))
        for member in self.members:
            self.member_dir(member).mkdir(parents=True, exist_ok=True)
            (self.member_dir(member) / "nats.conf").write_text(self.config_text(member))

    @staticmethod
    def load(directory: Path) -> NatsPlan:
        """The plan written under `directory`."""
        with (directory / PLAN_FILE).open("rb") as f:
            doc = tomllib.load(f)
        members = tuple(NatsMember(**m) for m in doc["members"])  # no host: 127.0.0.1
        tls, users = bool(doc.get("tls", False)), tuple(doc.get("users", ()))  # older plans: none
        return NatsPlan(directory.resolve(), members, doc["name"], tls, users)
