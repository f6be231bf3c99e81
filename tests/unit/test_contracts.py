"""Contract simulation (dltmw.core.contract.simulate) with the built-in bank and kv contracts.

`bank_rmw` is the paper's read-modify-write bank (every function reads what it changes);
`bank` is the same but for deposit and withdraw, which are bounded deltas (no read version).

State is an in-memory dict of (namespace, key) -> (value, Version); the simulation result is
checked field by field: response status/payload, recorded reads with versions, staged writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from dltmw.contracts import builtin_contract
from dltmw.contracts.bank import BankContract, BankRmwContract
from dltmw.contracts.kv import KvContract
from dltmw.core.contract import Context, Contract, ContractError, simulate
from dltmw.core.rwset import StateEntry, Version
from dltmw.v1 import proposal_pb2, rwset_pb2

VA, VB, VK = Version(3, 1), Version(5, 0), Version(2, 2)


@dataclass
class DictState:
    """A StateReader over a dict."""

    data: dict[tuple[str, str], tuple[bytes, Version]] = field(default_factory=dict)

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        return self.data.get((namespace, key))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        keys = sorted(
            k for ns, k in self.data if ns == namespace and k >= start and (not end or k < end)
        )
        return [StateEntry(k, *self.data[(namespace, k)]) for k in keys[:limit]]


def bank_state(ns: str = "bank") -> DictState:
    return DictState({(ns, "alice"): (b"100", VA), (ns, "bob"): (b"20", VB)})


def invoke(
    contract: Contract, function: str, args: Sequence[bytes], state: DictState
) -> proposal_pb2.ProposalResponsePayload:
    invocation = proposal_pb2.ContractInvocation(
        contract=contract.name, function=function, args=list(args)
    )
    return simulate(contract, invocation, state)


def reads(result: proposal_pb2.ProposalResponsePayload) -> list[tuple[str, Version | None]]:
    return [(r.key, Version.from_read(r)) for r in result.rwset.reads]


def writes(result: proposal_pb2.ProposalResponsePayload) -> list[tuple[str, bytes | None]]:
    return [(w.key, None if w.is_delete else w.value) for w in result.rwset.writes]


# --- bank ---------------------------------------------------------------------------------------


BANK_ROWS = [
    pytest.param(
        "open",
        [b"carol", b"7"],
        b"7",
        [("carol", None)],
        [("carol", b"7")],
        id="open-reads-absent-account-writes-initial-balance",
    ),
    pytest.param(
        "deposit",
        [b"alice", b"50"],
        b"150",
        [("alice", VA)],
        [("alice", b"150")],
        id="deposit-reads-version-writes-sum",
    ),
    pytest.param(
        "withdraw",
        [b"alice", b"100"],
        b"0",
        [("alice", VA)],
        [("alice", b"0")],
        id="withdraw-whole-balance-allowed",
    ),
    pytest.param(
        "payment",
        [b"alice", b"bob", b"30"],
        b"70",
        [("alice", VA), ("bob", VB)],
        [("alice", b"70"), ("bob", b"50")],
        id="payment-reads-both-with-versions-writes-both",
    ),
    pytest.param("balance", [b"bob"], b"20", [("bob", VB)], [], id="balance-reads-without-writing"),
]
FIELDS = ("function", "args", "payload", "want_reads", "want_writes")


READING = ("open", "payment", "balance")  # bank's functions that are bank_rmw's


@pytest.mark.parametrize(
    ("contract", *FIELDS),
    [pytest.param(BankRmwContract(), *p.values, id=f"bank_rmw-{p.id}") for p in BANK_ROWS]
    + [
        pytest.param(BankContract(), *p.values, id=f"bank-{p.id}")
        for p in BANK_ROWS
        if p.values[0] in READING
    ],
)
def test_bank_functions(
    contract: Contract,
    function: str,
    args: list[bytes],
    payload: bytes,
    want_reads: list[tuple[str, Version | None]],
    want_writes: list[tuple[str, bytes]],
) -> None:
    result = invoke(contract, function, args, bank_state(contract.name))
    assert result.response.status == 200, result.response.message
    assert result.response.payload == payload
    assert result.rwset.namespace == contract.name
    assert reads(result) == want_reads
    assert writes(result) == want_writes


@pytest.mark.parametrize(
    ("function", "args", "amount"),
    [
        pytest.param("deposit", [b"alice", b"50"], 50, id="deposit-is-a-delta-bounded-by-0"),
        pytest.param("withdraw", [b"alice", b"100"], -100, id="withdraw-whole-balance-allowed"),
    ],
)
def test_bank_deposit_and_withdraw_are_bounded_deltas_without_reads(
    function: str, args: list[bytes], amount: int
) -> None:
    result = invoke(BankContract(), function, args, bank_state())
    assert result.response.status == 200, result.response.message
    assert result.response.payload == b""  # no balance: endorsers at other heights agree
    assert reads(result) == [] and writes(result) == []
    assert list(result.rwset.deltas) == [rwset_pb2.KVDelta(key="alice", amount=amount, min=0)]


def test_open_read_of_absent_account_carries_no_version_field() -> None:
    result = invoke(BankContract(), "open", [b"carol", b"0"], bank_state())
    assert result.response.status == 200
    assert not result.rwset.reads[0].HasField("version")


def test_open_and_payment_emit_events() -> None:
    opened = invoke(BankContract(), "open", [b"carol", b"1"], bank_state())
    paid = invoke(BankContract(), "payment", [b"alice", b"bob", b"1"], bank_state())
    assert [(e.contract, e.name, e.payload) for e in opened.events] == [
        ("bank", "opened", b"carol")
    ]
    assert [(e.name, e.payload) for e in paid.events] == [("payment", b"alice->bob:1")]


@pytest.mark.parametrize(
    ("function", "args", "status"),
    [
        ("withdraw", [b"alice", b"101"], 400),
        ("payment", [b"bob", b"alice", b"21"], 400),
        ("payment", [b"alice", b"alice", b"1"], 400),
        ("deposit", [b"nobody", b"1"], 404),
        ("open", [b"alice", b"1"], 409),
        ("deposit", [b"alice", b"0"], 400),
        ("deposit", [b"alice", b"-5"], 400),
        ("deposit", [b"alice"], 400),
        ("withdraw", [b"\xff", b"1"], 400),
        ("transfer", [b"alice", b"bob", b"1"], 400),
        ("__class__", [], 400),
        ("function", [b"open"], 400),
        ("", [], 400),
    ],
    ids=[
        "overdraft-withdraw-refused",
        "overdraft-payment-refused",
        "self-payment-refused",
        "unknown-account-404",
        "open-existing-account-409",
        "zero-amount-refused",
        "negative-amount-refused",
        "missing-argument-refused",
        "non-utf8-account-refused",
        "unknown-function-400",
        "private-name-is-not-a-function",
        "base-class-method-is-not-a-function",
        "empty-function-name-400",
    ],
)
@pytest.mark.parametrize("contract", [BankContract(), BankRmwContract()], ids=["bank", "bank_rmw"])
def test_bank_refusals_have_status_and_empty_rwset(
    contract: Contract, function: str, args: list[bytes], status: int
) -> None:
    result = invoke(contract, function, args, bank_state(contract.name))
    assert result.response.status == status
    assert result.response.message
    assert result.response.payload == b""
    assert result.rwset == rwset_pb2.ReadWriteSet(namespace=contract.name)
    assert list(result.events) == []


# --- kv -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "args", "payload", "want_reads", "want_writes"),
    [
        ("incr", [b"n"], b"1", [("n", None)], [("n", b"1")]),
        ("incr", [b"k"], b"42", [("k", VK)], [("k", b"42")]),
        ("put", [b"x", b"v"], b"", [], [("x", b"v")]),
        ("get", [b"k"], b"41", [("k", VK)], []),
        ("delete", [b"k"], b"", [("k", VK)], [("k", None)]),
    ],
    ids=[
        "incr-absent-key-reads-without-version-writes-one",
        "incr-existing-key-reads-version",
        "put-is-a-blind-write",
        "get-reads-only",
        "delete-reads-then-deletes",
    ],
)
def test_kv_functions(
    function: str,
    args: list[bytes],
    payload: bytes,
    want_reads: list[tuple[str, Version | None]],
    want_writes: list[tuple[str, bytes | None]],
) -> None:
    state = DictState({("kv", "k"): (b"41", VK)})
    result = invoke(KvContract(), function, args, state)
    assert result.response.status == 200, result.response.message
    assert result.response.payload == payload
    assert reads(result) == want_reads
    assert writes(result) == want_writes


def test_kv_range_records_the_range_with_versions() -> None:
    state = DictState(
        {
            ("kv", "a1"): (b"x", Version(1, 0)),
            ("kv", "a2"): (b"y", Version(1, 1)),
            ("kv", "b1"): (b"z", Version(1, 2)),
            ("bank", "a3"): (b"other namespace", Version(1, 3)),
        }
    )
    result = invoke(KvContract(), "range", [b"a", b"b"], state)
    assert result.response.payload == b"a1=x\na2=y"
    [query] = result.rwset.range_queries
    assert (query.start_key, query.end_key) == ("a", "b")
    assert [(r.key, Version.from_read(r)) for r in query.reads] == [
        ("a1", Version(1, 0)),
        ("a2", Version(1, 1)),
    ]


def test_reads_see_committed_state_not_own_writes() -> None:
    class PutThenGet(Contract):
        name = "kv"

        def run(self, ctx: Context, args: Sequence[bytes]) -> bytes:
            ctx.put("k", b"staged")
            return ctx.get("k") or b"absent"

    result = invoke(PutThenGet(), "run", [], DictState({("kv", "k"): (b"committed", VK)}))
    assert result.response.payload == b"committed"
    assert reads(result) == [("k", VK)]


def test_repeated_read_records_the_key_once() -> None:
    class ReadTwice(Contract):
        name = "kv"

        def run(self, ctx: Context, args: Sequence[bytes]) -> bytes:
            ctx.get("k")
            ctx.get("k")
            return b""

    result = invoke(ReadTwice(), "run", [], DictState({("kv", "k"): (b"v", VK)}))
    assert reads(result) == [("k", VK)]


# --- failures and determinism ------------------------------------------------------------------


class Buggy(Contract):
    name = "buggy"

    def crash(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        ctx.put("written-before-crash", b"x")
        return {}["missing"]  # type: ignore[no-any-return]

    def refuse(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        ctx.put("written-before-refusal", b"x")
        raise ContractError("teapot", 418)

    def refuse_as_success(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        ctx.put("written-before-refusal", b"x")
        raise ContractError("not really ok", 200)


@pytest.mark.parametrize(
    ("function", "status", "message_part"),
    [("crash", 500, "KeyError"), ("refuse", 418, "teapot"), ("refuse_as_success", 500, "not")],
    ids=[
        "unexpected-exception-is-a-500-refusal",
        "contract-error-keeps-its-status",
        "contract-error-with-a-success-status-becomes-500",
    ],
)
def test_contract_failures_become_refusals(function: str, status: int, message_part: str) -> None:
    result = invoke(Buggy(), function, [], DictState())
    assert result.response.status == status
    assert message_part in result.response.message
    assert result.rwset == rwset_pb2.ReadWriteSet(namespace="buggy")


@pytest.mark.parametrize(
    ("contract", "function", "args"),
    [
        (BankContract(), "payment", [b"alice", b"bob", b"5"]),
        (BankContract(), "withdraw", [b"alice", b"500"]),
        (KvContract(), "incr", [b"n"]),
    ],
    ids=["bank-payment", "bank-refusal", "kv-incr"],
)
def test_same_inputs_give_byte_identical_results(
    contract: Contract, function: str, args: list[bytes]
) -> None:
    results = [
        invoke(contract, function, args, bank_state()).SerializeToString(deterministic=True)
        for _ in range(3)
    ]
    assert results[0] and results.count(results[0]) == 3


def test_writes_are_serialised_in_key_order() -> None:
    class ManyWrites(Contract):
        name = "kv"

        def run(self, ctx: Context, args: Sequence[bytes]) -> bytes:
            for key in ("zeta", "alpha", "mid"):
                ctx.put(key, key.encode())
            return b""

    result = invoke(ManyWrites(), "run", [], DictState())
    assert [w.key for w in result.rwset.writes] == ["alpha", "mid", "zeta"]


@pytest.mark.parametrize(
    ("name", "cls"),
    [("bank", BankContract), ("kv", KvContract), ("nope", type(None))],
    ids=["bank-registered", "kv-registered", "unknown-is-none"],
)
def test_builtin_registry(name: str, cls: type) -> None:
    contract = builtin_contract(name)
    assert isinstance(contract, cls)
    if contract is not None:
        assert contract.name == name
