"""Early abort at Submit (dltmw.core.early_abort): refuse only what every peer would refuse.

A transaction is aborted only when a version it recorded is certainly gone at the gateway's
peer: a newer committed version of the key, or the key deleted after the recorded version's
block. A peer BEHIND the endorser (older version, or key not yet created) aborts nothing; a read
that recorded absence is never aborted (a delete may make it true again). The property checks
the rule against MVCC itself: whatever blocks the chain continues with, an aborted transaction
is invalid in every one of them.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.early_abort import endorsed_rwset, first_stale, recorded_versions
from dltmw.core.rwset import Version
from dltmw.core.validation import VALID, TxForMvcc, validate_block
from dltmw.v1 import common_pb2, proposal_pb2, rwset_pb2, transaction_pb2

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


@settings(max_examples=300, deadline=None)
@given(steps=history, data=st.data())
def test_an_aborted_read_fails_mvcc_after_any_continuation(steps, data) -> None:
    after = versions_after(steps)
    endorsed_at = data.draw(st.integers(0, len(steps) - 1), label="endorser's height - 1")
    peer_at = data.draw(st.integers(0, len(steps) - 1), label="gateway peer's height - 1")
    recorded = after[endorsed_at]
    if recorded is None:
        assert recorded_versions(rwset_of(None)) == {}  # absence: never aborted
        return
    committed = {K: after[peer_at]} if after[peer_at] is not None else {}
    aborted = first_stale({K: recorded}, committed, peer_at + 2) == K  # height = blocks + genesis
    # Every continuation of the chain from the peer's height: the tx is judged after it.
    later = after[peer_at:]
    outcomes = {_mvcc_code(recorded, v) for v in later}
    if aborted:
        assert outcomes == {transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT}
    if peer_at <= endorsed_at:
        assert not aborted  # a peer not ahead of the endorser never aborts


def rwset_of(version: Version | None) -> rwset_pb2.ReadWriteSet:
    return rwset_pb2.ReadWriteSet(namespace=NS, reads=[read("k", version)])


def _mvcc_code(recorded: Version, committed: Version | None) -> int:
    versions = {K: committed} if committed is not None else {}
    tx = TxForMvcc("t", VALID, rwset_of(recorded))
    return validate_block(99, [tx], versions, {}, set())[0][0]


async def test_many_submissions_take_one_state_read_and_keep_their_own_verdicts() -> None:
    """The gateway's batched Submit (`roles/gateway/staleness.stale_errors`): one read of the
    union of the keys; each envelope judged on its own reads only."""
    from dltmw.runtime.roles.gateway.staleness import stale_errors
    from dltmw.v1 import errors_pb2

    def env(*reads: rwset_pb2.KVRead) -> bytes:
        rw = rwset_pb2.ReadWriteSet(namespace=NS, reads=list(reads))
        response = proposal_pb2.ProposalResponsePayload(rwset=rw)
        tx = transaction_pb2.Transaction(response_payload=response.SerializeToString())
        header = common_pb2.Header(type=common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION)
        payload = common_pb2.Payload(header=header.SerializeToString(), data=tx.SerializeToString())
        return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()

    class Ledger:
        def __init__(self) -> None:
            self.height = 9
            self.asked: list[set[tuple[str, str]]] = []

        async def versions(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Version]:
            self.asked.append(set(keys))
            return {(NS, "a"): Version(5, 1), (NS, "b"): Version(3, 0)}

    ledger = Ledger()
    errors = await stale_errors(
        ledger,  # type: ignore[arg-type]
        [
            (env(read("a", Version(3, 0))), "stale"),
            (env(read("b", Version(3, 0))), "fresh"),
            (env(), "blind"),
            (env(read("a", Version(5, 1)), read("b", Version(3, 0))), "both-current"),
        ],
    )
    assert ledger.asked == [{(NS, "a"), (NS, "b")}]
    assert [e is None for e in errors] == [False, True, True, True]
    assert errors[0] is not None and errors[0].reason == errors_pb2.ERROR_REASON_STALE_READ
    assert errors[0].metadata == {"key": "a", "namespace": NS}
    assert await stale_errors(ledger, [(env(), "w")]) == [None] and len(ledger.asked) == 1  # type: ignore[arg-type]
