"""Early abort at Submit (dltmw.core.early_abort): refuse only what every peer would refuse.

A transaction is aborted only when a version it recorded is certainly gone at the gateway's
peer: a newer committed version of the key, or the key deleted after the recorded version's
block. A peer BEHIND the endorser (older version, or key not yet created) aborts nothing; a read
that recorded absence is never aborted (a delete may make it true again). The property checks
the rule against MVCC itself: whatever blocks the chain continues with, an aborted transaction
is invalid in every one of them; and a read that a peer not behind the endorser already sees
invalid is aborted. Negative controls: broken rules (never aborting, ignoring deletes, aborting
an unchanged version, ...) are caught by that check, and by the gateway's batched Submit test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from controls import counterexample
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.early_abort import endorsed_rwset, first_stale, recorded_versions
from dltmw.core.rwset import Version
from dltmw.core.validation import VALID, KeyRef, TxForMvcc, validate_block
from dltmw.v1 import common_pb2, errors_pb2, proposal_pb2, rwset_pb2, transaction_pb2

NS = "bank"
K = (NS, "k")


def read(key: str, version: Version | None) -> rwset_pb2.KVRead:
    if version is None:
        return rwset_pb2.KVRead(key=key)
    return rwset_pb2.KVRead(key=key, version=version.to_proto())


@pytest.mark.parametrize(
    ("recorded", "committed", "height", "stale"),
    [
        (Version(3, 0), Version(3, 0), 9, False),
        (Version(3, 0), Version(5, 1), 9, True),
        (Version(5, 1), Version(3, 0), 4, False),
        (Version(3, 0), None, 9, True),
        (Version(3, 0), None, 3, False),
        (Version(3, 0), None, 4, True),
    ],
    ids=[
        "unchanged",
        "replaced-by-a-newer-write",
        "peer-behind-the-endorser",
        "deleted-since",
        "peer-has-not-reached-the-write",
        "peer-just-past-the-write-and-key-gone",
    ],
)
def test_first_stale(recorded, committed, height, stale) -> None:
    now = {K: committed} if committed is not None else {}
    assert (first_stale({K: recorded}, now, height) == K) is stale


def test_a_read_of_an_absent_key_records_nothing_to_abort_on() -> None:
    rw = rwset_pb2.ReadWriteSet(
        namespace=NS,
        reads=[read("absent", None), read("k", Version(2, 0))],
        range_queries=[
            rwset_pb2.RangeQueryInfo(start_key="a", end_key="z", reads=[read("m", Version(1, 3))])
        ],
        deltas=[rwset_pb2.KVDelta(key="hot", amount=5)],
    )
    assert recorded_versions(rw) == {(NS, "k"): Version(2, 0), (NS, "m"): Version(1, 3)}


def test_endorsed_rwset_reads_only_endorser_transactions() -> None:
    rw = rwset_pb2.ReadWriteSet(namespace=NS, reads=[read("k", Version(1, 0))])
    response = proposal_pb2.ProposalResponsePayload(rwset=rw)
    tx = transaction_pb2.Transaction(response_payload=response.SerializeToString())

    def env(kind: int) -> bytes:
        header = common_pb2.Header(type=kind).SerializeToString()
        payload = common_pb2.Payload(header=header, data=tx.SerializeToString())
        return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()

    assert endorsed_rwset(env(common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION)) == rw
    assert endorsed_rwset(env(common_pb2.HEADER_TYPE_CONFIG_UPDATE)) is None
    assert endorsed_rwset(b"\xff not protobuf") is None


# --- property: an aborted transaction is invalid whatever comes next ------------------------

# A history of one key: each block writes it (True), deletes it (False) or leaves it (None).
history = st.lists(st.sampled_from([True, False, None]), min_size=1, max_size=8)


def versions_after(steps: list[bool | None]) -> list[Version | None]:
    """The key's committed version after each block 1..n (block b writes at tx 0)."""
    out: list[Version | None] = []
    now: Version | None = None
    for block, step in enumerate(steps, start=1):
        if step is True:
            now = Version(block, 0)
        elif step is False:
            now = None
        out.append(now)
    return out


# (history, the endorser's height - 1, the gateway peer's height - 1)
case = history.flatmap(
    lambda steps: st.tuples(
        st.just(steps), st.integers(0, len(steps) - 1), st.integers(0, len(steps) - 1)
    )
)
Rule = Callable[[Mapping[KeyRef, Version], Mapping[KeyRef, Version], int], KeyRef | None]
MVCC = transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT


def violations(rule: Rule, steps: list[bool | None], endorsed_at: int, peer_at: int) -> list[str]:
    """What `rule` (`first_stale`'s signature) gets wrong on one history, judged by MVCC:
    aborting a read that some continuation of the chain from the peer's height validates (a
    fresh read aborted); aborting at a peer not ahead of the endorser; and letting through a
    read that a peer not behind the endorser already sees invalid (a stale read let through:
    its version is gone, and versions only grow)."""
    after = versions_after(steps)
    recorded = after[endorsed_at]
    if recorded is None:  # absence: nothing recorded, never aborted
        return [] if recorded_versions(rwset_of(None)) == {} else ["absence recorded"]
    committed = {K: after[peer_at]} if after[peer_at] is not None else {}
    aborted = rule({K: recorded}, committed, peer_at + 2) == K  # height = blocks + genesis
    # Every continuation of the chain from the peer's height: the tx is judged after it.
    outcomes = {_mvcc_code(recorded, v) for v in after[peer_at:]}
    out = []
    if aborted and outcomes != {MVCC}:
        out.append("fresh read aborted: valid after some continuation")
    if aborted and peer_at <= endorsed_at:
        out.append("aborted by a peer not ahead of the endorser")
    if not aborted and peer_at >= endorsed_at and _mvcc_code(recorded, after[peer_at]) == MVCC:
        out.append("stale read let through: invalid on the peer's own state")
    return out


@settings(max_examples=300, deadline=None)
@given(drawn=case)
def test_an_aborted_read_fails_mvcc_after_any_continuation_and_a_stale_one_is_aborted(
    drawn: tuple[list[bool | None], int, int],
) -> None:
    assert violations(first_stale, *drawn) == []


def _rule(
    newer: Callable[[Version, Version], bool] = lambda now, v: now > v,
    gone: Callable[[int, Version], bool] = lambda height, v: height > v.block_number,
) -> Rule:
    """`first_stale` with its two tests replaceable (the broken variants below)."""

    def rule(
        recorded: Mapping[KeyRef, Version], committed: Mapping[KeyRef, Version], height: int
    ) -> KeyRef | None:
        for ref in sorted(recorded):
            now = committed.get(ref)
            if (now is not None and newer(now, recorded[ref])) or (
                now is None and gone(height, recorded[ref])
            ):
                return ref
        return None

    return rule


BROKEN: dict[str, tuple[Rule, str]] = {
    "never-aborts": (lambda *_: None, "stale read let through"),
    "ignores-deletes": (_rule(gone=lambda *_: False), "stale read let through"),
    "aborts-an-unchanged-version": (_rule(newer=lambda now, v: now >= v), "fresh read aborted"),
    "aborts-on-any-other-version": (
        _rule(newer=lambda now, v: now != v),
        "aborted by a peer not ahead",
    ),
    "absence-ignores-the-height": (_rule(gone=lambda *_: True), "aborted by a peer not ahead"),
}


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_negative_control_a_broken_rule_is_caught_by_the_property(broken: tuple[Rule, str]) -> None:
    """The property's own check finds the violation each deliberately broken rule makes (the
    real rule passes it: above); `counterexample` fails if the check never does."""
    rule, violation = broken
    found = counterexample(
        case, lambda drawn: any(v.startswith(violation) for v in violations(rule, *drawn))
    )
    assert any(v.startswith(violation) for v in violations(rule, *found))


def rwset_of(version: Version | None) -> rwset_pb2.ReadWriteSet:
    return rwset_pb2.ReadWriteSet(namespace=NS, reads=[read("k", version)])


def _mvcc_code(recorded: Version, committed: Version | None) -> int:
    versions = {K: committed} if committed is not None else {}
    tx = TxForMvcc("t", VALID, rwset_of(recorded))
    return validate_block(99, [tx], versions, {}, set())[0][0]


def _env(*reads: rwset_pb2.KVRead) -> bytes:
    rw = rwset_pb2.ReadWriteSet(namespace=NS, reads=list(reads))
    response = proposal_pb2.ProposalResponsePayload(rwset=rw)
    tx = transaction_pb2.Transaction(response_payload=response.SerializeToString())
    header = common_pb2.Header(type=common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION)
    payload = common_pb2.Payload(header=header.SerializeToString(), data=tx.SerializeToString())
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


class _Ledger:
    """The gateway's peer at height 9: a at version (5, 1), b at (3, 0); counts its reads."""

    def __init__(self) -> None:
        self.height = 9
        self.asked: list[set[tuple[str, str]]] = []

    async def versions(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        self.asked.append(set(keys))
        return {(NS, "a"): Version(5, 1), (NS, "b"): Version(3, 0)}


SUBMITTED = [  # (envelope, tx_id), and whether the gateway must refuse it
    ((_env(read("a", Version(3, 0))), "stale"), True),
    ((_env(read("b", Version(3, 0))), "fresh"), False),
    ((_env(), "blind"), False),
    ((_env(read("a", Version(5, 1)), read("b", Version(3, 0))), "both-current"), False),
]


async def _refused(ledger: _Ledger) -> list[bool]:
    """Which of `SUBMITTED` the gateway's batched Submit check refuses (asserting the reason)."""
    from dltmw.runtime.roles.gateway.staleness import stale_errors

    errors = await stale_errors(ledger, [s for s, _ in SUBMITTED])  # type: ignore[arg-type]
    for error in errors:
        assert error is None or error.reason == errors_pb2.ERROR_REASON_STALE_READ
    return [e is not None for e in errors]


async def test_many_submissions_take_one_state_read_and_keep_their_own_verdicts() -> None:
    """The gateway's batched Submit (`roles/gateway/staleness.stale_errors`): one read of the
    union of the keys; each envelope judged on its own reads only."""
    from dltmw.runtime.roles.gateway.staleness import stale_errors

    ledger = _Ledger()
    assert await _refused(ledger) == [must for _, must in SUBMITTED]
    assert ledger.asked == [{(NS, "a"), (NS, "b")}]
    errors = await stale_errors(ledger, [SUBMITTED[0][0]])  # type: ignore[arg-type]
    assert errors[0] is not None and errors[0].metadata == {"key": "a", "namespace": NS}
    assert await stale_errors(ledger, [(_env(), "w")]) == [None] and len(ledger.asked) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("broken", "wrong"),
    [("never-aborts", "stale"), ("aborts-an-unchanged-version", "fresh")],
    ids=["lets-the-stale-one-through", "refuses-a-fresh-one"],
)
async def test_negative_control_the_gateway_with_a_broken_rule_is_caught(
    monkeypatch: pytest.MonkeyPatch, broken: str, wrong: str
) -> None:
    """The gateway applying a broken rule: the verdicts the real test requires are not met,
    and exactly on the submission the break concerns."""
    from dltmw.runtime.roles.gateway import staleness

    monkeypatch.setattr(staleness, "first_stale", BROKEN[broken][0])
    refused = await _refused(_Ledger())
    differ = [s[1] for (s, must), got in zip(SUBMITTED, refused, strict=True) if must != got]
    assert wrong in differ


async def test_a_block_committed_during_the_read_does_not_make_a_fresh_read_look_deleted() -> None:
    """The endorser read k at (10, 0), created in block 10. The gateway's peer is at height 10
    (blocks 0-9) when the Submit arrives, its versions are read from a snapshot without block
    10, and block 10 commits meanwhile. Read first, the height (10) says k's absence may be the
    peer being behind: not aborted. (Red with the height read after the versions: 11 > 10, a
    fresh read refused as deleted.)"""
    from dltmw.runtime.roles.gateway.staleness import stale_errors

    class Racing(_Ledger):
        def __init__(self) -> None:
            super().__init__()
            self.height = 10

        async def versions(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Version]:
            self.height = 11  # block 10 committed while the snapshot (without it) was read
            return {}

    errors = await stale_errors(Racing(), [(_env(read("k", Version(10, 0))), "fresh")])  # type: ignore[arg-type]
    assert errors == [None]
