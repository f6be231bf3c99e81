"""Merkle trees: a block's transactions (the root in the header, inclusion paths in commit
proofs) and a notary's batch of decisions (one signature over the root, a proof per answer).

Shape and hashing are those of RFC 6962 (Certificate Transparency) §2.1, so the definition is
language-independent and well studied: a leaf is SHA-256(0x00 || item), an inner node is
SHA-256(0x01 || left || right), the split of n > 1 items is at the largest power of two below
n, and the empty tree's root is SHA-256(""). The 0x00/0x01 prefixes keep a leaf from passing
for an inner node (the second-preimage attack on plain Merkle trees). Items here are the
SHA-256 digests of a block's envelopes, so the tree commits to the exact bytes ordered.

Verification (`root_from_path`) is RFC 9162 §2.1.3.2: it walks the path from the leaf using
the index and the tree size, and rejects a path of the wrong length for that position, so a
path for index i cannot be replayed as the path of another index or of a tree of another size.
Everything is pure and bounded: a tree holds at most `LEAVES_MAX` items (far above any block),
a path at most 64 hashes. `Tree` keeps every level, so all n proofs of a batch cost O(n) hashes
to build and O(log n) each to read (the RFC's recursive definition, `inclusion_path` of one
item, recomputes subtrees per proof); the left-balanced level-by-level build — pair the nodes
of a level, carry an odd last one up unchanged — is the same tree as the recursive split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

LEAVES_MAX = 1 << 32
PATH_MAX = 64
HASH_BYTES = 32


def leaf_hash(item: bytes) -> bytes:
    """RFC 6962 leaf hash of `item`."""
    return hashlib.sha256(b"\x00" + item).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 inner-node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(_root(leaves[:k]), _root(leaves[k:]))


def merkle_root(items: Sequence[bytes]) -> bytes:
    """Root of the tree over `items` (SHA-256("") for none)."""
    if not items:
        return hashlib.sha256(b"").digest()
    return _root([leaf_hash(i) for i in items])


def tx_root(envelopes: Sequence[bytes]) -> bytes:
    """A block's tx_root: the Merkle root over the SHA-256 digest of each envelope, in order."""
    return merkle_root([hashlib.sha256(e).digest() for e in envelopes])


def inclusion_path(items: Sequence[bytes], index: int) -> list[bytes]:
    """The sibling hashes from leaf `index` up to the root (RFC 6962 audit path)."""
    if not 0 <= index < len(items):
        raise ValueError(f"index {index} outside a tree of {len(items)}")
    return list(Tree(items).proof(index).path)


class Proof(NamedTuple):
    """Where an item sits (index among count items) and its sibling hashes, leaf to root.
    (A NamedTuple: a notary builds one per transaction it signs, where a frozen dataclass cost
    ~2 µs more; immutable all the same.)"""

    index: int  # type: ignore[assignment]  # shadows tuple.index, which no caller uses
    count: int  # type: ignore[assignment]  # shadows tuple.count, likewise
    path: tuple[bytes, ...]


class Tree:
    """Every level of the tree over `items` (module docstring), for many proofs of one tree."""

    def __init__(self, items: Sequence[bytes]) -> None:
        if not 0 < len(items) <= LEAVES_MAX:
            raise ValueError(f"a Merkle tree holds 1 to {LEAVES_MAX} items, not {len(items)}")
        levels = [[leaf_hash(i) for i in items]]
        while len(levels[-1]) > 1:
            below = levels[-1]
            up = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            if len(below) % 2:
                up.append(below[-1])
            levels.append(up)
        self._levels = levels

    @property
    def root(self) -> bytes:
        """The root hash (equal to `merkle_root` of the same items)."""
        return self._levels[-1][0]

    def proofs(self) -> list[Proof]:
        """The inclusion proof of every item, in order (`proof` of each).

        Built top-down, one step per node rather than per leaf and level: a node's path is its
        sibling (if it has one; an odd last node is carried up unchanged) followed by its
        parent's path, and the leaves' paths are the bottom level's. A notary builds every
        proof of each batch it signs (every member of a cluster, per slot), and n log n appends in
        Python took twice this: 160 against 80 µs for 200 leaves (RESULTS.md 2026-12-04, ncl8)."""
        levels = self._levels
        paths: list[tuple[bytes, ...]] = [()]  # the root's
        for level in reversed(levels[:-1]):
            width, up = len(level), paths
            paths = []
            add = paths.append
            for k, parent in enumerate(up):
                left = 2 * k
                if left + 1 < width:  # `+`, not `(x, *parent)`: ~15 % less here, measured
                    add((level[left + 1],) + parent)  # noqa: RUF005
                    add((level[left],) + parent)  # noqa: RUF005
                else:  # the odd last node, carried up: no sibling at this level
                    add(parent)
        count = len(levels[0])
        return [Proof(index, count, path) for index, path in enumerate(paths)]

    def proof(self, index: int) -> Proof:
        """The inclusion proof of item `index`."""
        count = len(self._levels[0])
        if not 0 <= index < count:
            raise IndexError(f"leaf {index} of {count}")
        path: list[bytes] = []
        i = index
        for level in self._levels[:-1]:
            if i ^ 1 < len(level):  # else the node is carried up unchanged: no sibling
                path.append(level[i ^ 1])
            i >>= 1
        return Proof(index, count, tuple(path))


def root_of(item: bytes, proof: Proof) -> bytes | None:
    """`root_from_path` of a `Proof`."""
    return root_from_path(item, proof.index, proof.count, proof.path)


def root_from_path(item: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that `path` leads to from `item` at `index` in a tree of `size` items, or None
    when the path cannot be a path of that position (wrong length, bad hash size).

    The hashes are `leaf_hash` and `node_hash` written out (one `sha256` call each, no Python
    call around it): every node checks every agreement of every private transaction through
    its batch proof (11 per transaction and node with 10 recipients), and the calls were ~40 %
    of the commit rule's time once its signatures were remembered (benchmarks/RESULTS.md,
    branch priv9)."""
    if not 0 <= index < size <= LEAVES_MAX or len(path) > PATH_MAX:
        return None
    for p in path:
        if len(p) != HASH_BYTES:
            return None
    sha256 = hashlib.sha256
    fn, sn = index, size - 1
    r = sha256(b"\x00" + item).digest()  # leaf_hash
    for p in path:
        if sn == 0:
            return None  # the path is longer than this position's
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r).digest()  # node_hash(p, r)
            if not fn & 1:
                fn, sn = fn >> 1, sn >> 1
                while not fn & 1 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = sha256(b"\x01" + r + p).digest()  # node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None
