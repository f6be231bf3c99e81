"""The plan of a NATS JetStream cluster: its members' ports and directories, fixed once.

`dltmw init` makes the plan of a topology's `[jetstream]` cluster (free ports on 127.0.0.1,
asked of the OS) and writes it as `jetstream/cluster.toml` with one nats-server config file per
member; orderers get the client URLs in their node.toml. `ops/nats_cluster.NatsCluster` runs
the members from the plan. Ports never change after the plan is made, so a member killed and
restarted is the same member: it rejoins the routes and catches up from its own store.
"""

from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

PLAN_FILE = "cluster.toml"


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (bound and released; the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class NatsMember:
    """One member: its name and its client, route and monitoring ports on 127.0.0.1."""

    name: str
    client_port: int
    route_port: int
    monitor_port: int

    @property
    def url(self) -> str:
        """The client URL of this member."""
        return f"nats://127.0.0.1:{self.client_port}"


@dataclass(frozen=True)
class NatsPlan:
    """A cluster's members and the directory their configs and stores live under."""

    directory: Path
    members: tuple[NatsMember, ...]
    name: str = "dltmw"

    @staticmethod
    def fresh(directory: Path, size: int = 3, name: str = "dltmw") -> NatsPlan:
        """A plan of `size` members on free ports."""
        if size < 1:
            raise ValueError("a NATS cluster needs at least one server")
        members = tuple(
            NatsMember(f"n{i}", free_port(), free_port(), free_port()) for i in range(size)
        )
        return NatsPlan(directory, members, name)

    @property
    def urls(self) -> list[str]:
        """Every member's client URL."""
        return [m.url for m in self.members]

    def member_dir(self, member: NatsMember) -> Path:
        """Where a member keeps its config, log, PID file and store."""
        return self.directory / member.name

    def config_text(self, member: NatsMember) -> str:
        """The nats-server config of `member`: JetStream with its own store, routes to all."""
        routes = ", ".join(f"nats-route://127.0.0.1:{m.route_port}" for m in self.members)
        cluster = ""
        if len(self.members) > 1:
            cluster = (
                f'cluster {{\n  name: "{self.name}"\n  listen: "127.0.0.1:{member.route_port}"\n'
                f"  routes: [{routes}]\n}}\n"
            )
        store = self.member_dir(member) / "store"
        return (
            f'server_name: "{member.name}"\nlisten: "127.0.0.1:{member.client_port}"\n'
            f'http: "127.0.0.1:{member.monitor_port}"\n'
            f'jetstream {{\n  store_dir: "{store}"\n'
            "  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n" + cluster
        )

    def write(self) -> None:
        """Write `cluster.toml` and every member's `nats.conf`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = {
            "name": self.name,
            "members": [
                {
                    "name": m.name,
                    "client_port": m.client_port,
                    "route_port": m.route_port,
                    "monitor_port": m.monitor_port,
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
        members = tuple(NatsMember(**m) for m in doc["members"])
        return NatsPlan(directory.resolve(), members, doc["name"])
