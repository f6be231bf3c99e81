"""Blocks and the hash chain.

A block's identity is its header hash (see `hashing.header_hash`); orderers sign that hash, and
each block names its predecessor's hash, so a peer that holds block n can check any block n+1
it is handed without trusting the sender beyond the orderer signatures. Metadata (signatures,
validation codes) is outside the hash: each peer writes its own validation codes.

Header versions: every block made now carries `tx_root`, the Merkle root of its envelopes
(`core/merkle.py`), and its hash covers it (`header_hash_v2`), so an orderer signature over the
hash also vouches for each transaction's inclusion path (commit proofs, docs/cross-channel.md).
Blocks made before that have an empty tx_root and keep their version-1 hash, so old ledgers stay
verifiable; `block_hash` picks the version from the header itself. Stripping a tx_root changes
the hash and so voids the orderer signatures: a block cannot be passed off as the other version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from dltmw.core.errors import InvariantViolation
from dltmw.core.hashing import ZERO_HASH, header_hash, header_hash_v2
from dltmw.core.merkle import merkle_root
from dltmw.v1 import block_pb2


@dataclass(frozen=True)
class TxRecord:
    """Where a transaction was committed and its verdict on this node."""

    block_number: int
    tx_index: int
    code: int


def make_block(
    channel_id: str,
    number: int,
    previous_hash: bytes,
    envelopes: Sequence[bytes],
    digests: Sequence[bytes] = (),
) -> block_pb2.Block:
    """Build an unsigned block over `envelopes` (kept as the exact bytes received); `digests`:
    their SHA-256 digests when the caller holds them already (a PBFT-lite replica hashed each
    envelope once, at receipt), else () and they are computed here."""
    if number == 0 and previous_hash != ZERO_HASH:
        raise InvariantViolation("block 0 must have the zero previous hash")
    data_digest, root = content_hashes(envelopes, digests)
    return block_pb2.Block(
        header=block_pb2.BlockHeader(
            channel_id=channel_id,
            number=number,
            previous_hash=previous_hash,
            data_hash=data_digest,
            tx_root=root,
        ),
        data=block_pb2.BlockData(envelopes=list(envelopes)),
        metadata=block_pb2.BlockMetadata(),
    )


def content_hashes(envelopes: Sequence[bytes], known: Sequence[bytes] = ()) -> tuple[bytes, bytes]:
    """(data_hash, tx_root) of a block's envelopes, hashing each envelope once: data_hash is
    SHA-256 over the envelopes' SHA-256 digests (`hashing.data_hash`), tx_root the Merkle root
    over the same digests (`merkle.tx_root`). `known`: those digests, if the caller has them."""
    if known and len(known) != len(envelopes):
        raise InvariantViolation("one known digest per envelope")
    digests = list(known) if known else [hashlib.sha256(e).digest() for e in envelopes]
    return hashlib.sha256(b"".join(digests)).digest(), merkle_root(digests)


def data_error(block: block_pb2.Block) -> str | None:
    """Why the header's data_hash or tx_root (when set) does not match the block's
    envelopes, or None."""
    h = block.header
    data_digest, root = content_hashes(block.data.envelopes)
    if h.data_hash != data_digest:
        return f"block {h.number} data hash does not match its transactions"
    if h.tx_root and h.tx_root != root:
        return f"block {h.number} tx_root does not match its transactions"
    return None


def block_hash(block: block_pb2.Block) -> bytes:
    """The block's hash, computed from its header fields."""
    return header_block_hash(block.header)


def header_block_hash(h: block_pb2.BlockHeader) -> bytes:
    """The hash of a block with header `h`: version 2 when it has a tx_root, else version 1."""
    if h.tx_root:
        return header_hash_v2(h.channel_id, h.number, h.previous_hash, h.data_hash, h.tx_root)
    return header_hash(h.channel_id, h.number, h.previous_hash, h.data_hash)


def chain_error(
    block: block_pb2.Block, channel_id: str, expected_number: int, previous_hash: bytes
) -> str | None:
    """Why `block` cannot follow a chain whose next number and last hash are given, or None."""
    h = block.header
    if h.channel_id != channel_id:
        return f"block is for channel {h.channel_id!r}, expected {channel_id!r}"
    if h.number != expected_number:
        return f"block number {h.number}, expected {expected_number}"
    if h.previous_hash != previous_hash:
        return f"block {h.number} does not link to the previous block's hash"
    return data_error(block)


def verify_chain(blocks: Sequence[block_pb2.Block], channel_id: str) -> bytes:
    """Check a whole chain from block 0; returns the last hash or raises InvariantViolation."""
    previous = ZERO_HASH
    for n, block in enumerate(blocks):
        err = chain_error(block, channel_id, n, previous)
        if err is not None:
            raise InvariantViolation(f"ledger hash chain broken: {err}")
        previous = block_hash(block)
    return previous
