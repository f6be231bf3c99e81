"""Ports planned now for a server that binds them later, chosen outside the ephemeral range.

A plan written before its servers start (`dltmw init`'s NATS cluster, a test's advertised
endpoints, the tests' PostgreSQL) cannot ask the kernel for port 0 and keep the socket: the
server is another process, started later. Binding port 0 and releasing it hands out a port of
the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`, 32768-60999 by
default), the range the kernel also takes the source port of every outgoing TCP connection
from; on a busy machine another process's connection took such a port between the plan and the
server's start ("bind: address already in use", a fresh-clone `make test` with every JetStream
test erroring in set-up). A port below the range (from PLAN_FLOOR up) is never handed out for an
outgoing connection, so only another server that binds it explicitly can take it.

Which one: chosen at random (parallel planners rarely pick the same one), each checked to bind
now (one held by a running server is skipped), distinct within one plan, with a bounded number
of attempts and a clear error when none is free. Nodes that listen on port 0 themselves and
publish the port they got (`net/addressbook`) need none of this.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
EPHEMERAL_DEFAULT = (32768, 60999)  # Linux's default, when the file cannot be read
PLAN_FLOOR = 20000  # below the ephemeral range, above the well-known and registered servers'
ATTEMPTS = 200  # ports tried per planned port before giving up


class NoFreePort(OSError):
    """No port outside the ephemeral range could be bound within the attempts. An `OSError`
    (a resource the host lacks, like EADDRINUSE): the `dltmw` command shows it as a message
    with exit status 1, not as an internal error (cli/errors.describe)."""


def ephemeral_range(range_file: Path = RANGE_FILE) -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (inclusive), or Linux's default
    when `range_file` is missing or unreadable."""
    try:
        low, high = (int(part) for part in range_file.read_text().split())
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT
    return (low, high) if 0 < low <= high <= 65535 else EPHEMERAL_DEFAULT


def plan_ports(
    count: int,
    host: str = "127.0.0.1",
    *,
    range_file: Path = RANGE_FILE,
    floor: int = PLAN_FLOOR,
    rng: random.Random | None = None,
) -> list[int]:
    """`count` distinct ports of `host` outside the ephemeral range that bind now: from
    `floor` up to just below the range, or above it when the range starts at or below
    `floor`. NoFreePort when the attempts run out."""
    low, high = ephemeral_range(range_file)
    candidates = range(floor, low) if low > floor else range(high + 1, 65536)
    tries = (rng or random.SystemRandom()).sample(
        candidates, min(len(candidates), ATTEMPTS * count)
    )
    chosen: list[int] = []
    for port in tries:
        if len(chosen) == count:
            break
        if _binds(host, port):
            chosen.append(port)
    if len(chosen) < count:
        raise NoFreePort(
            f"no {count} free ports of {host} in {candidates.start}-{candidates.stop - 1} "
            f"(outside the ephemeral range {low}-{high}) after {len(tries)} attempts"
        )
    return chosen


def plan_port(host: str = "127.0.0.1") -> int:
    """One port of `host` outside the ephemeral range that binds now (`plan_ports`)."""
    return plan_ports(1, host)[0]


def _binds(host: str, port: int) -> bool:
    """Whether `host:port` can be bound now (no SO_REUSEADDR: a port still in TIME_WAIT is
    skipped too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
