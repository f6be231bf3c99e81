"""Hosts on one machine: a Linux network namespace per host, wired to a bridge that lives in a
namespace of its own, so the test never adds an interface, address or route to the machine's
own network. Addresses come from a private /24 inside the lab (namespaces are isolated, so two
labs may use the same one); everything is removed by `close` (deleting a namespace deletes its
veth ends), after the caller stopped the processes it started in them.

    switch namespace:  br0 ── s0, s1, ...   (one veth end per host, enslaved to the bridge)
    host namespace i:  eth0 = 10.231.7.(10+i)/24, lo

`partition(host)` takes the host's port on the bridge down (its packets go nowhere, as when a
cable is pulled) and `heal(host)` brings it back; `delay(host, port, ms)` adds latency to the
connections to a node of the host (a relay process: the kernels here have no `tc netem`).
Every command is bounded in time; every process started is stopped by `close`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

SUBNET = "10.231.7"
TIMEOUT_S = 10
RELAY = Path(__file__).with_name("delay_relay.py")


class LabError(RuntimeError):
    """A namespace, link or qdisc could not be made (names the command and its error)."""


def _ip(*args: str) -> None:
    done = subprocess.run(
        ["ip", *args], check=False, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def namespaces_possible() -> str:
    """ "" if this process can make network namespaces, else why not."""
    probe = f"dltmw-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (LabError, OSError) as exc:
        return f"cannot make network namespaces here ({exc}); the tier needs root"
    _ip("netns", "del", probe)
    return ""


class NetLab:
    """Namespaces `hosts` on one bridge; `address(host)`, `exec_prefix(host)`."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.tag = f"dltmw{os.getpid()}"
        self.hosts = list(hosts)
        self.switch = f"{self.tag}-sw"
        self.made: list[str] = []
        self.relays: list[subprocess.Popen[str]] = []

    def namespace(self, host: str) -> str:
        """The namespace of `host`."""
        return f"{self.tag}-{host}"

    def address(self, host: str) -> str:
        """The host's IPv4 address in the lab."""
        return f"{SUBNET}.{10 + self.hosts.index(host)}"

    def exec_prefix(self, host: str) -> list[str]:
        """A command prefix that runs (execs) its argument inside the host's namespace."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def open(self) -> NetLab:
        """Make the switch and the hosts; on failure remove what was made and raise."""
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i, host in enumerate(self.hosts):
                ns = self.namespace(host)
                self._add_namespace(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("link", "add", "eth0", "netns", ns, "type", "veth",
                    "peer", "name", f"s{i}", "netns", self.switch)  # fmt: skip
                _ip("-n", self.switch, "link", "set", f"s{i}", "master", "br0", "up")
                _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.made.append(name)

    def partition(self, host: str) -> None:
        """Cut the host off the bridge (its processes keep running)."""
        _ip("-n", self.switch, "link", "set", f"s{self.hosts.index(host)}", "down")

    def heal(self, host: str) -> None:
        """Reconnect the host to the bridge."""
        _ip("-n", self.switch, "link", "set", f"s{self.hosts.index(host)}", "up")

    def delay(self, host: str, port: int, ms: int) -> None:
        """Add `ms` each way to every connection to `host`'s `port`: a relay
        (`delay_relay.py`) on the host's address forwards, `ms` late, to the node listening on
        the namespace's loopback at the same port. (The kernels here have no `sch_netem`.)"""
        cmd = [*self.exec_prefix(host), sys.executable, str(RELAY)]
        cmd += [f"{self.address(host)}:{port}", f"127.0.0.1:{port}", str(ms)]
        relay = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.relays.append(relay)
        ready = relay.stdout.readline() if relay.stdout else ""
        if not ready.startswith("listening"):
            raise LabError(f"the delay relay for {host}:{port} did not start ({ready!r})")

    def relayed(self) -> list[int]:
        """Stop the relays; how many connections each carried (in `delay` order)."""
        counts = []
        for relay in self.relays:
            relay.terminate()
            out, _ = relay.communicate(timeout=TIMEOUT_S)
            counts.append(out.split().count("connection"))
        self.relays.clear()
        return counts

    def close(self) -> None:
        """Stop the relays; delete every namespace this lab made (their veths go with them)."""
        for relay in self.relays:
            relay.kill()
            relay.wait(timeout=TIMEOUT_S)
        self.relays.clear()
        for name in reversed(self.made):
            subprocess.run(
                ["ip", "netns", "del", name], check=False, capture_output=True, timeout=TIMEOUT_S
            )
        self.made.clear()

    def __enter__(self) -> NetLab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
