"""A lone bus message's deterministic cost: Python calls, loop turns, tasks and thread hops per
message, with its CPU and latency; and what an idle gap costs on this host.

    PYTHONPATH=. .venv/bin/python -m benchmarks.bus_calls [messages] [gap_ms] [profile]
    PYTHONPATH=. .venv/bin/python -m benchmarks.bus_calls idle

The first form runs the default embedded network (`dltmw.open`, in-process transport: solo
orderer, two organisations' peers, sqlite FULL) and publishes `messages` (default 300, after 5
warm-up ones) one at a time as user1.org1, each `gap_ms` (default 30) after the previous one's
delivery to a subscriber of user1.org2. It prints the p50 of publish -> deliver, the process CPU
per message (os.times, every thread), and thread-pool submits per message. With `profile`, the
loop thread runs under cProfile (thread CPU clock) during each message: Python calls per
message is then the figure to compare between trees, as it does not move with the host's load
(the CPU and p50 of a profiled run are inflated ~2x and mean nothing).

Why `gap_ms` and `idle`: on this host (a Firecracker VM) code is several times slower right
after the CPU was idle — an ECDSA signature ~22 µs in a loop but ~210 µs of thread CPU after a
30 ms sleep, a SHA-256 of 600 bytes 0.7 µs vs ~38 µs (`idle` prints these). A lone message
starts after such a gap and waits on fsyncs within, so its CPU depends on the gap as much as on
the code: compare trees at the same gap (benchmarks/RESULTS.md, branch bus8).
"""

from __future__ import annotations

import asyncio
import cProfile
import hashlib
import os
import pstats
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.bus_stages import lone_bus

HOPS = [0]


def _count_hops() -> None:
    original = ThreadPoolExecutor.submit

    def submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        HOPS[0] += 1
        return original(self, fn, *args, **kwargs)

    ThreadPoolExecutor.submit = submit  # type: ignore[method-assign, assignment]


async def run(messages: int, gap_s: float, profile: bool) -> None:
    """Publish `messages` lone messages; print the figures of the module docstring."""
    _count_hops()
    async with lone_bus("inproc", "calls") as (publisher, arrivals):
        for i in range(5):
            await publisher.publish("calls", b"x" * 200, {"n": str(i)})
            await asyncio.wait_for(arrivals.get(), 30)
        prof = cProfile.Profile(time.thread_time) if profile else None
        HOPS[0] = 0
        latencies: list[float] = []
        used = os.times()
        for i in range(messages):
            await asyncio.sleep(gap_s)
            if prof is not None:
                prof.enable()
            start = time.perf_counter()
            await publisher.publish("calls", b"x" * 200, {"n": str(i)})
            delivered = await asyncio.wait_for(arrivals.get(), 30)
            await asyncio.sleep(0.005)  # the publisher's last stages end
            if prof is not None:
                prof.disable()
            latencies.append((delivered - start) * 1e3)
        done = os.times()
        hops = HOPS[0]
    cpu_ms = (done.user + done.system - used.user - used.system) / messages * 1e3
    print(
        f"{messages} messages, gap {gap_s * 1e3:.0f} ms: p50 {statistics.median(latencies):.2f} ms,"
        f" CPU {cpu_ms:.2f} ms/message, thread hops {hops / messages:.2f}/message"
    )
    if prof is not None:
        _print_counts(pstats.Stats(prof), messages)


def _print_counts(stats: pstats.Stats, messages: int) -> None:
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    calls = sum(v[1] for v in table.values())
    by_name: dict[str, float] = {}
    for (path, _, name), v in table.items():  # every task and callback passes these once
        if (path.endswith("base_events.py") and name in ("_run_once", "create_task")) or (
            path.endswith("events.py") and name == "_run"
        ):
            by_name[name] = by_name.get(name, 0) + v[1] / messages
    print(
        f"Python calls {calls / messages:.0f}/message; loop turns"
        f" {by_name.get('_run_once', 0):.1f}, callbacks run {by_name.get('_run', 0):.1f},"
        f" tasks {by_name.get('create_task', 0):.1f} per message"
    )


def idle() -> None:
    """Thread CPU of one ECDSA P-256 signature and one SHA-256, hot and after idle gaps."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    data = b"x" * 600

    def cost(fn: Any, gap_s: float) -> float:
        spent = []
        for _ in range(60):
            if gap_s:
                time.sleep(gap_s)
            start = time.thread_time()
            fn()
            spent.append(time.thread_time() - start)
        return statistics.median(spent) * 1e6

    def sign() -> None:
        key.sign(data, ec.ECDSA(hashes.SHA256()))

    def sha() -> None:
        hashlib.sha256(data).digest()

    for gap_s in (0.0, 0.001, 0.03):
        print(
            f"after {gap_s * 1e3:4.0f} ms idle: ECDSA sign {cost(sign, gap_s):6.1f} µs,"
            f" SHA-256 {cost(sha, gap_s):5.1f} µs (thread CPU, median of 60)"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["idle"]:
        idle()
    else:
        asyncio.run(
            run(
                int(sys.argv[1]) if len(sys.argv) > 1 else 300,
                float(sys.argv[2]) / 1e3 if len(sys.argv) > 2 else 0.03,
                sys.argv[3:4] == ["profile"],
            )
        )
