"""Following a ledger: stored blocks from a number on, then each new one as it is committed.

Shared by the orderer's Deliver and the peer's Events. Blocks are read in bounded chunks, so a
reader that starts far behind (a peer catching up from block 0) never loads the whole chain at
once; the committing side calls `new_block.committed()` after each commit (`BlockSignal`).

A chunk is bounded in bytes as well as in blocks: `CHUNK_BLOCKS` blocks of 100 transactions
(~250 KB each) were 16 MB of serialised blocks, held with their parsed copies per follower, which
alone took a catching-up orderer's resident memory past 120 MB. The next chunk's count is the
byte budget divided by the largest block of the last chunk (`next_count`), so a chunk stays near
`CHUNK_BYTES` whatever the block size, and small blocks are still read 64 per hop.

`follow_data` hands on each block serialised as stored: the orderer's Deliver frames those bytes
for the wire as they are (`rpc/orderer.py`), so a block is never parsed and serialised again per
follower; `follow` parses them for readers that look inside (Events).

A peer's followers (its private executor on every channel, each Events stream) are usually
waiting at the head: each block they want is the one just committed, which the committer holds
parsed. `follow(recent=...)` takes such a block from `RecentBlocks` (the last few committed
blocks, kept by the peer) instead of a read hop to the ledger's reader thread and a parse per
follower and block; only a follower that is behind by more than `RECENT_MAX` blocks reads the
ledger. The blocks are shared: a follower must not change one.

Why `BlockSignal` and not an `asyncio.Condition`: every follower waits at the head for each
block, and a condition's `wait_for` under its lock cost a lone bus message 10 predicate waits, 13
lock enters/exits and the notifiers' own lock rounds (89 Python calls in asyncio's locks of
~7,000; 69 fewer in all: benchmarks/RESULTS.md, branch bus10). Waiting needs no lock on one
event loop: the height is read and the waiter registered with no await between, so a commit
cannot slip in unseen. Every committing side (the solo, PBFT and JetStream orderers, the peer)
calls `committed()`, which wakes the waiters without a lock.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from functools import partial

from dltmw.ledger.backend import Ledger
from dltmw.v1 import block_pb2

CHUNK_BLOCKS = 64
CHUNK_BYTES = 1024 * 1024  # serialised bytes per chunk, roughly (module docstring)
RECENT_MAX = 4  # committed blocks a peer keeps for its followers (at 100 tx, ~1 MB in all)


class RecentBlocks:
    """The last `size` committed blocks, by number (module docstring)."""

    def __init__(self, size: int = RECENT_MAX) -> None:
        self._size = size
        self._blocks: OrderedDict[int, block_pb2.Block] = OrderedDict()

    def remember(self, block: block_pb2.Block) -> None:
        """`block` is durable (with its validation codes) and is not changed from now on."""
        self._blocks[block.header.number] = block
        while len(self._blocks) > self._size:
            self._blocks.popitem(last=False)

    def get(self, number: int) -> block_pb2.Block | None:
        """Block `number` if it is one of the last committed, else None (read the ledger)."""
        return self._blocks.get(number)

    def oldest(self) -> int | None:
        """The number of the oldest block held (they are consecutive), None when empty."""
        return next(iter(self._blocks), None)


class BlockSignal:
    """A new block was committed: wakes the followers waiting for a height (module docstring)."""

    def __init__(self) -> None:
        self._waiting: list[asyncio.Future[None]] = []

    @property
    def waiting(self) -> int:
        """Waiters registered and not yet woken or cancelled."""
        return len(self._waiting)

    def committed(self) -> None:
        """Wake every waiter (each checks its own height again); no lock needed or taken."""
        woken, self._waiting = self._waiting, []
        for waiter in woken:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_until(self, reached: Callable[[], bool]) -> None:
        """Return once `reached()` holds, checked now and after each commit."""
        while not reached():
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiting:  # a closed stream leaves no waiter behind
                    self._waiting.remove(waiter)
                raise


def _holds(ledger: Ledger, number: int) -> bool:
    return ledger.height > number


async def _reached(ledger: Ledger, new_block: BlockSignal, number: int) -> None:
    """Return once block `number` is committed (at once when it already is)."""
    if number >= ledger.height:
        await new_block.wait_until(partial(_holds, ledger, number))


async def follow(
    ledger: Ledger,
    new_block: BlockSignal,
    start: int,
    stop: int | None = None,
    recent: RecentBlocks | None = None,
) -> AsyncIterator[block_pb2.Block]:
    """Blocks start.. (through `stop` inclusive, or forever when None), in order; those that
    `recent` holds are taken from it, the others read from the ledger (module docstring)."""
    if recent is None:
        async for data in follow_data(ledger, new_block, start, stop):
            yield block_pb2.Block.FromString(data)
        return
    number = start
    while stop is None or number <= stop:
        await _reached(ledger, new_block, number)
        held = recent.get(number)
        if held is not None:
            yield held
            number += 1
            continue
        oldest = recent.oldest()  # read the ledger up to the blocks held, not through them
        upper = ledger.height - 1 if oldest is None or oldest <= number else oldest - 1
        upper = min(upper, ledger.height - 1) if stop is None else min(stop, upper)
        async for data in follow_data(ledger, new_block, number, upper):
            yield block_pb2.Block.FromString(data)
            number += 1


async def follow_data(
    ledger: Ledger, new_block: BlockSignal, start: int, stop: int | None = None
) -> AsyncIterator[bytes]:
    """`follow`'s blocks serialised as stored (block `start + i` is the i-th)."""
    number, count = start, 1  # the first chunk is one block: its size sets the next count
    while stop is None or number <= stop:
        await _reached(ledger, new_block, number)
        upper = min(ledger.height, number + count)
        if stop is not None:
            upper = min(upper, stop + 1)
        chunk = await ledger.block_data(number, upper)
        count = next_count(chunk, count)
        while chunk:  # let go of each block once yielded
            yield chunk.pop(0)
            number += 1


def next_count(chunk: list[bytes], count: int) -> int:
    """Blocks to read next: as many of the largest block just read as fit in `CHUNK_BYTES`
    (at least 1, at most `CHUNK_BLOCKS`); `count` again after an empty read."""
    if not chunk:
        return count
    largest = max(len(b) for b in chunk)
    return max(1, min(CHUNK_BLOCKS, CHUNK_BYTES // max(largest, 1)))
