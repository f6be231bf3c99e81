"""Fabric++ reordering of a batch before it becomes a block (dltmw.core.reorder).

What must hold: the block is a permutation of the batch (nothing dropped, nothing added), the same
batch always gives the same block, readers precede the writers of what they read except for the
deferred transactions, and — over random batches endorsed on the committed state — every
transaction that is not deferred commits VALID when the peers validate the block in its new
order (sequential `validate_block`, the peers' rule). Figure 8 comes out exactly as the paper
shows even with reordering on; the hot account's payment after a delta is saved.
"""

from __future__ import annotations

from collections.abc import Sequence

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


@settings(max_examples=300, deadline=None)
@given(rwsets=st.lists(access, max_size=14))
def test_every_transaction_not_deferred_commits_in_the_new_order(rwsets) -> None:
    accesses = [reorder.access(r) for r in rwsets]
    new = reorder.order(accesses)
    assert sorted(new) == list(range(len(rwsets)))  # a permutation
    assert reorder.order(accesses) == new  # deterministic
    late = reorder.deferred(accesses, reorder.precedence(accesses))
    kept = [i for i in new if i not in late]
    assert new == kept + sorted(late)
    position = {i: p for p, i in enumerate(new)}
    succ = reorder.precedence(accesses)
    for i in kept:
        for j in succ[i]:
            if j not in late:
                assert position[i] < position[j]  # a reader before the writers of what it read
    codes = validate([rwsets[i] for i in new])
    assert all(code == VALID for i, code in zip(new, codes, strict=True) if i not in late)
    batch = [envelope(r) for r in rwsets]
    assert reorder.reorder(batch) == [batch[i] for i in new]
