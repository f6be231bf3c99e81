"""Commutative bounded deltas (issue 13 item 2): the value encoding, validation at commit and
simulation at the endorser (`core/deltas.py`, `core/validation.py`, `core/contract.py`).

Table rows read as specs; a Hypothesis property compares `validate_block` with a naive
sequential model (apply the transactions one by one: reads must match, then every delta must
find an integer and stay in its bounds, else nothing of the transaction applies), on random
blocks of reads, puts and deltas over a few keys: identical codes and final state, no bound ever
broken, and a key only deltas touch ends at its initial value plus the valid deltas.

Negative controls: with the bound check removed or made on the old value, a delta applied
twice or to the committed value (a lost update), or the block validated out of order, the
property's own check and the hot account's find the violation (`controls.counterexample`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from controls import counterexample
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.contracts.bank import BankContract, BankRmwContract
from dltmw.core import deltas, validation
from dltmw.core.contract import Context, Contract, ContractError, DeltaRefused, simulate
from dltmw.core.rwset import StateEntry, StateWrite, Version
from dltmw.core.validation import TxForMvcc, delta_keys_of, validate_block
from dltmw.v1 import proposal_pb2, rwset_pb2, transaction_pb2

T = transaction_pb2
VALID = T.TX_VALIDATION_CODE_VALID
MVCC = T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT
BOUND = T.TX_VALIDATION_CODE_DELTA_BOUND_VIOLATED
NOT_APPLICABLE = T.TX_VALIDATION_CODE_DELTA_NOT_APPLICABLE
MALFORMED = T.TX_VALIDATION_CODE_DELTA_MALFORMED
BAD_SIG = T.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE
NS = "bank"
BLOCK = 9
V1 = Version(1, 0)
I64 = 2**63


# --- the value encoding --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"0", 0),
        (b"42", 42),
        (b"-7", -7),
        (str(I64 - 1).encode(), I64 - 1),
        (str(-I64).encode(), -I64),
        (b"-0", None),
        (b"007", None),
        (b"+7", None),
        (b" 7", None),
        (b"7.0", None),
        (b"", None),
        (None, None),
        (str(I64).encode(), None),
        (b"\xd9\xa3", None),  # Arabic-Indic digit three: isdigit() in str, not in ASCII bytes
    ],
)
def test_decode_accepts_only_canonical_int64(raw: bytes | None, value: int | None) -> None:
    assert deltas.decode(raw) == value
    if value is not None:
        assert deltas.encode(value) == raw


def test_encode_refuses_values_outside_int64() -> None:
    with pytest.raises(ValueError, match="64-bit"):
        deltas.encode(I64)


# --- validation at commit --------------------------------------------------------------------


def delta(key: str, amount: int, low: int | None = 0, high: int | None = None) -> rwset_pb2.KVDelta:
    return rwset_pb2.KVDelta(key=key, amount=amount, min=low, max=high)


def rw(
    reads: Sequence[tuple[str, Version | None]] = (),
    puts: Sequence[tuple[str, bytes]] = (),
    adds: Sequence[rwset_pb2.KVDelta] = (),
    deletes: Sequence[str] = (),
) -> rwset_pb2.ReadWriteSet:
    return rwset_pb2.ReadWriteSet(
        namespace=NS,
        reads=[rwset_pb2.KVRead(key=k, version=v.to_proto() if v else None) for k, v in reads],
        writes=[rwset_pb2.KVWrite(key=k, value=v) for k, v in puts]
        + [rwset_pb2.KVWrite(key=k, is_delete=True) for k in deletes],
        deltas=list(adds),
    )


@dataclass(frozen=True)
class Case:
    txs: tuple[rwset_pb2.ReadWriteSet, ...]
    codes: tuple[int, ...]
    final: dict[str, bytes | None]  # values written in the block, last one per key
    committed: dict[str, bytes] = field(default_factory=lambda: {"A": b"10", "B": b"5"})


CASES = {
    "deltas-on-one-key-all-commit-in-block-order": Case(
        (rw(adds=[delta("A", 5)]), rw(adds=[delta("A", -12)]), rw(adds=[delta("A", 3)])),
        (VALID, VALID, VALID),
        {"A": b"6"},
    ),
    "delta-that-would-go-below-its-bound-is-invalid-and-applies-nothing": Case(
        (rw(adds=[delta("A", -11), delta("B", 1)]), rw(adds=[delta("A", -10)])),
        (BOUND, VALID),
        {"A": b"0"},
    ),
    "upper-bound-is-enforced": Case((rw(adds=[delta("B", 2, None, 6)]),), (BOUND,), {}),
    "unbounded-below-may-go-negative": Case(
        (rw(adds=[delta("B", -8, None)]),), (VALID,), {"B": b"-3"}
    ),
    "int64-is-the-outer-bound": Case((rw(adds=[delta("A", I64 - 10, None, None)]),), (BOUND,), {}),
    "delta-on-absent-key-is-not-applicable": Case(
        (rw(adds=[delta("Z", 1)]),), (NOT_APPLICABLE,), {}
    ),
    "delta-on-non-canonical-value-is-not-applicable": Case(
        (rw(adds=[delta("A", 1)]),), (NOT_APPLICABLE,), {}, {"A": b"010"}
    ),
    "read-after-an-earlier-delta-in-the-block-is-stale": Case(
        (rw(adds=[delta("A", 1)]), rw(reads=[("A", V1)], puts=[("A", b"0")])),
        (VALID, MVCC),
        {"A": b"11"},
    ),
    "delta-applies-to-an-earlier-put-of-the-block": Case(
        (rw(puts=[("A", b"100")]), rw(adds=[delta("A", -1)])), (VALID, VALID), {"A": b"99"}
    ),
    "put-after-a-delta-replaces-its-value": Case(
        (rw(adds=[delta("A", 1)]), rw(puts=[("A", b"3")])), (VALID, VALID), {"A": b"3"}
    ),
    "delta-after-a-delete-is-not-applicable": Case(
        (rw(deletes=["A"]), rw(adds=[delta("A", 1)])), (VALID, NOT_APPLICABLE), {"A": None}
    ),
    "two-deltas-on-one-key-are-malformed": Case(
        (rw(adds=[delta("A", 1), delta("A", 1)]),), (MALFORMED,), {}
    ),
    "a-delta-and-a-write-on-one-key-are-malformed": Case(
        (rw(puts=[("A", b"1")], adds=[delta("A", 1)]),), (MALFORMED,), {}
    ),
    "zero-amount-is-malformed": Case((rw(adds=[delta("A", 0)]),), (MALFORMED,), {}),
    "min-above-max-is-malformed": Case((rw(adds=[delta("A", 1, 5, 4)]),), (MALFORMED,), {}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_validate_block_with_deltas(case: Case) -> None:
    txs = [TxForMvcc(f"t{i}", VALID, r) for i, r in enumerate(case.txs)]
    versions = {(NS, k): V1 for k in case.committed}
    values = {(NS, k): v for k, v in case.committed.items()}
    codes, writes = validate_block(BLOCK, txs, versions, {}, set(), values)
    assert codes == list(case.codes)
    assert {w.key: w.value for w in writes} == case.final
    assert all(w.version.block_number == BLOCK for w in writes)


def test_delta_gives_its_key_the_transaction_version() -> None:
    txs = [
        TxForMvcc("t0", BAD_SIG, rw(adds=[delta("A", 1)])),
        TxForMvcc("t1", VALID, rw(adds=[delta("A", 1)])),
    ]
    codes, writes = validate_block(BLOCK, txs, {}, {}, set(), {(NS, "A"): b"1"})
    assert codes == [BAD_SIG, VALID]
    assert [(w.key, w.value, w.version) for w in writes] == [("A", b"2", Version(BLOCK, 1))]


def test_delta_keys_of_collects_only_valid_txs() -> None:
    txs = [
        TxForMvcc("t0", VALID, rw(adds=[delta("A", 1), delta("B", 1)])),
        TxForMvcc("t1", BAD_SIG, rw(adds=[delta("C", 1)])),
        TxForMvcc("t2", VALID, None),
    ]
    assert delta_keys_of(txs) == {(NS, "A"), (NS, "B")}


# --- property: agrees with a naive sequential model --------------------------------------------

KEYS = ("a", "b", "c")
INITIAL = st.sampled_from([None, b"0", b"5", b"20", b"x"])  # None: absent; b"x": not an integer
bound_pair = st.sampled_from([(0, None), (None, None), (0, 25), (-10, 10), (3, 2)])
delta_op = st.tuples(st.integers(-15, 15), bound_pair)
tx_strategy = st.tuples(
    st.booleans(),  # passed pre-validation?
    st.dictionaries(st.sampled_from(KEYS), st.booleans(), max_size=2),  # read key -> fresh?
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from([b"0", b"7", b"y"]), max_size=1),
    st.lists(st.tuples(st.sampled_from(KEYS), delta_op), max_size=3),  # may repeat: malformed
)
CANONICAL = re.compile(rb"0|-?[1-9][0-9]*")


Block = list[
    tuple[
        bool,
        dict[str, bool],
        dict[str, bytes],
        list[tuple[str, tuple[int, tuple[int | None, int | None]]]],
    ]
]


def naive(
    initial: dict[str, bytes | None], block: Block
) -> tuple[list[int], dict[str, bytes | None]]:
    """Codes and final values."""
    value: dict[str, bytes | None] = dict(initial)
    version: dict[str, Version | None] = {
        k: (V1 if v is not None else None) for k, v in initial.items()
    }
    codes: list[int] = []
    for index, (pre_ok, reads, puts, adds) in enumerate(block):
        code = VALID if pre_ok else BAD_SIG
        if code == VALID and any(
            version[k] != (V1 if fresh else Version(0, 0)) for k, fresh in reads.items()
        ):
            code = MVCC
        keys = [k for k, _ in adds]
        if code == VALID and (
            len(set(keys)) != len(keys)
            or set(keys) & set(puts)
            or any(
                a == 0 or (lo is not None and hi is not None and lo > hi)
                for _, (a, (lo, hi)) in adds
            )
        ):
            code = MALFORMED
        new: dict[str, bytes] = {}
        if code == VALID:
            for key, (amount, (lo, hi)) in adds:
                raw = value[key]
                if raw is None or not CANONICAL.fullmatch(raw):
                    code = NOT_APPLICABLE
                    break
                result = int(raw) + amount
                if (lo is not None and result < lo) or (hi is not None and result > hi):
                    code = BOUND
                    break
                new[key] = str(result).encode()
        codes.append(code)
        if code == VALID:
            for key, v in {**puts, **new}.items():
                value[key], version[key] = v, Version(BLOCK, index)
    return codes, value


def model_violations(initial: dict[str, bytes | None], block: Block) -> list[str]:
    """How `validate_block` (looked up in its module, so a control can replace it) differs
    from the naive model on one block, and which invariant it breaks."""
    txs = []
    for i, (pre_ok, reads, puts, adds) in enumerate(block):
        r = rw(
            reads=[(k, V1 if fresh else Version(0, 0)) for k, fresh in reads.items()],
            puts=list(puts.items()),
            adds=[delta(k, a, lo, hi) for k, (a, (lo, hi)) in adds],
        )
        txs.append(TxForMvcc(f"t{i}", VALID if pre_ok else BAD_SIG, r))
    committed = {(NS, k): V1 for k, v in initial.items() if v is not None}
    values = {(NS, k): v for k, v in initial.items() if v is not None}
    codes, writes = validation.validate_block(BLOCK, txs, committed, {}, set(), values)
    want_codes, want_values = naive(initial, block)
    out = []
    if codes != want_codes:
        out.append("codes differ from the sequential model")
    final = dict(initial)
    written = {}
    for w in writes:
        final[w.key] = w.value
        written[(w.version.tx_index, w.key)] = w.value
    if final != want_values:
        out.append("final values differ from the sequential model")
    valid = [(i, b) for i, (b, c) in enumerate(zip(block, codes, strict=True)) if c == VALID]
    # No bound is ever broken: every value a valid delta left is within its bounds.
    for i, (_, _, _, adds) in valid:
        for key, (_, (lo, hi)) in adds:
            if (i, key) not in written:
                out.append(f"tx {i}: a valid delta on {key} wrote nothing")
                continue
            got = int(written[(i, key)] or b"")
            if (lo is not None and got < lo) or (hi is not None and got > hi):
                out.append(f"bound broken: {key} = {got} outside [{lo}, {hi}]")
    # A key that only deltas change ends at its initial value plus the valid deltas.
    for key in KEYS:
        start = initial[key]
        if start is None or not CANONICAL.fullmatch(start):
            continue
        if any(key in puts for _, (_, _, puts, _) in valid):
            continue
        added = sum(a for _, (_, _, _, adds) in valid for k, (a, _) in adds if k == key)
        if int(final[key] or b"") != int(start) + added:
            out.append(f"final {key} is not its initial value plus the valid deltas")
    return out


blocks = st.lists(tx_strategy, max_size=8)
initial_values = st.fixed_dictionaries({k: INITIAL for k in KEYS})


@settings(max_examples=300, deadline=None)
@given(initial=initial_values, block=blocks)
def test_validate_block_with_deltas_matches_naive_sequential_model(
    initial: dict[str, bytes | None], block: Block
) -> None:
    assert model_violations(initial, block) == []


# --- simulation at the endorser -----------------------------------------------------------------


@dataclass
class State:
    data: dict[str, bytes]

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        return (self.data[key], V1) if key in self.data else None

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        return [StateEntry(k, v, V1) for k, v in sorted(self.data.items())][:limit]


def ctx(**data: bytes) -> Context:
    return Context(namespace=NS, state=State(dict(data)))


def test_adds_on_one_key_are_summed_into_one_delta_without_a_read() -> None:
    c = ctx(A=b"10")
    c.add("A", 5, 0, None)
    c.add("A", -12, 0, None)
    assert c.reads == {} and c.writes == {}
    assert c.deltas == {"A": delta("A", -7)}


@pytest.mark.parametrize(
    ("steps", "status", "message"),
    [
        pytest.param(
            [("add", "A", 1), ("get", "A")], 500, "get of 'A' after an add", id="get-after-add"
        ),
        pytest.param([("get", "A"), ("add", "A", 1)], 500, "already read", id="add-after-get"),
        pytest.param(
            [("add", "A", 1), ("put", "A")], 500, "put of 'A' after an add", id="put-after-add"
        ),
        pytest.param(
            [("put", "A"), ("add", "A", 1)], 500, "already read or written", id="add-after-put"
        ),
        pytest.param(
            [("add", "A", 1), ("delete", "A")], 500, "delete of 'A'", id="delete-after-add"
        ),
        pytest.param([("add", "Z", 1)], 404, "does not exist", id="absent-key-404"),
        pytest.param([("add", "N", 1)], 404, "holds no integer", id="non-integer-404"),
        pytest.param([("add", "A", -11)], 400, "from 10 outside [0, ", id="visible-overdraft-400"),
        pytest.param([("add", "A", 0)], 500, "zero amount", id="zero-amount-500"),
        pytest.param([("add", "A", I64)], 400, "64-bit range", id="beyond-int64-400"),
    ],
)
def test_add_refusals(steps: list[tuple], status: int, message: str) -> None:
    c = ctx(A=b"10", N=b"ten")
    with pytest.raises(ContractError) as err:
        for op, key, *rest in steps:
            if op == "add":
                c.add(key, rest[0], 0, None)
            elif op == "put":
                c.put(key, b"1")
            else:
                getattr(c, op)(key)
    assert err.value.status == status
    assert message in err.value.message


def test_add_with_differing_bounds_is_refused_and_overdraft_is_a_delta_refused() -> None:
    c = ctx(A=b"10")
    c.add("A", 1, 0, None)
    with pytest.raises(ContractError, match="bounds differ"):
        c.add("A", 1, None, None)
    with pytest.raises(DeltaRefused) as err:
        c.add("A", -20, 0, None)
    assert (err.value.current, err.value.amount, err.value.bounds[0]) == (10, -19, 0)


def test_query_may_not_add() -> None:
    c = ctx(A=b"10")
    c.read_only = True
    with pytest.raises(ContractError, match="must not write"):
        c.add("A", 1, 0, None)


# --- Figure 8 and the hot account, endorsed on one state ------------------------------------------


def endorse(contract: Contract, function: str, *args: str) -> rwset_pb2.ReadWriteSet:
    state = _BankState(contract.name, {"A": b"10000", "B": b"10000", "C": b"10000"})
    call = proposal_pb2.ContractInvocation(
        contract=contract.name, function=function, args=[a.encode() for a in args]
    )
    result = simulate(contract, call, state)
    assert result.response.status == 200, result.response.message
    return result.rwset


@dataclass
class _BankState:
    ns: str
    data: dict[str, bytes]

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        assert namespace == self.ns
        return (self.data[key], V1) if key in self.data else None

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        raise AssertionError("the bank reads no ranges")


@pytest.mark.parametrize("contract", [BankRmwContract(), BankContract()], ids=["bank_rmw", "bank"])
def test_figure8_comes_out_exactly(contract: Contract) -> None:
    """deposit A 5000, withdraw B 2000, payment A -> C 3000 endorsed on one state, one block:
    VALID, VALID, MVCC_READ_CONFLICT; A 15000, B 8000, C 10000 (the paper's Figure 8)."""
    steps = [("deposit", "A", "5000"), ("withdraw", "B", "2000"), ("payment", "A", "C", "3000")]
    txs = [TxForMvcc(f"t{i}", VALID, endorse(contract, *s)) for i, s in enumerate(steps)]
    ns = contract.name
    committed = {(ns, k): V1 for k in "ABC"}
    values = {(ns, k): b"10000" for k in "ABC"}
    codes, writes = validate_block(BLOCK, txs, committed, {}, set(), values)
    assert codes == [VALID, VALID, MVCC]
    assert {w.key: w.value for w in writes} == {"A": b"15000", "B": b"8000"}


def hot_account_violations() -> list[str]:
    """100 deposits of 7 and 100 withdrawals of 10 on A (opened at 0), alternating, endorsed on
    the state where A holds 10000 (so none is refused at endorsement), committed on A = 50:
    what differs from "no MVCC conflict; a withdrawal is invalid exactly when it would
    overdraw; the final balance is 50 plus the valid deltas, never below 0"."""
    bank = BankContract()
    dep, wd = endorse(bank, "deposit", "A", "7"), endorse(bank, "withdraw", "A", "10")
    txs = [TxForMvcc(f"t{i}", VALID, dep if i % 2 == 0 else wd) for i in range(200)]
    codes, writes = validation.validate_block(
        BLOCK, txs, {(NS, "A"): V1}, {}, set(), {(NS, "A"): b"50"}
    )
    out = ["an MVCC conflict among deltas"] if MVCC in codes else []
    balance = 50
    for i, (code, t) in enumerate(zip(codes, txs, strict=True)):
        amount = t.rwset.deltas[0].amount if t.rwset else 0
        if code != (VALID if balance + amount >= 0 else BOUND):
            out.append(f"verdict: tx {i} is {code} at balance {balance}, amount {amount}")
        balance += amount if code == VALID else 0
    if not writes or writes[-1].value != str(balance).encode() or balance < 0:
        out.append(f"final balance is not {balance}")
    if BOUND not in codes:
        out.append("no overdraft refused")
    return out


def test_hot_account_deposits_and_withdrawals_on_one_state_all_commit_but_overdrafts() -> None:
    assert hot_account_violations() == []


# --- negative controls: the checks above catch a broken mechanism --------------------------------

REAL_APPLY = deltas.apply
REAL_VALIDATE_BLOCK = validation.validate_block


def _altered(rwset: rwset_pb2.ReadWriteSet, change: str) -> rwset_pb2.ReadWriteSet:
    copy = rwset_pb2.ReadWriteSet()
    copy.CopyFrom(rwset)
    for d in copy.deltas:
        if change == "unbounded":
            d.ClearField("min")
            d.ClearField("max")
        else:
            d.amount *= 2
    return copy


def _unbounded(
    rwset: rwset_pb2.ReadWriteSet, current: Mapping[str, bytes | None]
) -> tuple[int, dict[str, bytes]]:
    """The bound check removed (int64 still holds)."""
    return REAL_APPLY(_altered(rwset, "unbounded"), current)


def _bound_on_the_old_value(
    rwset: rwset_pb2.ReadWriteSet, current: Mapping[str, bytes | None]
) -> tuple[int, dict[str, bytes]]:
    """The bound checked on the value before the delta, not on its result."""
    code, new = _unbounded(rwset, current)
    for d in rwset.deltas if code == VALID else ():
        low, high = deltas.bounds(d)
        if not low <= (deltas.decode(current.get(d.key)) or 0) <= high:
            return BOUND, {}
    return code, new


def _twice(
    rwset: rwset_pb2.ReadWriteSet, current: Mapping[str, bytes | None]
) -> tuple[int, dict[str, bytes]]:
    """Each delta applied twice."""
    return REAL_APPLY(_altered(rwset, "twice"), current)


def _on_the_committed_value(
    self: validation._Values, rwset: rwset_pb2.ReadWriteSet
) -> tuple[int, dict[str, bytes]]:
    """Each delta applied to the committed value, not to what the block's earlier valid
    transactions left (a lost update)."""
    committed = self._committed
    return REAL_APPLY(rwset, {d.key: committed.get((rwset.namespace, d.key)) for d in rwset.deltas})


def _out_of_block_order(
    block_number: int, txs: Sequence[TxForMvcc], *rest: Any
) -> tuple[list[int], list[StateWrite]]:
    """The block's transactions validated last to first."""
    codes, writes = REAL_VALIDATE_BLOCK(block_number, list(txs)[::-1], *rest)
    return codes[::-1], writes


# (where, what, broken replacement, the property's violation)
BROKEN = {
    "bound-check-removed": (deltas, "apply", _unbounded, "bound broken"),
    "bound-checked-on-the-old-value": (deltas, "apply", _bound_on_the_old_value, "bound broken"),
    "delta-applied-twice": (deltas, "apply", _twice, "final a is not"),
    "applied-to-the-committed-value": (
        validation._Values,
        "apply",
        _on_the_committed_value,
        "final a is not",
    ),
    "applied-out-of-block-order": (
        validation,
        "validate_block",
        _out_of_block_order,
        "codes differ",
    ),
}


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_negative_control_a_broken_delta_mechanism_is_caught(
    monkeypatch: pytest.MonkeyPatch, broken: tuple[object, str, object, str]
) -> None:
    """Each break is caught by the property's own check over its own strategy (the named
    violation; `counterexample` fails if none shows) and by the hot account's check."""
    where, name, replacement, violation = broken
    monkeypatch.setattr(where, name, replacement)
    found = counterexample(
        st.tuples(initial_values, blocks),
        lambda ex: any(v.startswith(violation) for v in model_violations(*ex)),
    )
    assert any(v.startswith(violation) for v in model_violations(*found))
    assert any(v.startswith("verdict") for v in hot_account_violations())
