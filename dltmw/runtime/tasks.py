"""Stopping a task without trusting it to honour cancellation.

A task may swallow its cancellation: grpc.aio can surface a locally cancelled call as an
`AioRpcError(CANCELLED)` that a retry loop then treats as a peer failure and carries on. A stop
that awaited such a task would hang the node's shutdown until the supervisor kills it. So stops
cancel, wait a bounded time, and log a task that did not finish (it dies with the process).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

STOP_WAIT_S = 3.0


async def cancel_and_wait(task: asyncio.Task[Any] | None, timeout_s: float = STOP_WAIT_S) -> None:
    """Cancel `task` and wait up to `timeout_s` for it to end; never raises its outcome."""
    if task is None or task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        logger.error("task %s still running %.1fs after cancel", task.get_name(), timeout_s)
    elif not task.cancelled() and task.exception() is not None:
        logger.debug("task %s ended with %r while stopping", task.get_name(), task.exception())
