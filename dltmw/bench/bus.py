"""The message bus benchmark (`dltmw bench --experiment bus`): an embedded network, measured
from the program's side.

Three figures, each from the same in-process network (`dltmw.open`: an orderer and two
organisations' peers on this event loop, real sqlite; its nodes and clients talk through the
in-process transport or real gRPC with mTLS, `BusBenchConfig.transport`):
- **latency**: one publisher publishes a message every `interval_ms` (low load); one subscriber
  notes when each arrives; publish-call start → delivery, p50/p99;
- **throughput**: `publishers` publishers send `publish_batch` transactions of `batch` messages
  of `size` bytes for `seconds`; messages delivered to one subscriber per second (after one
  uncounted warm-up round: a fresh network's first round runs at about half the later ones);
- **stalled subscriber**: the throughput again while a second subscriber takes one message and
  then stops reading (its stream stays open); the ratio of the two throughputs (1.0 = the
  stalled subscriber costs the publishers nothing).
Times are monotonic clock readings of this one process, so publish and delivery compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dltmw.sdk.bus import Bus, Subscription
from dltmw.sdk.network import DEFAULT_TRANSPORT, Network, TransportName
from dltmw.sdk.network import open as open_network

TOPIC = "bench"
# How the embedded network's nodes and clients talk (`dltmw.open`): the figures depend on it.
TRANSPORTS = {
    "grpc": "in-process nodes, gRPC with mutual TLS on 127.0.0.1",
    "inproc": "in-process nodes, in-process transport (rpc/inproc*.py)",
}


@dataclass(frozen=True)
class BusBenchConfig:
    """What the bus benchmark runs."""

    latency_messages: int = 200
    interval_ms: float = 20.0
    publishers: int = 4
    batch: int = 100
    size: int = 200
    seconds: float = 10.0
    synchronous: str = "FULL"
    transport: TransportName = DEFAULT_TRANSPORT


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latency(net: Network, cfg: BusBenchConfig) -> dict[str, float]:
    publisher, subscriber = net.bus("user1.org1"), net.bus("user1.org2")
    sent: dict[str, float] = {}
    delays: list[float] = []
    subscription = subscriber.subscribe(TOPIC)

    async def receive() -> None:
        async for message in subscription:
            start = sent.get(message.headers.get("n", ""))
            if start is not None:
                delays.append((time.monotonic() - start) * 1000)
            if len(delays) >= cfg.latency_messages:
                return

    receiver = asyncio.ensure_future(receive())
    for i in range(cfg.latency_messages):
        sent[str(i)] = time.monotonic()
        await publisher.publish(TOPIC, b"x" * cfg.size, {"n": str(i)})
        await asyncio.sleep(cfg.interval_ms / 1000)
    await asyncio.wait_for(receiver, 60)
    await subscription.close()
    return {
        "p50_ms": round(statistics.median(delays), 2),
        "p99_ms": round(_percentile(delays, 0.99), 2),
        "messages": len(delays),
    }


async def _throughput(net: Network, cfg: BusBenchConfig, stalled: bool) -> dict[str, float]:
    buses = [net.bus(f"user1.org{1 + i % 2}") for i in range(cfg.publishers)]
    reader: Bus = net.bus("user1.org2")
    start_block = reader.client.seen_block("main") + 1
    subscription = reader.subscribe(TOPIC, from_block=start_block)
    stall: Subscription | None = None
    if stalled:
        stall = net.bus("user1.org1").subscribe(TOPIC, from_block=start_block)
    batch = [(b"y" * cfg.size, {"k": "v"})] * cfg.batch
    published = 0
    began = time.monotonic()
    stop_at = began + cfg.seconds

    async def publish(bus: Bus) -> None:
        nonlocal published
        while time.monotonic() < stop_at:
            await bus.publish_batch(TOPIC, batch)
            published += cfg.batch

    async def take_one() -> None:
        assert stall is not None
        await stall.__anext__()  # then never read again: the stream stays open

    staller = asyncio.ensure_future(take_one()) if stall else None
    delivered = 0
    caught_up = asyncio.Event()  # every message published so far was delivered

    async def receive() -> None:
        nonlocal delivered
        async for _ in subscription:
            delivered += 1
            if delivered >= published:
                caught_up.set()

    receiving = asyncio.ensure_future(receive())
    await asyncio.gather(*(publish(b) for b in buses))
    caught_up.clear()
    if delivered < published:
        await asyncio.wait_for(caught_up.wait(), 120)
    elapsed = time.monotonic() - began
    for task in (receiving, staller):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # its iteration has stopped: the subscription can be closed
    await subscription.close()
    if stall is not None:
        await stall.close()
    return {
        "messages": delivered,
        "seconds": round(elapsed, 2),
        "per_s": round(delivered / elapsed),
    }


async def run(
    cfg: BusBenchConfig, rounds: int = 3, directory: Path | None = None
) -> dict[str, Any]:
    """All three figures from one network; the two throughputs alternate over `rounds`
    rounds (so load on the shared machine hits both alike); medians with min..max."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    alone: list[dict[str, float]] = []
    stalled: list[dict[str, float]] = []
    net_open = open_network(directory, synchronous=cfg.synchronous, transport=cfg.transport)
    async with net_open as net:
        await net.bus("user1.org1").create_topic(TOPIC)
        latency = await _latency(net, cfg)
        # One throughput round first, not counted: the network runs ~2x faster by the second
        # round than the first (measured: without it, a round's first measurement was the
        # slower one in every round, so the stalled/alone ratio swung 0.77..2.0 with the order).
        warmup = await _throughput(net, cfg, stalled=False)
        for i in range(rounds):  # which goes first alternates: no order bias
            for with_stall in (False, True) if i % 2 == 0 else (True, False):
                result = await _throughput(net, cfg, stalled=with_stall)
                (stalled if with_stall else alone).append(result)
    ratios = [s["per_s"] / max(1.0, a["per_s"]) for a, s in zip(alone, stalled, strict=True)]
    return {
        "config": asdict(cfg) | {"rounds": rounds},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        },
        "transport": TRANSPORTS[cfg.transport],
        "latency": latency,
        "warmup_per_s": warmup["per_s"],
        "throughput_per_s": _spread([a["per_s"] for a in alone]),
        "throughput_with_stalled_subscriber_per_s": _spread([s["per_s"] for s in stalled]),
        "stalled_ratio": _spread([round(r, 3) for r in ratios]),
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def report(result: dict[str, Any], command: str) -> str:
    """The figures as the lines `dltmw bench --experiment bus` prints (and RESULTS.md keeps)."""
    m, lat = result["machine"], result["latency"]
    t, st, r = (
        result["throughput_per_s"],
        result["throughput_with_stalled_subscriber_per_s"],
        result["stalled_ratio"],
    )
    return "\n".join(
        [
            f"command: {command}",
            f"machine: {m['cpus']} CPUs, Python {m['python']}, load average {m['loadavg']}",
            f"transport: {result['transport']}",
            f"publish -> deliver latency at low load: p50 {lat['p50_ms']} ms, "
            f"p99 {lat['p99_ms']} ms ({lat['messages']} messages)",
            f"batched throughput: median {t['median']:.0f} messages/s "
            f"({t['min']:.0f}..{t['max']:.0f}, {result['config']['rounds']} rounds after one "
            f"uncounted warm-up round at {result['warmup_per_s']:.0f})",
            f"with a stalled subscriber: median {st['median']:.0f} messages/s "
            f"({st['min']:.0f}..{st['max']:.0f}); ratio {r['median']} ({r['min']}..{r['max']})",
        ]
    )
