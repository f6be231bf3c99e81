"""Following a ledger reads bounded chunks in bytes, not only in blocks (`runtime/blockfeed.py`).

A follower far behind (a peer catching up by Deliver) is served from the store in chunks; with
blocks of ~100 KB a chunk of `CHUNK_BLOCKS` was 6 MB, held parsed per follower. Each store read
must stay within `CHUNK_BYTES` (plus at most one block), and every block still arrives in order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dltmw.core.block import make_block
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.runtime.blockfeed import CHUNK_BLOCKS, CHUNK_BYTES, BlockSignal, follow, next_count

CH = "feed"
ENVELOPE_BYTES = 100 * 1024


async def _ledger(path: Path, blocks: int) -> ChannelLedger:
    ledger = await ChannelLedger.open(path, synchronous="NORMAL")
    for number in range(blocks):
        envelope = number.to_bytes(4, "big") * (ENVELOPE_BYTES // 4)
        block = make_block(CH, number, ledger.last_hash, [envelope])
        await ledger.commit_block(block, ())
    return ledger


async def test_a_far_behind_follower_reads_chunks_bounded_in_bytes_and_gets_every_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = 3 * CHUNK_BYTES // ENVELOPE_BYTES + 20  # several chunks, past the in-memory tail
    ledger = await _ledger(tmp_path / "l.sqlite", blocks)
    reads: list[int] = []
    stored = ledger._stored_data

    async def counted(start: int, stop: int) -> list[bytes]:
        found = await stored(start, stop)
        reads.append(sum(len(b) for b in found))
        return found

    monkeypatch.setattr(ledger, "_stored_data", counted)
    try:
        got = [b.header.number async for b in follow(ledger, BlockSignal(), 0, blocks - 1)]
    finally:
        await ledger.close()
    assert got == list(range(blocks))
    assert len(reads) > 2
    largest = ENVELOPE_BYTES + 1024
    assert max(reads) <= CHUNK_BYTES + largest, reads


@pytest.mark.parametrize(
    ("size", "expected"),
    [(100, CHUNK_BLOCKS), (CHUNK_BYTES // 10, 10), (CHUNK_BYTES * 3, 1)],
    ids=["small-blocks-read-64-at-a-time", "medium-fit-the-budget", "huge-one-at-a-time"],
)
def test_next_count_fits_the_largest_block_into_the_byte_budget(size: int, expected: int) -> None:
    block = make_block(CH, 0, bytes(32), [b"x" * size])
    overhead = block.ByteSize() - size
    block = make_block(CH, 0, bytes(32), [b"x" * (size - overhead)]) if size > overhead else block
    assert next_count([block.SerializeToString()], 7) == expected
    assert next_count([], 7) == 7  # an empty read keeps the count
