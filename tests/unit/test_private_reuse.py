"""The agreement run reused at commit (`core/privacy/reuse.py`) gives exactly what executing the
payload again gives: same codes (EXECUTED / CONTRACT_FAILED / STALE / TAMPERED), same writes,
same state hashes, same private state, over random interleavings of agreement runs and commits
on overlapping keys, including runs made before another transaction changed their keys (they
must fall back to executing), range reads whose range gained a key since (a phantom: never
reused), refused runs, a restarted executor (no runs kept) and a contract deployed anew.
"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.contract import Context, Contract, ContractError
from dltmw.core.privacy.blocks import PrivateBlock, PrivateExecution, TxOutcome
from dltmw.core.privacy.envelope import PrivacyKey, open_payload, payload_hash, seal
from dltmw.core.privacy.execution import EXECUTED, STALE, execute
from dltmw.core.privacy.reuse import PriorRun, prior_run
from dltmw.core.rwset import StateEntry, Version
from dltmw.runtime.roles.privacy.prior_runs import PriorRuns
from dltmw.v1 import private_payload_pb2

NS = "box"
ME, OTHER = PrivacyKey(os.urandom(32)), PrivacyKey(os.urandom(32))
KEYS = "abcde"


class Box(Contract):
    """Reads and writes that depend on the values read: what reuse must reproduce."""

    name = NS

    def copy(self, ctx: Context, args: list[bytes]) -> bytes:
        """dst := src + "x" (refused when src is absent)."""
        src, dst = args[0].decode(), args[1].decode()
        value = ctx.get(src)
        if value is None:
            raise ContractError(f"{src} is absent", 404)
        ctx.put(dst, value[:6] + b"x")
        return value

    def bump(self, ctx: Context, args: list[bytes]) -> bytes:
        """k := len(k) as text, a delete when it was already long."""
        key = args[0].decode()
        value = ctx.get(key) or b""
        if len(value) >= 4:
            ctx.delete(key)
        else:
            ctx.put(key, str(len(value) + 1).encode() * 2)
        return b""

    def count(self, ctx: Context, args: list[bytes]) -> bytes:
        """dst := the number of keys in [start, end): a range read."""
        start, end, dst = (a.decode() for a in args)
        ctx.put(dst, str(len(ctx.range(start, end))).encode())
        return b""

    def add(self, ctx: Context, args: list[bytes]) -> bytes:
        """k += 1 by a delta, k created first if absent (a plain write then)."""
        key = args[0].decode()
        if not (ctx.state.get(NS, key) or (b"",))[0].isdigit():
            ctx.put(key, b"1")
        else:
            ctx.add(key, 1)
        return b""


class Store:
    """The committed private state and the payloads this node holds (the store's view)."""

    def __init__(self, state: dict[str, bytes], payloads: dict[bytes, bytes]) -> None:
        self.state = dict(state)
        self.payloads = payloads

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        value = self.state.get(key) if namespace == NS else None
        return None if value is None else (value, Version(1, 0))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        keys = sorted(k for k in self.state if k >= start and (not end or k < end))
        return [StateEntry(k, self.state[k], Version(1, 0)) for k in keys[:limit]]

    def payload(self, digest: bytes) -> bytes | None:
        return self.payloads.get(digest)


CALLS = st.one_of(
    st.tuples(st.just("copy"), st.sampled_from(KEYS), st.sampled_from(KEYS)),
    st.tuples(st.just("bump"), st.sampled_from(KEYS)),
    st.tuples(st.just("count"), st.sampled_from("ab"), st.sampled_from(["", "d"]), st.just("e")),
    st.tuples(st.just("add"), st.sampled_from(KEYS)),
)


def sealed(call: tuple[str, ...]) -> tuple[bytes, bytes]:
    """(payload hash, stored bytes) of a payload invoking `call` on the box contract."""
    invocation = private_payload_pb2.PrivateInvocation(
        contract=NS, function=call[0], args=[a.encode() for a in call[1:]]
    )
    p = seal(
        invocation.SerializeToString(),
        OTHER,
        [ME.public_key],
        os.urandom(32),
        os.urandom(12),
        [os.urandom(12), os.urandom(12)],
    )
    return payload_hash(p), p.SerializeToString()


def agreement_run(
    contract_of: object, digest: bytes, raw: bytes, state: Store
) -> tuple[tuple[bytes, bytes], PriorRun | None]:
    """What a party's agreement run gives (`agreement.Agreements._open_and_run`): the hashes
    it signs and the run kept for the commit."""
    payload = private_payload_pb2.EncryptedPayload.FromString(raw)
    invocation = private_payload_pb2.PrivateInvocation.FromString(open_payload(payload, ME, digest))
    outcome = execute(contract_of, invocation, state, Version(0, 0))  # type: ignore[arg-type]
    contract = contract_of(invocation.contract)  # type: ignore[operator]
    return (outcome.pre_state_hash, outcome.state_hash), prior_run(
        raw, invocation, contract, outcome
    )


def commit_all(
    contract_of: object,
    initial: dict[str, bytes],
    payloads: dict[bytes, bytes],
    blocks: list[list[tuple[int, bytes]]],
    agreed_after: list[int],
    keep: list[bool],
    reusing: bool,
) -> tuple[list[TxOutcome], dict[str, bytes], int]:
    """Blocks committed in order, each transaction's agreement run made on the committed state
    after `agreed_after[i]` blocks (never after its own); the runs kept (`keep`) handed to the
    executor when `reusing`. Returns every outcome, the final state, and how many reused."""
    store = Store(initial, payloads)
    core = PrivateExecution(ME, contract_of, 0)  # type: ignore[arg-type]
    runs = PriorRuns()
    agreed: dict[int, tuple[bytes, bytes]] = {}
    outcomes: list[TxOutcome] = []
    for number, block in enumerate(blocks):
        for tx, digest in (item for b in blocks for item in b):
            if agreed_after[tx] == number:  # this state is the one its parties ran on
                agreed[tx], prior = agreement_run(contract_of, digest, payloads[digest], store)
                if keep[tx]:
                    runs.keep(digest, prior)
        items = tuple((i, f"t{tx}", digest) for i, (tx, digest) in enumerate(block))
        prior = runs.take(d for _, _, d in items) if reusing else {}
        hashes = {i: agreed[tx] for i, (tx, _) in enumerate(block)}
        core.step(PrivateBlock(number, items, store, hashes, prior=prior))
        for executed in core.ready().decided:
            outcomes.extend(executed.outcomes)
            for outcome in executed.outcomes:
                for w in outcome.writes:
                    if w.value is None:
                        store.state.pop(w.key, None)
                    else:
                        store.state[w.key] = w.value
    return outcomes, store.state, sum(o.reused for o in outcomes)


def deployed() -> object:
    box = Box()
    return lambda name: box if name == NS else None


@settings(max_examples=150, deadline=None)
@given(
    initial=st.dictionaries(st.sampled_from(KEYS), st.sampled_from([b"1", b"22", b"abc", b"x"])),
    calls=st.lists(CALLS, min_size=1, max_size=8),
    data=st.data(),
)
def test_reusing_the_agreement_run_commits_exactly_what_executing_again_does(
    initial: dict[str, bytes], calls: list[tuple[str, ...]], data: st.DataObject
) -> None:
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=len(calls), max_size=len(calls)))
    blocks: list[list[tuple[int, bytes]]] = []
    payloads: dict[bytes, bytes] = {}
    block_of: list[int] = []
    for tx, call in enumerate(calls):
        digest, raw = sealed(call)
        payloads[digest] = raw
        if not blocks or len(blocks[-1]) >= sizes[len(blocks) - 1]:
            blocks.append([])
        blocks[-1].append((tx, digest))
        block_of.append(len(blocks) - 1)
    agreed_after = [data.draw(st.integers(0, n)) for n in block_of]
    keep = data.draw(st.lists(st.booleans(), min_size=len(calls), max_size=len(calls)))
    contract_of = deployed()
    reused = commit_all(contract_of, initial, payloads, blocks, agreed_after, keep, True)
    again = commit_all(contract_of, initial, payloads, blocks, agreed_after, keep, False)
    assert again[2] == 0

    def verdicts(outcomes: list[TxOutcome]) -> list[tuple[object, ...]]:
        return [(o.index, o.status, o.writes, o.state_hash, o.pre_state_hash) for o in outcomes]

    assert verdicts(reused[0]) == verdicts(again[0])
    assert reused[1] == again[1]


def two_blocks(calls: list[tuple[str, ...]], runs: PriorRuns | None) -> tuple[list[TxOutcome], int]:
    """Both transactions agreed on the state before the first commits (block 0), the second
    committed after it (block 1); their runs kept unless `runs` is None (a restart)."""
    payloads = dict(sealed(c) for c in calls)
    digests = list(payloads)
    blocks = [[(0, digests[0])], [(1, digests[1])]]
    keep = [runs is not None] * 2
    outcomes, _, count = commit_all(
        deployed(), {"a": b"1", "b": b"22"}, payloads, blocks, [0, 0], keep, runs is not None
    )
    return outcomes, count


def test_a_key_changed_between_agreement_and_commit_falls_back_to_executing() -> None:
    outcomes, reused = two_blocks([("bump", "a"), ("copy", "a", "c")], PriorRuns())
    assert [o.status for o in outcomes] == [EXECUTED, STALE]  # as executing again gives
    assert [o.reused for o in outcomes] == [True, False]
    assert reused == 1


def test_a_run_on_keys_nothing_changed_is_applied_without_executing() -> None:
    outcomes, reused = two_blocks([("bump", "a"), ("copy", "b", "c")], PriorRuns())
    assert [(o.status, o.reused) for o in outcomes] == [(EXECUTED, True), (EXECUTED, True)]
    assert outcomes[1].writes[0].value == b"22x"
    assert outcomes[1].writes[0].version == Version(1, 0)  # the commit's, not the run's
    assert reused == 2


def test_a_restarted_executor_with_no_runs_kept_executes_each_payload() -> None:
    outcomes, reused = two_blocks([("bump", "a"), ("copy", "b", "c")], None)
    assert [(o.status, o.reused) for o in outcomes] == [(EXECUTED, False), (EXECUTED, False)]
    assert reused == 0


def test_a_range_read_refused_run_or_group_invocation_is_not_kept() -> None:
    contract_of = deployed()
    store = Store({"a": b"1"}, {})
    for call in [("count", "a", "", "e"), ("copy", "z", "c")]:  # a range read; refused
        digest, raw = sealed(call)
        assert agreement_run(contract_of, digest, raw, store)[1] is None
    group = private_payload_pb2.PrivateInvocation(
        contract=NS, function="bump", args=[b"a"], group="g"
    )
    outcome = execute(contract_of, group, store, Version(0, 0))  # type: ignore[arg-type]
    assert outcome.status == EXECUTED
    assert prior_run(b"raw", group, contract_of(NS), outcome) is None  # type: ignore[operator]


def test_a_contract_deployed_anew_or_another_stored_copy_executes_again() -> None:
    digest, raw = sealed(("copy", "b", "c"))
    store = Store({"b": b"22"}, {digest: raw})
    _, prior = agreement_run(deployed(), digest, raw, store)
    assert prior is not None
    for contract_of, held in [(deployed(), raw), (lambda _n: prior.contract, raw + b"\x00")]:
        store.payloads[digest] = held
        core = PrivateExecution(ME, contract_of, 0)  # type: ignore[arg-type]
        core.step(PrivateBlock(0, ((0, "t", digest),), store, prior={digest: prior}))
        (outcome,) = core.ready().decided[0].outcomes
        assert not outcome.reused


def test_the_kept_runs_are_bounded_and_taken_once() -> None:
    runs = PriorRuns(limit=2)
    digest, raw = sealed(("copy", "b", "c"))
    _, prior = agreement_run(deployed(), digest, raw, Store({"b": b"2"}, {}))
    assert prior is not None
    for d in (b"1", b"2", b"3"):
        runs.keep(d, prior)
    assert len(runs) == 2
    assert runs.take([b"1", b"2", b"3"]) == {b"2": prior, b"3": prior}
    assert runs.take([b"2"]) == {}
    runs.keep(b"4", prior)
    runs.keep(b"4", None)  # a newer run not reusable: the older one goes too
    assert len(runs) == 0
