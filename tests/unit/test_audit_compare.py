"""Comparing nodes' audit views (dltmw.core.audit): who is named, at which height, for what."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dltmw.core.audit import (
    BLOCK_HASH_DIFFERS,
    PRIVATE_HASH_DIFFERS,
    PRIVATE_RECOMPUTED_DIFFERS,
    RECOMPUTED_DIFFERS,
    STATE_HASH_DIFFERS,
    first_disagreement,
    odd_ones,
    point_findings,
    private_findings,
    sample,
    self_checks,
)
from dltmw.core.statehash import chain_step
from dltmw.v1 import admin_service_pb2 as A
from dltmw.v1 import privacy_manager_service_pb2 as P

H = [bytes([i]) * 32 for i in range(8)]


def view(node: str, *, peer: bool = True, height: int = 10, **kw: object) -> A.AuditResponse:
    return A.AuditResponse(node_id=node, channel_id="c", height=height, has_state=peer, **kw)  # type: ignore[arg-type]


def chained(node: str, state: list[bytes], blocks: list[bytes], peer: bool = True):  # type: ignore[no-untyped-def]
    v = view(node, peer=peer, height=len(blocks))
    chain = bytes(32)
    for n, (b, s) in enumerate(zip(blocks, state, strict=True)):
        chain = chain_step(chain, s)
        v.points.add(block_number=n, block_hash=b, state_hash=s, state_chain=chain if peer else b"")
    return v


@pytest.mark.parametrize(
    ("values", "named", "why"),
    [
        ({"a": H[0], "b": H[0], "c": H[0]}, [], ""),
        ({"a": H[0], "b": H[0], "c": H[1]}, ["c"], "differs from a, b"),
        ({"a": H[0], "b": H[1]}, ["a", "b"], "no majority: a vs b"),
        ({"a": H[0], "b": H[0], "c": H[1], "d": H[2]}, ["c", "d"], "differs from a, b"),
    ],
    ids=[
        "all-agree",
        "one-of-three-differs",
        "two-disagree-no-majority",
        "majority-of-a-plurality",
    ],
)
def test_odd_ones(values: dict[str, bytes], named: list[str], why: str) -> None:
    assert odd_ones(values) == (named, why)


@given(st.integers(-1, 5000), st.integers(0, 5000))
def test_sample_is_bounded_increasing_and_ends_at_hi(lo: int, extra: int) -> None:
    hi = lo + extra
    got = sample(lo, hi)
    assert len(got) <= 64
    assert got == sorted(set(got))
    assert all(lo < n <= hi for n in got)
    assert (got[-1] == hi) if extra else (got == [])


def test_self_checks_name_a_node_whose_table_differs_from_its_stored_hash() -> None:
    good = view("p1", stored_state_hash=H[1], recomputed_state_hash=H[1])
    edited = view("p2", stored_state_hash=H[1], recomputed_state_hash=H[2])
    private = view(
        "p3",
        stored_state_hash=H[1],
        recomputed_state_hash=H[1],
        has_private=True,
        private_height=7,
        private_stored_state_hash=H[3],
        private_recomputed_state_hash=H[4],
    )
    orderer = view("o", peer=False)
    found = self_checks([good, edited, private, orderer])
    assert [(f.node_id, f.height, f.what) for f in found] == [
        ("p2", 9, RECOMPUTED_DIFFERS),
        ("p3", 6, PRIVATE_RECOMPUTED_DIFFERS),
    ]


def test_first_disagreement_finds_the_first_stored_state_hash_that_differs() -> None:
    blocks = H[:6]
    honest = [H[0], H[1], H[2], H[3], H[4], H[5]]
    fixed_up = [H[0], H[1], H[2], H[7], H[4], H[5]]  # differs at 3 only; the chain from 3 on
    views = [
        chained("p1", honest, blocks),
        chained("p2", honest, blocks),
        chained("p3", fixed_up, blocks),
        chained("o", honest, blocks, peer=False),
    ]
    assert first_disagreement([1, 2, 5], views) == 5
    assert first_disagreement([0, 1, 2], views) is None
    assert first_disagreement(range(6), views) == 3  # type: ignore[arg-type]
    found = point_findings(3, views)
    assert [(f.node_id, f.what, f.detail) for f in found] == [
        ("p3", STATE_HASH_DIFFERS, "differs from p1, p2")
    ]


def test_a_block_hash_difference_is_reported_before_state() -> None:
    views = [
        chained("p1", H[:3], H[:3]),
        chained("p2", H[:3], H[:3]),
        chained("o", H[:3], [H[0], H[1], H[6]], peer=False),
    ]
    assert [(f.node_id, f.what) for f in point_findings(2, views)] == [("o", BLOCK_HASH_DIFFERS)]


def test_private_findings_compare_only_recipients_that_executed() -> None:
    def tx(status: int, state: bytes) -> A.PrivateTxAudit:
        return A.PrivateTxAudit(payload_hash=H[5], block_number=4, status=status, state_hash=state)  # type: ignore[arg-type]

    ex, held = P.PRIVATE_TX_STATUS_EXECUTED, P.PRIVATE_TX_STATUS_NOT_HELD
    agree = {"p1": [tx(ex, H[1])], "p2": [tx(ex, H[1])], "p3": [tx(held, b"")]}
    assert private_findings("c", agree) == []
    differ = {"p1": [tx(ex, H[1])], "p2": [tx(ex, H[1])], "p3": [tx(ex, H[2])]}
    found = private_findings("c", differ)
    assert [(f.node_id, f.height, f.what) for f in found] == [("p3", 4, PRIVATE_HASH_DIFFERS)]
