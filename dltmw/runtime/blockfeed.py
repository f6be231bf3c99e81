"""Following a ledger: stored blocks from a number on, then each new one as it is committed.

Shared by the orderer's Deliver and the peer's Events. Blocks are read in bounded chunks, so a
reader that starts far behind (a peer catching up from block 0) never loads the whole chain at
once; the committing side calls `notify_all()` on `new_block` after each commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial

from dltmw.ledger.backend import Ledger
from dltmw.v1 import block_pb2

CHUNK_BLOCKS = 64


def _holds(ledger: Ledger, number: int) -> bool:
    return ledger.height > number


async def follow(
    ledger: Ledger, new_block: asyncio.Condition, start: int, stop: int | None = None
) -> AsyncIterator[block_pb2.Block]:
    """Blocks start.. (through `stop` inclusive, or forever when None), in order."""
    number = start
    while stop is None or number <= stop:
        if number >= ledger.height:
            async with new_block:
                await new_block.wait_for(partial(_holds, ledger, number))
        upper = min(ledger.height, number + CHUNK_BLOCKS)
        if stop is not None:
            upper = min(upper, stop + 1)
        for block in await ledger.blocks(number, upper):
            yield block
            number += 1
