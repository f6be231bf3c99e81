"""`map_chunked` (aio/pool.py): one or two items run on the caller's thread (a pool hop costs
more than one or two signature checks and adds a thread wake-up to a lone transaction's
latency); larger batches go to the pool in chunks, results in item order either way."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from dltmw.aio.pool import INLINE_MAX, map_chunked


def where(item: int) -> tuple[int, str]:
    return item, threading.current_thread().name


async def test_small_batches_run_inline_and_larger_ones_on_the_pool() -> None:
    me = threading.current_thread().name
    with ThreadPoolExecutor(2, thread_name_prefix="verify") as pool:
        small = await map_chunked(pool, where, list(range(INLINE_MAX)))
        large = await map_chunked(pool, where, list(range(INLINE_MAX + 5)), chunk=2)
    assert small == [(i, me) for i in range(INLINE_MAX)]
    assert [i for i, _ in large] == list(range(INLINE_MAX + 5))
    assert all(name.startswith("verify") for _, name in large)
