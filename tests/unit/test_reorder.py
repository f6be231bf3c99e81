"""Fabric++ reordering of a batch before it becomes a block (dltmw.core.reorder).

What must hold: the block is a permutation of the batch (nothing dropped, nothing added), the same
batch always gives the same block, readers precede the writers of what they read except for the
deferred transactions, and — over random batches endorsed on the committed state — every
transaction that is not deferred commits VALID when the peers validate the block in its new
order (sequential `validate_block`, the peers' rule). Figure 8 comes out exactly as the paper
shows even with reordering on; the hot account's payment after a delta is saved. Negative
controls: an identity, lossy, duplicating or call-dependent order, and a precedence without
range edges, are each caught by the property's own check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from controls import counterexample
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core import reorder
from dltmw.core.rwset import Version
from dltmw.core.validation import MVCC_READ_CONFLICT, VALID, TxForMvcc, validate_block
from dltmw.v1 import common_pb2, proposal_pb2, rwset_pb2, transaction_pb2

NS = "bank"
V1 = Version(1, 0)
KEYS = ("a", "b", "c", "d")


def envelope(
    rw: rwset_pb2.ReadWriteSet, kind: int = common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION
) -> bytes:
    response = proposal_pb2.ProposalResponsePayload(rwset=rw)
    tx = transaction_pb2.Transaction(response_payload=response.SerializeToString())
    header = common_pb2.Header(type=kind, tx_id=rw.namespace + str(id(rw)))
    payload = common_pb2.Payload(header=header.SerializeToString(), data=tx.SerializeToString())
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


def rw(
    reads: Sequence[str] = (),
    writes: Sequence[str] = (),
    adds: Sequence[str] = (),
    scan: tuple[str, str] | None = None,
) -> rwset_pb2.ReadWriteSet:
    committed = {k: V1 for k in KEYS}
    return rwset_pb2.ReadWriteSet(
        namespace=NS,
        reads=[rwset_pb2.KVRead(key=k, version=V1.to_proto()) for k in reads],
        range_queries=[
            rwset_pb2.RangeQueryInfo(
                start_key=scan[0],
                end_key=scan[1],
                reads=[
                    rwset_pb2.KVRead(key=k, version=committed[k].to_proto())
                    for k in KEYS
                    if scan[0] <= k < scan[1]
                ],
            )
        ]
        if scan
        else [],
        writes=[rwset_pb2.KVWrite(key=k, value=b"1") for k in writes],
        deltas=[rwset_pb2.KVDelta(key=k, amount=1) for k in adds],
    )


def validate(rwsets: Sequence[rwset_pb2.ReadWriteSet]) -> list[int]:
    txs = [TxForMvcc(f"t{i}", VALID, r) for i, r in enumerate(rwsets)]
    committed = {(NS, k): V1 for k in KEYS}
    values = {(NS, k): b"100" for k in KEYS}
    scans = {(NS, s, e): [(k, V1) for k in KEYS if s <= k < e] for s in KEYS for e in KEYS}
    return validate_block(9, txs, committed, scans, set(), values)[0]


def test_figure8_is_unchanged_with_reordering_on() -> None:
    deposit, withdraw, payment = rw(["a"], ["a"]), rw(["b"], ["b"]), rw(["a", "c"], ["a", "c"])
    batch = [envelope(deposit), envelope(withdraw), envelope(payment)]
    assert reorder.reorder(batch) == batch  # the payment's cycle with the deposit defers it
    assert validate([deposit, withdraw, payment]) == [VALID, VALID, MVCC_READ_CONFLICT]


def test_a_payment_reading_the_hot_account_goes_before_its_deltas() -> None:
    deposit, payment, withdraw = rw(adds=["a"]), rw(["a", "b"], ["a", "b"]), rw(adds=["a"])
    arrival = [deposit, payment, withdraw]
    assert validate(arrival) == [VALID, MVCC_READ_CONFLICT, VALID]
    batch = [envelope(r) for r in arrival]
    assert reorder.reorder(batch) == [batch[1], batch[0], batch[2]]
    assert validate([payment, deposit, withdraw]) == [VALID, VALID, VALID]


def test_a_range_reader_goes_before_a_writer_inside_its_range() -> None:
    insert, scan = rw(writes=["b"]), rw(scan=("a", "c"), writes=["d"])
    batch = [envelope(insert), envelope(scan)]
    assert reorder.reorder(batch) == [batch[1], batch[0]]


def test_what_is_not_an_endorser_transaction_constrains_nothing() -> None:
    other = envelope(rw(["a"], ["a"]), kind=common_pb2.HEADER_TYPE_CONFIG_UPDATE)
    batch = [envelope(rw(writes=["a"])), b"not an envelope", other, envelope(rw(["a"]))]
    # The writer of "a" waits for its reader; the earliest ready transaction goes first.
    assert reorder.reorder(batch) == [batch[1], batch[2], batch[3], batch[0]]


def test_a_cycle_over_two_keys_defers_the_later_arrival() -> None:
    first, second = rw(["a"], ["b"]), rw(["b"], ["a"])
    batch = [envelope(first), envelope(second)]
    assert reorder.reorder(batch) == batch
    assert validate([first, second]) == [VALID, MVCC_READ_CONFLICT]


access = st.builds(
    lambda reads, writes, adds, scan: rw(sorted(reads), sorted(writes - adds), sorted(adds), scan),
    st.sets(st.sampled_from(KEYS), max_size=2),
    st.sets(st.sampled_from(KEYS), max_size=2),
    st.sets(st.sampled_from(KEYS), max_size=1),
    st.one_of(st.none(), st.sampled_from([("a", "c"), ("b", "d"), ("a", "d")])),
)


batches = st.lists(access, max_size=14)


def violations(rwsets: list[rwset_pb2.ReadWriteSet]) -> list[str]:
    """What the reorder gets wrong on one batch (module docstring), each check once."""
    accesses = [reorder.access(r) for r in rwsets]
    new = reorder.order(accesses)
    out = []
    if sorted(new) != list(range(len(rwsets))):
        return ["not a permutation of the batch"]
    if reorder.order(accesses) != new:
        out.append("not deterministic")
    succ = reorder.precedence(accesses)
    late = reorder.deferred(accesses, succ)
    kept = [i for i in new if i not in late]
    if new != kept + sorted(late):
        out.append("deferred transactions not last in arrival order")
    position = {i: p for p, i in enumerate(new)}
    if any(position[i] > position[j] for i in kept for j in succ[i] if j not in late):
        out.append("a reader after the writer of what it read")
    codes = validate([rwsets[i] for i in new])
    if any(code != VALID for i, code in zip(new, codes, strict=True) if i not in late):
        out.append("a transaction not deferred is invalid in the new order")
    batch = [envelope(r) for r in rwsets]
    if reorder.reorder(batch) != [batch[i] for i in new]:
        out.append("reorder(batch) is not the batch in that order")
    return out


@settings(max_examples=300, deadline=None)
@given(rwsets=batches)
def test_every_transaction_not_deferred_commits_in_the_new_order(rwsets) -> None:
    assert violations(rwsets) == []


class Alternating:
    """A valid topological order on every call, but another one on every other call: among the
    ready transactions the earliest arrival, then the latest (a "non-deterministic" order)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, accesses: Sequence[reorder.Access]) -> list[int]:
        self.calls += 1
        succ = reorder.precedence(accesses)
        late = reorder.deferred(accesses, succ)
        waiting = {i: 0 for i in range(len(accesses)) if i not in late}
        for i in waiting:
            for j in succ[i] & waiting.keys():
                waiting[j] += 1
        out: list[int] = []
        while len(out) < len(waiting):
            ready = [i for i, n in waiting.items() if n == 0 and i not in out]
            i = min(ready) if self.calls % 2 else max(ready)
            out.append(i)
            for j in succ[i] & waiting.keys():
                waiting[j] -= 1
        return out + sorted(late)


def _real(accesses: Sequence[reorder.Access]) -> list[int]:
    return ORDER(accesses)


ORDER = reorder.order
BROKEN = {
    "identity-order": (lambda a: list(range(len(a))), "a reader after the writer"),
    "loses-a-transaction": (lambda a: _real(a)[1:], "not a permutation"),
    "duplicates-a-transaction": (lambda a: _real(a)[:1] + _real(a), "not a permutation"),
    "non-deterministic-order": (Alternating(), "not deterministic"),
}


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_negative_control_a_broken_order_is_caught_by_the_property(
    monkeypatch: pytest.MonkeyPatch, broken: tuple[Callable[..., list[int]], str]
) -> None:
    """`reorder.order` replaced by a broken one: the property's own strategy and check find a
    batch with the named violation (`counterexample` fails if they never do)."""
    order, violation = broken
    monkeypatch.setattr(reorder, "order", order)
    found = counterexample(
        batches, lambda rwsets: any(v.startswith(violation) for v in violations(rwsets))
    )
    assert any(v.startswith(violation) for v in violations(found))


def test_negative_control_without_range_edges_a_kept_scan_is_a_phantom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`precedence` without the range edges: the order honours every remaining edge, so only
    the MVCC check of the property (the peers' rule) sees the scans it put after an insert."""
    precedence = reorder.precedence

    def pointwise(accesses: Sequence[reorder.Access]) -> list[set[int]]:
        return precedence([(reads, frozenset(), writes) for reads, _, writes in accesses])

    monkeypatch.setattr(reorder, "precedence", pointwise)
    found = counterexample(batches, lambda rwsets: bool(violations(rwsets)))
    assert violations(found) == ["a transaction not deferred is invalid in the new order"]
