"""Checks that cost CPU (signatures above all) run on the node's verify pool, in chunks.

`cryptography` releases the GIL while it signs and verifies, so a thread pool of two verifies on
both cores while the event loop stays free (`reference/limits.md`: ~32k verifies/s with 100 per
executor call, against ~16-23k on one core). One executor hop costs ~70-100 µs, so items go in
chunks, never one per call; the chunks of one batch run in parallel; a batch of one or two items
runs at once on the caller's thread (`INLINE_MAX`). Every place that checks a
batch of signed things — envelopes at Broadcast and at commit, proposals, notarisation requests —
goes through `map_chunked`; `capturing` lets one refused item fail alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E", bound=BaseException)
CHUNK = 64  # items per executor call: ~64 signature checks amortise the hop many times over
# At most this many items run on the calling (event-loop) thread: a hop to the pool costs more
# than one or two signature checks (~60 µs each) and adds a thread wake-up to the latency of
# every small batch (a lone transaction at low load: its envelope at Broadcast, its block).
INLINE_MAX = 2


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` cut into consecutive pieces of at most `size`."""
    return [items[i : i + size] for i in range(0, len(items), size)]


async def map_chunked(
    pool: Executor, fn: Callable[[T], R], items: Sequence[T], chunk: int = CHUNK
) -> list[R]:
    """`fn` over `items` on `pool`, `chunk` items per executor call, the calls in parallel;
    results in item order. An exception `fn` raises fails the whole batch (see `capturing`)."""

    def run(piece: Sequence[T]) -> list[R]:
        return [fn(item) for item in piece]

    if len(items) <= INLINE_MAX:
        return run(items)
    loop = asyncio.get_running_loop()
    done = await asyncio.gather(*(loop.run_in_executor(pool, run, c) for c in chunks(items, chunk)))
    return [result for piece in done for result in piece]


def capturing(fn: Callable[[T], R], kind: type[E]) -> Callable[[T], R | E]:
    """`fn`, returning (not raising) an exception of type `kind`: a refused item fails alone."""

    def call(item: T) -> R | E:
        try:
            return fn(item)
        except kind as exc:
            return exc

    return call
