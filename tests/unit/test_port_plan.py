"""Ports planned for a server started later lie outside the kernel's ephemeral range and bind
now (`dltmw/net/ports.py`): a port of the range can be taken by any outgoing connection between
the plan and the server's start (nats-server's route port, seen in a fresh-clone `make test`)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from dltmw.cli.errors import EXIT_FAILED, describe
from dltmw.net import ports
from dltmw.net.nats_plan import NatsPlan


def _range_file(tmp_path: Path, low: int, high: int) -> Path:
    path = tmp_path / "ip_local_port_range"
    path.write_text(f"{low}\t{high}\n")  # the kernel's format
    return path


def test_planned_ports_lie_below_the_range_read_from_the_file(tmp_path: Path) -> None:
    range_file = _range_file(tmp_path, 24000, 60999)
    planned = ports.plan_ports(50, range_file=range_file, rng=random.Random(1))
    assert len(set(planned)) == 50
    assert all(ports.PLAN_FLOOR <= p < 24000 for p in planned)  # red: planned from the range


def test_a_range_starting_at_the_floor_plans_above_it(tmp_path: Path) -> None:
    planned = ports.plan_ports(20, range_file=_range_file(tmp_path, 1024, 50000))
    assert all(50000 < p <= 65535 for p in planned)


def test_an_unreadable_range_falls_back_to_linux_default(tmp_path: Path) -> None:
    assert ports.ephemeral_range(tmp_path / "missing") == ports.EPHEMERAL_DEFAULT
    garbled = tmp_path / "garbled"
    garbled.write_text("32768\n")
    assert ports.ephemeral_range(garbled) == ports.EPHEMERAL_DEFAULT
    assert ports.ephemeral_range(_range_file(tmp_path, 40000, 50000)) == (40000, 50000)


def _held_port_with_a_free_neighbour() -> tuple[socket.socket, int]:
    """A socket bound to a port of 127.0.0.1 whose next port binds now."""
    for port in random.Random(7).sample(range(ports.PLAN_FLOOR, 32000), 100):
        held = socket.socket()
        try:
            held.bind(("127.0.0.1", port))
        except OSError:
            held.close()
            continue
        if ports._binds("127.0.0.1", port + 1):
            return held, port
        held.close()
    raise AssertionError("no free pair of ports below 32000")


def test_a_port_held_by_a_bound_socket_is_skipped(tmp_path: Path) -> None:
    held, port = _held_port_with_a_free_neighbour()
    with held:
        range_file = _range_file(tmp_path, port + 2, 60999)  # candidates: port, port + 1
        for seed in range(20):  # red without the bind check: the held port about half the time
            planned = ports.plan_ports(
                1, range_file=range_file, floor=port, rng=random.Random(seed)
            )
            assert planned == [port + 1]


def test_no_free_port_is_a_clear_error(tmp_path: Path) -> None:
    held, port = _held_port_with_a_free_neighbour()
    with held:
        range_file = _range_file(tmp_path, port + 1, 60999)  # the only candidate is held
        with pytest.raises(ports.NoFreePort, match=f"{port}-{port}.*ephemeral range") as caught:
            ports.plan_ports(1, range_file=range_file, floor=port)
    message, status = describe(caught.value)  # `dltmw init` shows a message, exit 1, no bug
    assert status == EXIT_FAILED and "NoFreePort" in message and "ephemeral range" in message


def test_a_nats_plan_uses_distinct_ports_outside_the_ephemeral_range(tmp_path: Path) -> None:
    low, high = ports.ephemeral_range()
    plan = NatsPlan.fresh(tmp_path, size=3)
    planned = [p for m in plan.members for p in (m.client_port, m.route_port, m.monitor_port)]
    assert len(set(planned)) == 9
    assert not any(low <= p <= high for p in planned)
