"""A recipient executes a private transaction once (core/privacy/prior_run.py): the executor
reuses its agreement's run at commit exactly when running it again would give the same — the
same stored copy, the same contract object, every lookup answered alike (values and versions,
through the block's pending writes), no range read — and runs it again otherwise."""

from __future__ import annotations

import os

from dltmw.contracts.kv import KvContract
from dltmw.core.contract import Contract
from dltmw.core.privacy.blocks import PrivateBlock, PrivateExecution, TxOutcome
from dltmw.core.privacy.envelope import (
    PrivacyKey,
    open_payload,
    payload_hash,
    recipients_of,
    seal,
)
from dltmw.core.privacy.execution import EXECUTED, TAMPERED, execute
from dltmw.core.privacy.prior_run import PriorRun, prior_run
from dltmw.core.privacy.read_once import ReadOnce
from dltmw.core.rwset import StateEntry, Version
from dltmw.runtime.roles.privacy.prior_runs import PriorRuns
from dltmw.v1 import private_payload_pb2

ME, SENDER = PrivacyKey(os.urandom(32)), PrivacyKey(os.urandom(32))


class CountingKv(KvContract):
    """The built-in kv contract, counting its runs (every `simulate` asks for the function)."""

    def __init__(self) -> None:
        self.runs = 0

    def function(self, name: str):  # type: ignore[no-untyped-def]
        self.runs += 1
        return super().function(name)


class Store:
    """The committed private state (values WITH versions) and the held payloads."""

    def __init__(self, state: dict[str, tuple[bytes, Version]]) -> None:
        self.state = dict(state)
        self.payloads: dict[bytes, bytes] = {}

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        return self.state.get(key) if namespace == "kv" else None

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        keys = sorted(k for k in self.state if k >= start and (not end or k < end))
        return [StateEntry(k, *self.state[k]) for k in keys[:limit]]

    def payload(self, digest: bytes) -> bytes | None:
        return self.payloads.get(digest)


def held(store: Store, function: str, *args: bytes) -> bytes:
    """Seal an invocation for ME, hold it in `store`; its payload hash."""
    invocation = private_payload_pb2.PrivateInvocation(contract="kv", function=function, args=args)
    boxes = [os.urandom(12), os.urandom(12)]
    payload = seal(
        invocation.SerializeToString(),
        SENDER,
        [ME.public_key],
        os.urandom(32),
        os.urandom(12),
        boxes,
    )
    digest = payload_hash(payload)
    store.payloads[digest] = payload.SerializeToString()
    return digest


def agreement_run(store: Store, contract: Contract, digest: bytes) -> PriorRun | None:
    """What the agreement runtime does: run on the committed state through a ReadOnce, keep."""
    raw = store.payloads[digest]
    payload = private_payload_pb2.EncryptedPayload.FromString(raw)
    invocation = private_payload_pb2.PrivateInvocation.FromString(open_payload(payload, ME, digest))
    reader = ReadOnce(store)
    outcome = execute(lambda _n: contract, invocation, reader, Version(0, 0))
    return prior_run(raw, contract, reader, outcome)


def commit(
    store: Store,
    contract: Contract,
    items: list[tuple[int, str, bytes]],
    prior: dict[bytes, PriorRun],
    number: int = 7,
) -> list[TxOutcome]:
    core = PrivateExecution(ME, lambda _n: contract, next_block=number)
    core.step(PrivateBlock(number, tuple(items), store, prior=prior))
    (executed,) = core.ready().decided
    return list(executed.outcomes)


def fresh_run(store: Store, items: list[tuple[int, str, bytes]]) -> list[TxOutcome]:
    """The outcome without any prior run: the reference every reuse must equal."""
    return commit(store, CountingKv(), items, {})


def test_an_unchanged_state_reuses_the_agreement_run_the_contract_runs_once() -> None:
    store = Store({"k": (b"5", Version(1, 0))})
    contract = CountingKv()
    digest = held(store, "incr", b"k")
    prior = agreement_run(store, contract, digest)
    assert prior is not None and contract.runs == 1
    items = [(0, "t0", digest)]
    (outcome,) = commit(store, contract, items, {digest: prior})
    assert contract.runs == 1  # not run again at commit
    assert outcome == fresh_run(store, items)[0]  # exactly the run it replaces
    assert outcome.status == EXECUTED
    assert [(w.key, w.value, w.version) for w in outcome.writes] == [("k", b"6", Version(7, 0))]


def test_a_key_written_since_runs_it_again_even_back_to_the_same_value() -> None:
    for value in (b"9", b"5"):  # another value, and the same value at a newer version
        store = Store({"k": (b"5", Version(1, 0))})
        contract = CountingKv()
        digest = held(store, "incr", b"k")
        prior = agreement_run(store, contract, digest)
        assert prior is not None
        store.state["k"] = (value, Version(3, 1))  # another transaction wrote k in between
        items = [(0, "t0", digest)]
        (outcome,) = commit(store, contract, items, {digest: prior})
        assert contract.runs == 2
        assert outcome == fresh_run(store, items)[0]
        expected = str(int(value) + 1).encode()
        assert [(w.key, w.value) for w in outcome.writes] == [("k", expected)]


def test_an_earlier_write_in_the_same_block_is_seen_through_the_pending_writes() -> None:
    store = Store({"k": (b"5", Version(1, 0))})
    contract = CountingKv()
    first = held(store, "put", b"k", b"40")
    second = held(store, "incr", b"k")
    prior = agreement_run(store, contract, second)  # agreed before `first` executed
    assert prior is not None
    items = [(0, "t0", first), (1, "t1", second)]
    outcomes = commit(store, contract, items, {second: prior})
    assert outcomes == fresh_run(store, items)
    assert [(w.key, w.value) for w in outcomes[1].writes] == [("k", b"41")]


def test_a_stored_copy_altered_since_the_run_is_opened_again_and_refused() -> None:
    store = Store({})
    contract = CountingKv()
    digest = held(store, "put", b"k", b"v")
    prior = agreement_run(store, contract, digest)
    assert prior is not None
    payload = private_payload_pb2.EncryptedPayload.FromString(store.payloads[digest])
    mine = payload.recipient_boxes[recipients_of(payload).index(ME.public_key)]
    mine.wrapped_key = os.urandom(len(mine.wrapped_key))
    store.payloads[digest] = payload.SerializeToString()  # same ciphertext (hash), altered box
    (outcome,) = commit(store, contract, [(0, "t0", digest)], {digest: prior})
    assert (outcome.status, outcome.writes) == (TAMPERED, ())


def test_another_contract_object_runs_it_again() -> None:
    store = Store({})
    first, reloaded = CountingKv(), CountingKv()
    digest = held(store, "put", b"k", b"v")
    prior = agreement_run(store, first, digest)
    assert prior is not None
    commit(store, reloaded, [(0, "t0", digest)], {digest: prior})
    assert (first.runs, reloaded.runs) == (1, 1)


def test_a_run_with_a_range_read_is_never_kept() -> None:
    store = Store({"a": (b"1", Version(1, 0))})
    contract = CountingKv()
    digest = held(store, "range", b"a", b"z")
    assert agreement_run(store, contract, digest) is None


def test_the_runs_kept_are_bounded_and_each_taken_once() -> None:
    store = Store({})
    contract = CountingKv()
    digest = held(store, "put", b"k", b"v")
    prior = agreement_run(store, contract, digest)
    assert prior is not None
    runs = PriorRuns(limit=3)
    for n in range(5):
        runs.keep(bytes([n]) * 32, prior)
    assert len(runs) == 3  # the oldest went first
    assert set(runs.take([bytes([n]) * 32 for n in range(5)])) == {
        bytes([n]) * 32 for n in (2, 3, 4)
    }
    assert runs.take([bytes([4]) * 32]) == {}  # taken once
