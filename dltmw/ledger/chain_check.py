"""Checking a stored hash chain: its tail when a ledger opens, the whole of it in the background.

Why not the whole chain at open. Opening used to re-read and re-hash every stored block before
the node could serve: a 100,000-block ledger took many seconds (and a million-transaction one
minutes) to restart, growing without bound with the ledger, while issue 18 asks for a restart
to serving in under 2 s. What that scan protects against is a file changed outside the node:
every block was already checked before it was written (a peer checks its link, data hash and
orderer signatures in the committer; an orderer made it over its own last hash), and a block
with all its effects is ONE sqlite transaction, so a crash cannot leave a half-written or
unlinked block behind (the ledger never needs repair).

So the check is split, and nothing is skipped:
* at open, synchronously: the last `OPEN_CHECK_BLOCKS` blocks are checked (link, stored hash,
  data hash and tx_root against the envelopes) back to the stored hash of the block before them
  — the blocks a node builds on (its last hash) and serves first. O(1) rows, whatever the
  height (tests/unit/test_chain_check.py counts the statements and rows).
* after start, in the background: the whole chain from block 0, in chunks of at most
  `CHECK_CHUNK_BLOCKS` blocks or about `CHECK_CHUNK_BYTES`, each on a worker thread with a
  read-only connection of its own (so commits and simulation never queue behind it; a first
  version ran on the writer's thread and held an orderer's start-up behind seconds of hashing),
  one block in memory at a time (`ChannelLedger.verify_stored_chain`, spawned by the node). A
  break is an InvariantViolation: the task fails, which is fatal — the node turns health
  NOT_SERVING and stops (`aio/tasks.py`) — exactly as the open check stopped it before, later.
Until the background check reaches an edited old block, that block could be served by Deliver;
every receiver checks each block it is handed against the chain and the orderer signatures, so
it is refused there, not accepted.
"""

from __future__ import annotations

from collections.abc import Iterable

from dltmw.core.block import block_hash, chain_error
from dltmw.core.errors import InvariantViolation
from dltmw.v1 import block_pb2

OPEN_CHECK_BLOCKS = 16
CHECK_CHUNK_BLOCKS = 512
CHECK_CHUNK_BYTES = 8 * 1024 * 1024  # block data per chunk, about (a chunk is one thread hop)


def check_rows(
    name: str, rows: Iterable[tuple[int, bytes, bytes]], first: int, previous: bytes
) -> tuple[int, bytes]:
    """Check stored (number, hash, data) rows, in order from block `first` whose predecessor's
    hash is `previous`: each links, its stored hash is its header's, its data matches its
    header. Returns (the number after the last row, the last hash); raises InvariantViolation."""
    expected, channel = first, None
    for number, stored_hash, data in rows:
        block = block_pb2.Block.FromString(data)
        channel = channel if channel is not None else block.header.channel_id
        err = chain_error(block, channel, expected, previous)
        if err is None and block_hash(block) != stored_hash:
            err = f"stored hash of block {number} differs from its header hash"
        if err is not None:
            raise InvariantViolation(f"{name}: hash chain broken: {err}")
        previous, expected = bytes(stored_hash), expected + 1
    return expected, previous


def tail_start(last_number: int) -> int:
    """The first block the open check reads, given the highest stored block number."""
    return max(0, last_number - OPEN_CHECK_BLOCKS + 1)
