"""CPU per item of a call's deadline: a timer handle per item (before) vs `FifoDeadlines`.

Each item is a future given a 30 s deadline and settled soon after, in groups of 100 per loop
turn (as a batched stream's answers come); `base` is the same without any deadline. Process CPU
time per item, 5 interleaved runs of 200,000 items each; median and spread.

    .venv/bin/python -m benchmarks.deadlines_micro
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from dltmw.aio.deadlines import FifoDeadlines

N = 200_000
BATCH = 100


def _make() -> BaseException:
    return TimeoutError()


def _expire(future: asyncio.Future[Any], make: Callable[[], BaseException]) -> None:
    if not future.done():
        future.set_exception(make())


async def _run(mode: str) -> float:
    loop = asyncio.get_running_loop()
    deadlines = FifoDeadlines()
    started = time.process_time()
    for _ in range(N // BATCH):
        futures: list[asyncio.Future[int]] = []
        handles: list[asyncio.TimerHandle] = []
        for _ in range(BATCH):
            future: asyncio.Future[int] = loop.create_future()
            futures.append(future)
            if mode == "timer-per-item":
                handles.append(loop.call_later(30.0, _expire, future, _make))
            elif mode == "fifo":
                deadlines.add(future, 30.0, _make)
        for future in futures:
            future.set_result(1)
        for handle in handles:
            handle.cancel()
        await asyncio.sleep(0)
    deadlines.close()
    return time.process_time() - started


def main() -> None:
    modes = ("base", "timer-per-item", "fifo")
    runs: dict[str, list[float]] = {m: [] for m in modes}
    load = os.getloadavg()[0]
    for _ in range(5):
        for mode in modes:
            run: Callable[[], Coroutine[Any, Any, float]] = lambda mode=mode: _run(mode)  # noqa: E731
            runs[mode].append(asyncio.run(run()) / N * 1e6)
    print(f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    for mode, values in runs.items():
        every = ", ".join(f"{v:.2f}" for v in values)
        spread = max(values) - min(values)
        print(f"{mode}: {every} -> median {statistics.median(values):.2f} us/item ({spread=:.2f})")


if __name__ == "__main__":
    main()
