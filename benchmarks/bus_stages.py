"""Where a lone bus message's time goes: stage time stamps of `publish -> deliver`, in-process.

    PYTHONPATH=. .venv/bin/python -m benchmarks.bus_stages [messages] [grpc|inproc]

Runs the default embedded network (`dltmw.open`: solo orderer, two organisations' peers, sqlite
FULL; real gRPC with mTLS on 127.0.0.1 or the in-process transport, as the second argument
says) and publishes one message at a time as user1.org1,
waiting for its delivery to a subscriber of user1.org2 before the next (so every stage seen
between two publishes belongs to that message). The methods below are wrapped to note when
they start and end; for each stage it prints the median start and end relative to the
publish call's start, its median duration and how many times it ran per message, in order of
start. Every thread-pool submit is counted as a stage `thread hop: <pool>` (how many per
message, and what the submit call itself took). Everything runs on one event loop (and the
stores' threads), so stages of different nodes interleave: read the end times along the path
(SDK -> gateway -> endorsers -> orderer -> each peer's commit -> Events), not the sum of the
durations.

An analysis tool, not a benchmark of record: the wrappers cost a few µs each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

SPANS: list[tuple[str, float, float]] = []
now = time.perf_counter


def _wrap(cls: Any, name: str, label: str, who: Callable[[Any], str] | None = None) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = now()
        try:
            return await original(self, *args, **kwargs)
        finally:
            SPANS.append((label + (f"@{who(self)}" if who else ""), start, now()))

    setattr(cls, name, timed)


def stages() -> list[tuple[Any, str, str, Callable[[Any], str] | None]]:
    """(class, coroutine method, label, node namer) of each stage of the path (SDK, gateway,
    endorsers, orderer, committers, stores); tests/unit/test_bus_stages.py checks that each
    still exists, so a rename on the path breaks CI, not the next measurement."""
    from dltmw.client.pipeline import Pipeline
    from dltmw.ledger.sqlite import ChannelLedger
    from dltmw.rpc.orderer import OrdererServicer
    from dltmw.rpc.transact import TransactSession
    from dltmw.runtime.roles.gateway.endorser_links import EndorserStream
    from dltmw.runtime.roles.gateway.endorsing import BatchEndorser
    from dltmw.runtime.roles.gateway.gateway import Gateway
    from dltmw.runtime.roles.orderer.solo import OrdererChannel, SoloExecutor
    from dltmw.runtime.roles.peer.channel import PeerChannel
    from dltmw.runtime.roles.peer.committer import CommitExecutor

    def node(obj: Any) -> str:
        return str(obj.ctx.node_id)

    stages: list[tuple[Any, str, str, Callable[[Any], str] | None]] = [
        (Pipeline, "endorse", "sdk: endorse (Transact item)", None),
        (Pipeline, "submit_committed", "sdk: submit to commit status", None),
        (TransactSession, "_endorse_batch", "gateway: endorse request", None),
        (TransactSession, "_submit_batch", "gateway: submit request (to commit)", None),
        (Gateway, "check_envelope", "gateway: envelope check", None),
        (Gateway, "submit", "gateway: duplicate check + broadcast", None),
        (BatchEndorser, "endorse_many", "gateway: gather endorsements", None),
        (EndorserStream, "process_many", "gateway: remote endorser round trip", None),
        (PeerChannel, "admit_many", "peer: admit proposal", node),
        (PeerChannel, "endorse_many", "peer: simulate + sign", node),
        (OrdererServicer, "_handle", "orderer: Broadcast request", None),
        (SoloExecutor, "apply", "orderer: sign + write block", None),
        (OrdererChannel, "submit_many", "orderer: queue to block written", None),
        (PeerChannel, "commit", "peer: commit block", node),
        (CommitExecutor, "_load", "peer: commit checks + reads", None),
        (CommitExecutor, "apply", "peer: commit write", None),
        (ChannelLedger, "commit_block", "store: commit_block (incl. fsync)", None),
        (ChannelLedger, "read_snapshot", "store: reader-thread read", None),
    ]
    return stages


def install() -> None:
    """Wrap the stages of the path (`stages`) and count the thread hops."""
    for cls, name, label, who in stages():
        _wrap(cls, name, label, who)
    _count_hops()


def _count_hops() -> None:
    """Each thread-pool submit as a stage `thread hop: <pool>` (its duration: the submit call's).
    A hop is a worker's wake-up and a GIL hand-over on the path; on a busy host the submitting
    loop can be descheduled for milliseconds there (benchmarks/RESULTS.md, branch buslat)."""
    from concurrent.futures import ThreadPoolExecutor

    original: Any = ThreadPoolExecutor.submit

    @functools.wraps(original)
    def submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        start = now()
        try:
            return original(self, fn, *args, **kwargs)
        finally:
            pool = getattr(self, "_thread_name_prefix", "") or "pool"
            SPANS.append((f"thread hop: {pool}", start, now()))

    setattr(ThreadPoolExecutor, "submit", submit)  # noqa: B010 (mypy: a method replaced)


@contextlib.asynccontextmanager
async def lone_bus(transport: str, topic: str) -> AsyncIterator[tuple[Any, asyncio.Queue[float]]]:
    """The default embedded network (`dltmw.open`) with `topic`: its publisher (user1.org1) and
    the arrival times (`now()`) of the topic's messages at a subscriber of user1.org2."""
    from dltmw.sdk.network import open as open_network

    async with open_network(None, transport=transport) as net:  # type: ignore[arg-type]
        publisher, subscriber = net.bus("user1.org1"), net.bus("user1.org2")
        await publisher.create_topic(topic)
        arrivals: asyncio.Queue[float] = asyncio.Queue()
        subscription = subscriber.subscribe(topic)

        async def receive() -> None:
            async for _ in subscription:
                arrivals.put_nowait(now())

        receiver = asyncio.ensure_future(receive())
        try:
            yield publisher, arrivals
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            await subscription.close()


async def run(messages: int, transport: str = "grpc") -> None:
    """Publish `messages` (+5 warm-up) one at a time; print the stage table."""
    install()
    rows: list[tuple[float, float, list[tuple[str, float, float]]]] = []
    async with lone_bus(transport, "stages") as (publisher, arrivals):
        cpu = os.times()
        for i in range(messages + 5):
            await asyncio.sleep(0.03)
            SPANS.clear()
            start = now()
            await publisher.publish("stages", b"x" * 200, {"n": str(i)})
            delivered = await asyncio.wait_for(arrivals.get(), 30)
            await asyncio.sleep(0.005)  # the publisher's last stages end
            if i >= 5:
                rows.append((start, delivered, list(SPANS)))
        used = os.times()
    _print(rows, (used.user + used.system - cpu.user - cpu.system) / (messages + 5))


def _print(rows: list[tuple[float, float, list[tuple[str, float, float]]]], cpu_s: float) -> None:
    starts: dict[str, list[float]] = defaultdict(list)
    ends: dict[str, list[float]] = defaultdict(list)
    durations: dict[str, list[float]] = defaultdict(list)
    for start, _, spans in rows:
        for label, a, b in spans:
            starts[label].append((a - start) * 1e3)
            ends[label].append((b - start) * 1e3)
            durations[label].append((b - a) * 1e3)
    total = statistics.median((d - s) * 1e3 for s, d, _ in rows)
    print(f"publish -> deliver p50 {total:.2f} ms over {len(rows)} messages;", end=" ")
    print(f"process CPU {cpu_s * 1e3:.1f} ms per message (incl. 35 ms idle between messages)")
    print(f"{'stage':44} {'start':>7} {'end':>7} {'takes':>6}  per message")
    for label in sorted(starts, key=lambda x: statistics.median(starts[x])):
        per = len(starts[label]) / len(rows)
        print(
            f"{label:44} {statistics.median(starts[label]):7.2f} "
            f"{statistics.median(ends[label]):7.2f} {statistics.median(durations[label]):6.2f}"
            f"  x{per:.1f}"
        )


if __name__ == "__main__":
    asyncio.run(
        run(
            int(sys.argv[1]) if len(sys.argv) > 1 else 60,
            sys.argv[2] if len(sys.argv) > 2 else "grpc",
        )
    )
