"""The checkers of scenario (a) notice each violation they exist for (on hand-made chains)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dltmw.core.rwset import Version
from dltmw.core.statehash import accumulate
from dltmw.sim.ledger_checks import (
    Ack,
    Chain,
    TxOnChain,
    check_exactly_once,
    check_one_chain,
    check_ordered,
    check_replay,
)
from dltmw.v1 import rwset_pb2, transaction_pb2

T = transaction_pb2
VALID, MVCC = T.TX_VALIDATION_CODE_VALID, T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT
DUP = T.TX_VALIDATION_CODE_DUPLICATE_TXID


def rw(reads: dict[str, Version | None], writes: dict[str, bytes]) -> rwset_pb2.ReadWriteSet:
    out = rwset_pb2.ReadWriteSet(namespace="bank")
    for key, version in reads.items():
        read = out.reads.add(key=key)
        if version is not None:
            read.version.CopyFrom(version.to_proto())
    for key, value in writes.items():
        out.writes.add(key=key, value=value)
    return out


# block 1: open A; block 2: deposit A (reads A@1/0) then payment A (also reads A@1/0: conflict)
TXS = (
    TxOnChain(1, 0, "t-open", VALID, rw({"A": None}, {"A": b"10"})),
    TxOnChain(2, 0, "t-deposit", VALID, rw({"A": Version(1, 0)}, {"A": b"15"})),
    TxOnChain(2, 1, "t-pay", MVCC, rw({"A": Version(1, 0)}, {"A": b"7"})),
)
STATE = {("bank", "A"): (b"15", Version(2, 0))}
HASH = accumulate([("bank", "A", b"15", Version(2, 0))]).digest()
GOOD = Chain("p1", (b"g", b"b1", b"b2"), TXS, STATE, HASH)
ACKS = [Ack("t-deposit", VALID, 2, 0), Ack("t-pay", MVCC, 2, 1)]


def test_a_consistent_run_passes_every_checker() -> None:
    other = replace(GOOD, node="p2")
    orderer = Chain("o", GOOD.hashes, (), {}, b"")
    assert check_one_chain([GOOD, other], [orderer]) == []
    assert check_exactly_once(GOOD, ACKS) == []
    assert check_replay(GOOD) == []


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        pytest.param(replace(GOOD, node="p2", hashes=(b"g", b"XX", b"b2")), "fork", id="fork"),
        pytest.param(
            replace(GOOD, node="p2", txs=(*TXS[:2], replace(TXS[2], code=VALID))),
            "codes",
            id="different-codes",
        ),
    ],
)
def test_one_chain_notices(other: Chain, expected: str) -> None:
    assert [v.split(":")[0] for v in check_one_chain([GOOD, other], [])] == [expected]


@pytest.mark.parametrize(
    ("chain", "acks", "expected"),
    [
        pytest.param(
            replace(GOOD, txs=(*TXS, TxOnChain(3, 0, "t-deposit", VALID, None))),
            [],
            "twice",
            id="committed-twice",
        ),
        pytest.param(GOOD, [Ack("t-never", VALID, 3, 0)], "lost", id="acknowledged-but-lost"),
        pytest.param(GOOD, [Ack("t-pay", VALID, 2, 1)], "misreported", id="wrong-code"),
        pytest.param(GOOD, [Ack("t-pay", MVCC, 2, 0)], "misreported", id="wrong-place"),
    ],
)
def test_exactly_once_notices(chain: Chain, acks: list[Ack], expected: str) -> None:
    assert [v.split(":")[0] for v in check_exactly_once(chain, acks)] == [expected]


def test_a_duplicate_marked_as_such_is_not_committed_twice() -> None:
    chain = replace(GOOD, txs=(*TXS, TxOnChain(3, 0, "t-deposit", DUP, None)))
    assert check_exactly_once(chain, ACKS) == []


def test_every_envelope_an_orderer_accepted_is_in_exactly_one_block() -> None:
    """An accepted envelope in no block, or committed twice, is reported; a DUPLICATE_TXID copy
    is not a second commit; a tx accepted by two orderers is judged once per orderer."""
    accepted = [("o1", "t-pay"), ("o2", "t-pay"), ("o1", "t-deposit")]
    assert check_ordered(GOOD, accepted) == []
    copied = replace(GOOD, txs=(*TXS, TxOnChain(3, 0, "t-deposit", DUP, None)))
    assert check_ordered(copied, accepted) == []
    twice = replace(GOOD, txs=(*TXS, TxOnChain(3, 0, "t-deposit", VALID, None)))
    assert check_ordered(twice, accepted) == ["accepted by o1 but in 2 blocks of p1: t-deposit"]
    lost = check_ordered(GOOD, [*accepted, ("o2", "t-gone")])
    assert lost == ["accepted by o2 but in 0 blocks of p1: t-gone"]


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        pytest.param(
            replace(GOOD, txs=(*TXS[:2], replace(TXS[2], code=VALID))),
            ["mvcc", "state", "state hash"],
            id="stale-read-committed",
        ),
        pytest.param(
            replace(GOOD, txs=(TXS[0], replace(TXS[1], code=MVCC), TXS[2])),
            ["mvcc", "mvcc", "state", "state hash"],
            id="fresh-read-refused",
        ),
        pytest.param(
            replace(GOOD, state={("bank", "A"): (b"16", Version(2, 0))}),
            ["state"],
            id="state-edited",
        ),
        pytest.param(replace(GOOD, state_hash=b"x" * 32), ["state hash"], id="hash-edited"),
    ],
)
def test_replay_notices(chain: Chain, expected: list[str]) -> None:
    assert [v.split(":")[0] for v in check_replay(chain)] == expected


# block 1: open H at 10; block 2: withdraw 8 (delta, VALID), withdraw 5 (would go to -3: bound)
def delta_rw(amount: int) -> rwset_pb2.ReadWriteSet:
    out = rwset_pb2.ReadWriteSet(namespace="bank")
    out.deltas.add(key="H", amount=amount, min=0)
    return out


BOUND = T.TX_VALIDATION_CODE_DELTA_BOUND_VIOLATED
DELTA_TXS = (
    TxOnChain(1, 0, "t-open", VALID, rw({"H": None}, {"H": b"10"})),
    TxOnChain(2, 0, "t-w8", VALID, delta_rw(-8)),
    TxOnChain(2, 1, "t-w5", BOUND, delta_rw(-5)),
)
DELTA_STATE = {("bank", "H"): (b"2", Version(2, 0))}
DELTA_GOOD = Chain(
    "p1",
    (b"g", b"b1", b"b2"),
    DELTA_TXS,
    DELTA_STATE,
    accumulate([("bank", "H", b"2", Version(2, 0))]).digest(),
)


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        pytest.param(DELTA_GOOD, [], id="deltas-replayed"),
        pytest.param(
            replace(DELTA_GOOD, txs=(*DELTA_TXS[:2], replace(DELTA_TXS[2], code=VALID))),
            ["mvcc", "state", "state hash"],
            id="overdraft-committed",
        ),
        pytest.param(
            replace(
                DELTA_GOOD, txs=(DELTA_TXS[0], replace(DELTA_TXS[1], code=BOUND), DELTA_TXS[2])
            ),
            ["mvcc", "mvcc", "state", "state hash"],
            id="covered-withdrawal-refused",
        ),
        pytest.param(
            replace(DELTA_GOOD, state={("bank", "H"): (b"5", Version(2, 0))}),
            ["state"],
            id="delta-state-edited",
        ),
    ],
)
def test_replay_of_deltas_notices(chain: Chain, expected: list[str]) -> None:
    assert [v.split(":")[0] for v in check_replay(chain)] == expected
