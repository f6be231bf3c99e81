"""The Merkle tree behind batch signatures: every leaf's proof leads to the root, the tree is
RFC 6962's (checked against the recursive definition), and any other leaf, index or path
leads elsewhere."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dltmw.core.merkle import (
    Proof,
    Tree,
    inclusion_path,
    leaf_hash,
    merkle_root,
    node_hash,
    root_of,
)


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) as RFC 6962 section 2.1 defines it (recursive, k = largest power of 2 < n)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(rfc6962_root(leaves[:k]), rfc6962_root(leaves[k:]))


def items_of(n: int) -> list[bytes]:
    return [f"tx{i}".encode() for i in range(n)]


@pytest.mark.parametrize("n", [*range(1, 34), 100, 500, 1000])
def test_every_leaf_proves_into_the_rfc6962_root(n: int) -> None:
    items = items_of(n)
    tree = Tree(items)
    assert tree.root == rfc6962_root([leaf_hash(i) for i in items]) == merkle_root(items)
    for i in range(n) if n <= 100 else (0, 1, n // 2, n - 2, n - 1):
        proof = tree.proof(i)
        assert proof == Proof(i, n, proof.path) and len(proof.path) <= (n - 1).bit_length()
        assert list(proof.path) == inclusion_path(items, i)
        assert root_of(items[i], proof) == tree.root


@pytest.mark.parametrize("n", [*range(1, 70), 500, 1000, 1025])
def test_all_proofs_at_once_are_each_leafs_own_proof(n: int) -> None:
    items = items_of(n)
    tree = Tree(items)
    proofs = tree.proofs()
    assert proofs == [tree.proof(i) for i in range(n)]
    assert all(root_of(item, p) == tree.root for item, p in zip(items, proofs, strict=True))


def test_known_root_of_rfc6962_empty_leaf() -> None:
    # The RFC 9162 test vector: the root of a one-leaf tree over the empty string.
    assert Tree([b""]).root == hashlib.sha256(b"\x00").digest()


@given(st.integers(2, 64), st.data())
def test_any_other_leaf_index_or_path_leads_elsewhere(n: int, data: st.DataObject) -> None:
    leaves = items_of(n)
    tree = Tree(leaves)
    i = data.draw(st.integers(0, n - 1))
    proof = tree.proof(i)
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
    assert root_of(leaves[other], proof) != tree.root  # another tx under this proof
    assert root_of(leaves[i], Proof(other, n, proof.path)) != tree.root
    # (A different count may describe the same path shape — leaf 0 of 33 or of 34 leaves — and
    # then leads to the same root: the proof still puts this leaf, and only it, under the root.)
    if proof.path:
        k = data.draw(st.integers(0, len(proof.path) - 1))
        flipped = bytes([proof.path[k][0] ^ 1]) + proof.path[k][1:]
        path = (*proof.path[:k], flipped, *proof.path[k + 1 :])
        assert root_of(leaves[i], Proof(i, n, path)) != tree.root
        assert root_of(leaves[i], Proof(i, n, proof.path[:-1])) is None  # too short
    assert root_of(leaves[i], Proof(i, n, (*proof.path, bytes(32)))) is None  # too long


@pytest.mark.parametrize(
    "proof",
    [Proof(3, 3, ()), Proof(-1, 3, ()), Proof(0, 0, ()), Proof(0, 2, (b"short",))],
    ids=["index-past-count", "negative-index", "no-leaves", "short-hash"],
)
def test_impossible_proofs_lead_nowhere(proof: Proof) -> None:
    assert root_of(b"x", proof) is None


def test_a_tree_needs_a_leaf_and_a_proof_a_leaf_in_it() -> None:
    with pytest.raises(ValueError):
        Tree([])
    with pytest.raises(IndexError):
        Tree(items_of(3)).proof(3)
