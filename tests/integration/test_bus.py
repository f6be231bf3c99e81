"""The message bus over real node processes: a subscriber killed with -9 (and, separately,
its gateway's node killed with -9) resumes from its checkpoint and ends with every message
exactly once, in commit order — none lost, none repeated.

The subscriber is its own process (`bus_subscriber.py`), attached with `dltmw.connect` to a
network run by the supervisor; its records file is also its checkpoint (docs/embedding.md).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dltmw
from dltmw.ops.supervisor import Supervisor
from tests.integration.conftest import TWO_ORG
from tests.integration.embedded_bus import once_but_the_message_in_hand

KV = '{ name = "kv", endorsement_policy = "OR(Org1.peer, Org2.peer)" }'
BUS_TOPOLOGY = TWO_ORG.replace(KV, '{ name = "bus" }')
SUBSCRIBER = Path(__file__).with_name("bus_subscriber.py")
ROOT = Path(__file__).resolve().parents[2]
Network = Callable[..., tuple[Path, Supervisor]]


def _lines(records: Path) -> list[str]:
    text = records.read_text() if records.exists() else ""
    return text[: text.rfind("\n") + 1].splitlines()


def _start_subscriber(
    net: Path, records: Path, wanted: int, sdk: bool = False
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [
            sys.executable,
            str(SUBSCRIBER),
            str(net),
            "user1.org1",
            str(records),
            str(wanted),
            *(["sdk"] if sdk else []),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def _wait_records(
    records: Path, at_least: int, proc: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while len(_lines(records)) < at_least:
        if proc.poll() is not None and proc.returncode != 0:
            raise AssertionError(f"subscriber failed: {proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"only {len(_lines(records))} of {at_least} records"
        await asyncio.sleep(0.02)


def _finish(proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError("subscriber did not finish") from None
    assert code == 0, proc.stderr.read().decode()[-3000:]  # type: ignore[union-attr]


async def _publish(net: Path, count: int, start: int = 0) -> list[str]:
    """Publish `count` messages (16 in flight) as user1.org2; returns their tx ids."""
    async with dltmw.connect(net) as network:
        bus = network.bus("user1.org2", "trades")
        if start == 0:
            await bus.create_topic("trades")
            await bus.create_topic("other")  # messages of another topic must not be delivered
            await bus.publish("other", b"not for this subscriber")
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> str:
            async with gate:
                return (await bus.publish("trades", f"m{i}".encode(), {"i": str(i)})).tx_id

        return list(await asyncio.gather(*(one(i) for i in range(start, start + count))))


async def _kill_subscriber(
    net: Path,
    records: Path,
    total: int,
    backlog: int,
    kill_at: tuple[int, ...],
    sdk: bool = False,
) -> list[str]:
    """Publish `backlog` messages, then the rest of `total` live while the subscriber process
    is started and killed -9 once it has each of `kill_at` records; then run it to `total`.
    Returns the published tx ids."""
    published = await _publish(net, backlog)
    more = asyncio.ensure_future(_publish(net, total - backlog, start=backlog))  # meanwhile
    for at_least in kill_at:
        proc = _start_subscriber(net, records, total, sdk)
        try:
            await _wait_records(records, at_least, proc)
        finally:
            proc.kill()  # kill -9, wherever it is
            proc.wait(10)
    published += await more
    proc = _start_subscriber(net, records, total, sdk)
    await asyncio.to_thread(_finish, proc)
    return published


def _check_exactly_once(records: Path, published: list[str], expected: int) -> None:
    rows = [line.split() for line in _lines(records)]
    assert len(rows) == expected, f"{len(rows)} records for {expected} messages"
    positions = [tuple(int(x) for x in row[:3]) for row in rows]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    tx_ids = [row[3] for row in rows]
    assert len(set(tx_ids)) == len(tx_ids), "a message was delivered twice"
    assert set(tx_ids) == set(published), "a message was lost or a stranger delivered"
    assert {row[4] for row in rows} == {f"m{i}" for i in range(expected)}


def test_subscriber_killed_mid_stream_resumes_exactly_once(
    network: Network, tmp_path: Path
) -> None:
    net, _sup = network(BUS_TOPOLOGY, batch_ms=10)
    records = tmp_path / "records.txt"
    total = 240
    published = asyncio.run(_kill_subscriber(net, records, total, 80, (20, 100, 170)))
    _check_exactly_once(records, published, total)


def test_node_killed_under_subscriber_resumes_exactly_once(
    network: Network, tmp_path: Path
) -> None:
    net, sup = network(BUS_TOPOLOGY, batch_ms=10)
    records = tmp_path / "records.txt"
    backlog, live = 200, 40

    async def scenario() -> list[str]:
        published = await _publish(net, backlog)
        proc = _start_subscriber(net, records, backlog + live)
        try:
            await _wait_records(records, 30, proc)
            sup.kill("peer0.org1")  # the subscriber's (only) gateway, mid-stream
            await asyncio.sleep(0.5)
            sup.start("peer0.org1")
            sup.wait_ready("peer0.org1")
            published += await _publish(net, live, start=backlog)
            await asyncio.to_thread(_finish, proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        return published

    published = asyncio.run(scenario())
    _check_exactly_once(records, published, backlog + live)


def test_subscriber_with_the_sdk_checkpointer_killed_mid_stream(
    network: Network, tmp_path: Path
) -> None:
    """The same kill -9 of the subscriber, with the SDK's own `FileCheckpointer`: every message
    delivered, in commit order, once — but for the one in hand at each kill, repeated as the
    first after the restart (the SDK's contract, docs/embedding.md). Red when
    `FileCheckpointer.save` does nothing (a restart replays from block 0)."""
    net, _sup = network(BUS_TOPOLOGY, batch_ms=10)
    records = tmp_path / "records.txt"
    total, kills = 160, (15, 60, 110)
    published = asyncio.run(_kill_subscriber(net, records, total, 60, kills, sdk=True))
    rows = once_but_the_message_in_hand(_lines(records), len(kills))
    positions = [tuple(int(x) for x in row[:3]) for row in rows]
    assert positions == sorted(set(positions)), "not in commit order, or repeated"
    tx_ids = [row[3] for row in rows]
    assert len(set(tx_ids)) == len(tx_ids) == total
    assert set(tx_ids) == set(published), "a message was lost or a stranger delivered"
