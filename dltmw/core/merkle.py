"""Merkle trees with inclusion proofs (RFC 6962 / RFC 9162 hashing), for anything that signs
many items at once and must let each item be checked alone.

Why a tree: one signature over a root stands for every leaf, and a leaf's proof is
ceil(log2 n) hashes, so signing a batch of n decisions costs one signature instead of n, while
each holder can still check its own item offline, forever, without the others.

Hashing: leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right) — the domain bytes
keep a leaf from posing as a node (second-preimage attacks). The tree is the left-balanced one
of RFC 6962 (built level by level, an odd last node carried up unchanged), so a proof is fixed
by the leaf's index and the leaf count; a verifier recomputes the root from leaf, index, count
and path and compares it (or checks a signature over it). Any other index, count or path gives
another root.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

HASH_BYTES = 32
# A tree of 2**32 leaves has paths of at most 32 hashes; anything longer is not a proof.
MAX_PATH = 32


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True)
class Proof:
    """Where a leaf sits (index among count leaves) and its sibling hashes, leaf to root."""

    index: int
    count: int
    path: tuple[bytes, ...]


class Tree:
    """All levels of the tree over `leaves` (already leaf-hashed), so every proof is a walk up
    the levels: O(n) hashes to build, O(log n) per proof."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        levels = [list(leaves)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            up = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                up.append(below[-1])
            levels.append(up)
        self._levels = levels

    @property
    def root(self) -> bytes:
        """The root hash."""
        return self._levels[-1][0]

    def proof(self, index: int) -> Proof:
        """The inclusion proof of leaf `index`."""
        count = len(self._levels[0])
        if not 0 <= index < count:
            raise IndexError(f"leaf {index} of {count}")
        path: list[bytes] = []
        i = index
        for level in self._levels[:-1]:
            sibling = i ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            i >>= 1
        return Proof(index, count, tuple(path))


def root_of(leaf: bytes, proof: Proof) -> bytes | None:
    """The root that `leaf` (leaf-hashed) and `proof` lead to, or None when the proof cannot be
    one for a tree of `proof.count` leaves (index out of range, path too short or too long, a
    path entry of the wrong size)."""
    index, size = proof.index, proof.count
    if not 0 <= index < size or len(proof.path) > MAX_PATH:
        return None
    if any(len(p) != HASH_BYTES for p in proof.path):
        return None
    hashes = iter(proof.path)
    node = leaf
    while size > 1:
        if index ^ 1 < size:  # a sibling exists at this level; else the node is carried up
            sibling = next(hashes, None)
            if sibling is None:
                return None
            node = node_hash(sibling, node) if index & 1 else node_hash(node, sibling)
        index >>= 1
        size = (size + 1) >> 1
    if next(hashes, None) is not None:
        return None
    return node
