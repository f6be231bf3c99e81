"""MVCC validation of a block (dltmw.core.validation.validate_block), Fabric semantics.

Pure level: the committed versions, committed ranges and committed tx ids are passed in, so every
case is a table row. A Hypothesis property checks point reads/writes against a naive sequential
model (apply the transactions one by one; a transaction is valid iff every read still matches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.rwset import StateWrite, Version
from dltmw.core.validation import (
    DUPLICATE_TXID,
    MVCC_READ_CONFLICT,
    PHANTOM_READ_CONFLICT,
    VALID,
    TxForMvcc,
    reads_of,
    validate_block,
)
from dltmw.v1 import rwset_pb2, transaction_pb2

NS = "bank"
BAD_SIG = transaction_pb2.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE
ENDORSEMENT_FAILURE = transaction_pb2.TX_VALIDATION_CODE_ENDORSEMENT_POLICY_FAILURE

Read = tuple[str, Version | None]


def kv_read(key: str, version: Version | None) -> rwset_pb2.KVRead:
    if version is None:
        return rwset_pb2.KVRead(key=key)
    return rwset_pb2.KVRead(key=key, version=version.to_proto())


def rwset(
    reads: Sequence[Read] = (),
    writes: Sequence[str] = (),
    deletes: Sequence[str] = (),
    ranges: Sequence[tuple[str, str, Sequence[Read]]] = (),
) -> rwset_pb2.ReadWriteSet:
    return rwset_pb2.ReadWriteSet(
        namespace=NS,
        reads=[kv_read(k, v) for k, v in reads],
        range_queries=[
            rwset_pb2.RangeQueryInfo(
                start_key=start, end_key=end, reads=[kv_read(k, v) for k, v in recorded]
            )
            for start, end, recorded in ranges
        ],
        writes=[rwset_pb2.KVWrite(key=k, value=f"{k}-new".encode()) for k in writes]
        + [rwset_pb2.KVWrite(key=k, is_delete=True) for k in deletes],
    )


def tx(tx_id: str, rw: rwset_pb2.ReadWriteSet | None, code: int = VALID) -> TxForMvcc:
    return TxForMvcc(tx_id=tx_id, code=code, rwset=rw)


V1, V2, V3 = Version(1, 0), Version(2, 0), Version(3, 0)
COMMITTED = {(NS, "A"): V1, (NS, "B"): V2, (NS, "C"): V3}
BLOCK = 4


# --- the JPX paper's Figure 8 -----------------------------------------------------------------


def test_figure8_payment_conflicts_with_earlier_deposit_in_the_same_block() -> None:
    txs = [
        tx("deposit", rwset(reads=[("A", V1)], writes=["A"])),
        tx("withdraw", rwset(reads=[("B", V2)], writes=["B"])),
        tx("payment", rwset(reads=[("A", V1), ("C", V3)], writes=["A", "C"])),
    ]
    codes, writes = validate_block(BLOCK, txs, COMMITTED, {}, set())
    assert codes == [VALID, VALID, MVCC_READ_CONFLICT]
    assert writes == [
        StateWrite(NS, "A", b"A-new", Version(BLOCK, 0)),
        StateWrite(NS, "B", b"B-new", Version(BLOCK, 1)),
    ]
    assert not any(w.key == "C" for w in writes)


# --- table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    txs: tuple[TxForMvcc, ...]
    codes: tuple[int, ...]
    written: tuple[tuple[str, Version | None], ...]  # (key, version) of each write; None=delete
    ranges: tuple[tuple[tuple[str, str, str], tuple[tuple[str, Version], ...]], ...] = ()
    committed_tx_ids: frozenset[str] = frozenset()


CASES = [
    Case(
        txs=(tx("t1", rwset(reads=[("X", None)], writes=["X"])),),
        codes=(VALID,),
        written=(("X", Version(BLOCK, 0)),),
    ),
    Case(
        txs=(
            tx("t1", rwset(writes=["X"])),
            tx("t2", rwset(reads=[("X", None)], writes=["X"])),
        ),
        codes=(VALID, MVCC_READ_CONFLICT),
        written=(("X", Version(BLOCK, 0)),),
    ),
    Case(
        txs=(tx("t1", rwset(reads=[("A", Version(0, 7))], writes=["A"])),),
        codes=(MVCC_READ_CONFLICT,),
        written=(),
    ),
    Case(
        txs=(
            tx("t1", rwset(reads=[("A", V1)], writes=["A"]), code=BAD_SIG),
            tx("t2", rwset(reads=[("A", V1)], writes=["A"])),
        ),
        codes=(BAD_SIG, VALID),
        written=(("A", Version(BLOCK, 1)),),
    ),
    Case(
        txs=(
            tx("t1", rwset(deletes=["A"])),
            tx("t2", rwset(reads=[("A", V1)], writes=["A"])),
        ),
        codes=(VALID, MVCC_READ_CONFLICT),
        written=(("A", None),),
    ),
    Case(
        txs=(tx("t1", rwset(reads=[("A", V1)], writes=["A"])),),
        codes=(DUPLICATE_TXID,),
        written=(),
        committed_tx_ids=frozenset({"t1"}),
    ),
    Case(
        txs=(
            tx("t1", rwset(writes=["A"])),
            tx("t1", rwset(writes=["B"])),
        ),
        codes=(VALID, DUPLICATE_TXID),
        written=(("A", Version(BLOCK, 0)),),
    ),
    Case(
        txs=(
            tx("t1", rwset(writes=["k2"])),
            tx("t2", rwset(ranges=[("k", "l", [("k1", V1)])], writes=["Z"])),
        ),
        codes=(VALID, PHANTOM_READ_CONFLICT),
        written=(("k2", Version(BLOCK, 0)),),
        ranges=((("bank", "k", "l"), (("k1", V1),)),),
    ),
    Case(
        txs=(
            tx("t1", rwset(writes=["m9"])),
            tx("t2", rwset(ranges=[("k", "l", [("k1", V1)])], writes=["Z"])),
        ),
        codes=(VALID, VALID),
        written=(("m9", Version(BLOCK, 0)), ("Z", Version(BLOCK, 1))),
        ranges=((("bank", "k", "l"), (("k1", V1),)),),
    ),
    Case(
        txs=(
            tx("t1", rwset(ranges=[("k", "l", [("k1", V1)])], writes=["Z"])),
            tx("t2", rwset(ranges=[("k", "", [("k1", V1)])], writes=["Y"])),
        ),
        codes=(VALID, VALID),
        written=(("Z", Version(BLOCK, 0)), ("Y", Version(BLOCK, 1))),
        ranges=(
            (("bank", "k", "l"), (("k1", V1),)),
            (("bank", "k", ""), (("k1", V1),)),
        ),
    ),
    Case(
        txs=(
            tx("t1", rwset(writes=["k1"])),
            tx("t2", rwset(ranges=[("k", "l", [("k1", V1)])], writes=["Z"])),
        ),
        codes=(VALID, PHANTOM_READ_CONFLICT),
        written=(("k1", Version(BLOCK, 0)),),
        ranges=((("bank", "k", "l"), (("k1", V1),)),),
    ),
    Case(
        txs=(
            tx("t1", rwset(reads=[("A", Version(0, 1))], writes=["A", "B"])),
            tx("t2", rwset(writes=["C"]), code=ENDORSEMENT_FAILURE),
            tx("t3", rwset(reads=[("B", V2)], writes=["B"])),
        ),
        codes=(MVCC_READ_CONFLICT, ENDORSEMENT_FAILURE, VALID),
        written=(("B", Version(BLOCK, 2)),),
    ),
]
IDS = [
    "read-of-absent-key-still-absent-is-valid",
    "absent-key-created-earlier-in-block-conflicts",
    "stale-version-conflicts",
    "invalid-earlier-tx-does-not-affect-later-ones",
    "delete-then-read-conflicts",
    "tx-id-already-committed-is-duplicate",
    "second-of-two-equal-tx-ids-in-block-is-duplicate",
    "range-gains-a-key-from-earlier-tx-is-phantom",
    "range-unchanged-by-out-of-range-write-is-valid",
    "bounded-and-unbounded-ranges-unchanged-are-valid",
    "range-key-rewritten-at-new-version-is-phantom",
    "invalid-txs-write-nothing",
]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_validate_block(case: Case) -> None:
    codes, writes = validate_block(
        BLOCK, case.txs, COMMITTED, dict(case.ranges), set(case.committed_tx_ids)
    )
    assert codes == list(case.codes)
    got = [(w.key, None if w.value is None else w.version) for w in writes]
    assert got == list(case.written)


def test_delete_write_has_no_value_and_block_version() -> None:
    _, writes = validate_block(BLOCK, [tx("t1", rwset(deletes=["A"]))], COMMITTED, {}, set())
    assert writes == [StateWrite(NS, "A", None, Version(BLOCK, 0))]


def test_duplicate_txid_wins_over_a_failed_pre_check() -> None:
    txs = [tx("t1", rwset(writes=["A"])), tx("t1", rwset(writes=["B"]), code=BAD_SIG)]
    codes, _ = validate_block(BLOCK, txs, COMMITTED, {}, set())
    assert codes == [VALID, DUPLICATE_TXID]


def test_reads_of_collects_only_valid_txs_keys_and_ranges() -> None:
    txs = [
        tx("t1", rwset(reads=[("A", V1)], ranges=[("k", "l", [])])),
        tx("t2", rwset(reads=[("B", V2)]), code=BAD_SIG),
        tx("t3", None),
    ]
    assert reads_of(txs) == ({(NS, "A")}, {(NS, "k", "l")})


# --- property: agrees with a naive sequential model ------------------------------------------

KEYS = ("a", "b", "c", "d")
VERSION_POOL = (None, Version(1, 0), Version(2, 0), *(Version(BLOCK, i) for i in range(6)))

versions = st.sampled_from(VERSION_POOL)
point_tx = st.tuples(
    st.dictionaries(st.sampled_from(KEYS), versions, max_size=3),  # reads: key -> version
    st.dictionaries(st.sampled_from(KEYS), st.booleans(), max_size=3),  # writes: key -> delete?
    st.booleans(),  # pre-validation passed?
)


def naive(
    committed: dict[str, Version],
    block: Sequence[tuple[dict[str, Version | None], dict[str, bool], bool]],
) -> tuple[list[int], list[tuple[str, Version | None]]]:
    state: dict[str, Version | None] = dict(committed)
    codes: list[int] = []
    writes: list[tuple[str, Version | None]] = []
    for index, (reads, wr, pre_ok) in enumerate(block):
        if not pre_ok:
            codes.append(BAD_SIG)
            continue
        if any(state.get(k) != v for k, v in reads.items()):
            codes.append(MVCC_READ_CONFLICT)
            continue
        codes.append(VALID)
        for key, is_delete in wr.items():
            state[key] = None if is_delete else Version(BLOCK, index)
            writes.append((key, state[key]))
    return codes, writes


@settings(max_examples=200, deadline=None)
@given(
    committed=st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VERSION_POOL[1:3])),
    block=st.lists(point_tx, max_size=6),
)
def test_validate_block_matches_naive_sequential_model(
    committed: dict[str, Version],
    block: list[tuple[dict[str, Version | None], dict[str, bool], bool]],
) -> None:
    txs = [
        tx(
            f"tx{i}",
            rwset(
                reads=list(reads.items()),
                writes=[k for k, d in wr.items() if not d],
                deletes=[k for k, d in wr.items() if d],
            ),
            code=VALID if pre_ok else BAD_SIG,
        )
        for i, (reads, wr, pre_ok) in enumerate(block)
    ]
    # The rwset helper puts puts before deletes; order the model's writes the same way.
    ordered = [
        (reads, dict(sorted(wr.items(), key=lambda kv: kv[1])), ok) for reads, wr, ok in block
    ]
    codes, writes = validate_block(
        BLOCK, txs, {(NS, k): v for k, v in committed.items()}, {}, set()
    )
    want_codes, want_writes = naive(committed, ordered)
    assert codes == want_codes
    assert [(w.key, None if w.value is None else w.version) for w in writes] == want_writes
    assert all(w.version.block_number == BLOCK for w in writes)
