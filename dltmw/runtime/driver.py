"""The generic driver: feed a consensus handler, execute its outputs in order.

This is the whole contract between the pure handlers of `dltmw/core/handlers` and the world, kept
short on purpose (etcd raft's users asked for exactly this reference loop):

1. wait for inputs (or the next tick), step every input that is already queued — so a burst
   of submissions becomes one batch and one storage transaction (group commit);
2. take `ready()`;
3. execute it: persist, then send, then reply — durable before anyone is told.

The loop is bounded per iteration (`batch_max` inputs) and stops when its task is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from dltmw.core.handlers.base import ConsensusHandler, Ready


async def drive(
    handler: ConsensusHandler,
    inbox: asyncio.Queue[object],
    tick_s: float,
    execute: Callable[[Ready], Awaitable[None]],
    batch_max: int = 1000,
) -> None:
    """Run `handler` forever (until cancelled)."""
    loop = asyncio.get_running_loop()
    next_tick = loop.time() + tick_s
    while True:
        timeout = max(0.0, next_tick - loop.time())
        try:
            first = await asyncio.wait_for(inbox.get(), timeout)
        except TimeoutError:
            first = None
        if first is not None:
            handler.step(first)
            for _ in range(batch_max - 1):
                if inbox.empty():
                    break
                handler.step(inbox.get_nowait())
        if loop.time() >= next_tick:
            handler.tick()
            next_tick = loop.time() + tick_s
        ready = handler.ready()
        if not ready.is_empty():
            await execute(ready)
