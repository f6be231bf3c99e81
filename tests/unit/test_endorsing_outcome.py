"""What the gateway tells the client when endorsement does not satisfy the policy
(dltmw.runtime.roles.gateway.endorsing._prepare): the contract's refusal only when every endorser
refused; a mix of refusals and endorsements means the endorsers simulated on different heights,
and the client should retry (ENDORSEMENT_MISMATCH), as for differing results. A refusal simulated
on a state older than a block the gateway knew committed is asked again at that block, and one
below the block asked for (`stale`) is not final either: read your writes must never end in a
CONTRACT_FAILED from an endorser that was behind."""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace
from typing import Any

import pytest

from dltmw.core.errors import ClientError, DltmwError, PeerError, TransientError
from dltmw.core.handlers.endorsement import Candidate, Decision, EndorsementCollector
from dltmw.core.policy import PolicyResult, Signer, parse_policy
from dltmw.runtime.roles.gateway.endorsing import _Job, _prepare
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.v1 import errors_pb2, proposal_pb2


def _answer(status: int, block: int = 7) -> proposal_pb2.ProposalResponse:
    return proposal_pb2.ProposalResponse(
        response=proposal_pb2.ContractResponse(status=status, message=f"status {status}"),
        state_block_number=block,
    )


@pytest.mark.parametrize(
    ("statuses", "mismatch", "error", "reason", "stale"),
    [
        ([400, 400], False, ClientError, "CONTRACT_FAILED", set()),
        ([400], False, ClientError, "CONTRACT_FAILED", set()),
        ([200, 400], False, PeerError, "ENDORSEMENT_MISMATCH", set()),
        ([200, 200], True, PeerError, "ENDORSEMENT_MISMATCH", set()),
        ([400], False, PeerError, "ENDORSEMENT_MISMATCH", {"peer0"}),
        ([400, 400], False, PeerError, "ENDORSEMENT_MISMATCH", {"peer1"}),
    ],
    ids=[
        "every-endorser-refused",
        "the-only-endorser-refused",
        "lagging-endorser-refused",
        "different-results",
        "the-only-refusal-is-below-the-block-asked-for",
        "a-refusal-is-below-the-block-asked-for",
    ],
)
def test_unsatisfied_endorsement_outcome(
    statuses: list[int], mismatch: bool, error: type[DltmwError], reason: str, stale: set[str]
) -> None:
    job: Any = SimpleNamespace(
        decision=Decision(PolicyResult.UNSATISFIABLE, mismatch=mismatch),
        responses={f"peer{i}": _answer(s) for i, s in enumerate(statuses)},
        unreachable=set(),
        behind=set(),
        stale=stale,
        denied=[],
        final=None,
    )
    with pytest.raises(error) as raised:
        _prepare(job)
    assert raised.value.reason_name == reason


@pytest.mark.parametrize(
    ("behind", "reason"),
    [(set(), "PEER_UNAVAILABLE"), ({"peer1"}, "HEIGHT_NOT_REACHED")],
    ids=["endorsers-unreachable", "an-endorser-did-not-reach-the-clients-block"],
)
def test_unreachable_endorsers_are_a_retryable_outcome(behind: set[str], reason: str) -> None:
    job: Any = SimpleNamespace(
        decision=Decision(PolicyResult.UNSATISFIABLE, failures=("peer1: late",)),
        responses={},
        unreachable={"peer1"},
        behind=behind,
        stale=set(),
        denied=[],
        final=None,
    )
    with pytest.raises(TransientError) as raised:
        _prepare(job)
    assert raised.value.reason_name == reason


def test_a_remote_refusal_of_the_creator_is_final() -> None:
    """An endorser that refuses the proposal's creator (a certificate revoked, an organisation
    removed by a config block the gateway's own peer has not seen) decides the outcome: the
    client gets that reason, not PEER_UNAVAILABLE, and does not retry."""
    job = _job()
    refused = ClientError(
        errors_pb2.ERROR_REASON_NOT_A_MEMBER, "peer0.org2: BrokerB is not a member"
    )
    assert job.step("peer0.org1", _answer(200), (b"peer0.org1",), 7) == []
    assert job.step("peer0.org2", refused, (b"peer0.org2",), 7) == []
    with pytest.raises(ClientError) as raised:
        _prepare(job)
    assert raised.value.reason_name == "NOT_A_MEMBER"


def _job(min_block: int = 0, local_block: int = 7) -> Any:
    """A proposal under AND(Org1.peer, Org2.peer), nothing answered yet."""
    candidates = [
        Candidate(n, Signer(n.encode(), org, frozenset({"peer"})))
        for n, org in (("peer0.org1", "Org1"), ("peer0.org2", "Org2"))
    ]
    collector = EndorsementCollector(parse_policy("AND(Org1.peer, Org2.peer)"), candidates)
    checked: Any = None
    return _Job(checked, collector, collector.decision(), min_block, max(min_block, local_block))


@pytest.mark.parametrize(
    ("min_block", "local_block", "refused_at", "ask_again_at"),
    [
        (0, 7, 6, 7),  # the gateway's own peer holds block 7: the endorser was behind
        (9, 7, 8, 9),  # the client saw block 9 (the gateway's peer waited for it)
        (0, 7, 7, None),  # simulated on the newest state known: a final refusal
        (0, 7, 8, None),  # ahead of the gateway's peer: a final refusal
    ],
    ids=[
        "behind-the-gateways-peer-is-asked-again",
        "behind-the-clients-block-is-asked-again",
        "on-the-newest-known-state-is-final",
        "ahead-is-final",
    ],
)
def test_a_refusal_from_behind_is_asked_again_once(
    min_block: int, local_block: int, refused_at: int, ask_again_at: int | None
) -> None:
    job = _job(min_block, local_block)
    node, identity = "peer0.org2", (b"peer0.org2",)
    again_at = [] if ask_again_at is None else [(node, ask_again_at)]
    assert job.step(node, _answer(404, refused_at), identity, local_block) == again_at
    if ask_again_at is None:
        assert job.decision.result is PolicyResult.UNSATISFIABLE
        return
    assert job.decision.result is PolicyResult.PENDING, "not fed to the policy handler"
    # Asked again, it refuses on the block asked for while the gateway's peer moved on: final
    # (a genuine refusal, e.g. an overdraft under load, must stay one).
    again = copy.deepcopy(job)
    assert again.step(node, _answer(404, ask_again_at), identity, ask_again_at + 1) == []
    with pytest.raises(ClientError) as final:
        _prepare(again)
    assert final.value.reason_name == "NOT_FOUND"  # a contract's 404 (core/contract.py)
    # Asked again, it refuses below the block asked for (it ignored it): never final.
    assert job.step(node, _answer(404, ask_again_at - 1), identity, ask_again_at) == []
    assert job.decision.result is PolicyResult.UNSATISFIABLE
    with pytest.raises(PeerError) as raised:
        _prepare(job)
    assert raised.value.reason_name == "ENDORSEMENT_MISMATCH"


def _endorsed(payload: bytes, block: int, endorser: bytes) -> proposal_pb2.ProposalResponse:
    answer = _answer(200, block)
    answer.payload = payload
    answer.endorsement.endorser = endorser
    return answer


@pytest.mark.parametrize("behind_first", [True, False], ids=["behind-first", "behind-last"])
def test_endorsements_that_differ_because_one_endorser_was_behind_are_asked_again(
    behind_first: bool,
) -> None:
    """Two endorsements with different results, one simulated on an older block: the older one
    is asked again at the newer block (once), whichever answered first, and its first answer no
    longer counts; the same result from both then satisfies the policy. Asked again and still
    different, the mismatch stands."""
    job = _job(local_block=7)
    old = ("peer0.org2", _endorsed(b"balance 10", 6, b"peer0.org2"), (b"peer0.org2",))
    new = ("peer0.org1", _endorsed(b"balance 20", 7, b"peer0.org1"), (b"peer0.org1",))
    first, second = (old, new) if behind_first else (new, old)
    assert job.step(*first, 7) == []
    assert job.step(*second, 7) == [("peer0.org2", 7)]
    assert job.decision.result is PolicyResult.PENDING
    retry = copy.deepcopy(job)
    assert (
        retry.step("peer0.org2", _endorsed(b"balance 20", 7, b"peer0.org2"), (b"peer0.org2",), 7)
        == []
    )
    assert retry.decision.result is PolicyResult.SATISFIED
    # Asked again, it answers the old result once more: not asked a third time.
    assert (
        job.step("peer0.org2", _endorsed(b"balance 10", 6, b"peer0.org2"), (b"peer0.org2",), 7)
        == []
    )
    assert job.decision.result is PolicyResult.UNSATISFIABLE and job.decision.mismatch


def test_endorsements_that_differ_on_the_same_block_are_a_mismatch_at_once() -> None:
    """Different results on the same state (a non-deterministic contract): nobody to ask again."""
    job = _job(local_block=7)
    assert job.step("peer0.org1", _endorsed(b"a", 7, b"peer0.org1"), (b"peer0.org1",), 7) == []
    assert job.step("peer0.org2", _endorsed(b"b", 7, b"peer0.org2"), (b"peer0.org2",), 7) == []
    assert job.decision.result is PolicyResult.UNSATISFIABLE and job.decision.mismatch


def _or_job() -> Any:
    """A proposal under OR(Org1.peer, Org2.peer): either endorsement satisfies it."""
    candidates = [
        Candidate(n, Signer(n.encode(), org, frozenset({"peer"})))
        for n, org in (("peer0.org1", "Org1"), ("peer0.org2", "Org2"))
    ]
    collector = EndorsementCollector(parse_policy("OR(Org1.peer, Org2.peer)"), candidates)
    checked: Any = SimpleNamespace(tx_id="tx0")
    return _Job(checked, collector, collector.decision(), 0, 7)


def _gateway(ask: Any, on_ledger: set[str] | None = None) -> Any:
    """`BatchEndorser`'s collaborators for `_gather` and `_check_unasked`: the gateway runs on
    peer0.org1; `ask` answers for each endorser; `on_ledger` the tx_ids its ledger holds."""
    peers = [SimpleNamespace(node_id=n, identity=n.encode()) for n in ("peer0.org1", "peer0.org2")]
    reads: list[list[str]] = []

    async def existing_tx_ids(tx_ids: Any) -> set[str]:
        wanted = list(tx_ids)
        reads.append(wanted)
        return {t for t in wanted if t in (on_ledger or set())}

    peer = SimpleNamespace(
        view=SimpleNamespace(
            config=SimpleNamespace(peers=peers),
            membership=SimpleNamespace(reference_of=lambda identity: identity),
        ),
        ledger=SimpleNamespace(existing_tx_ids=existing_tx_ids),
    )
    peer.duplicates = lambda batch: PeerChannel.duplicates(peer, batch)
    return SimpleNamespace(
        _ctx=SimpleNamespace(node_id="peer0.org1"),
        _peer=peer,
        _ask=ask,
        _local_block=lambda: 7,
        reads=reads,
    )


async def test_a_duplicate_the_local_peer_finds_is_final_though_another_endorsed_first() -> None:
    """The gateway's duplicate check rides on its own peer's endorsement (endorsing.py's module
    docstring): under OR a remote endorsement that satisfies the policy before the local answer
    must not make a duplicate tx_id an endorsed transaction — the gathering waits for the local
    answer and the client gets DUPLICATE_TX_ID, as when admission read it first. Red if the
    loop stops at the first decision (the job is SATISFIED), or if the local refusal is stepped
    like a remote one (the remote endorsement satisfies the OR)."""
    from dltmw.runtime.roles.gateway.endorsing import BatchEndorser

    firsts: dict[str, bool] = {}
    local_may_answer = asyncio.Event()

    async def ask(node_id: str, checked: list[Any], min_blocks: list[int], first: bool) -> Any:
        firsts[node_id] = first
        if node_id == "peer0.org2":
            local_may_answer.set()  # the remote endorsement is stepped first
            return [_endorsed(b"ok", 7, b"peer0.org2")] * len(checked)
        await local_may_answer.wait()
        await asyncio.sleep(0.01)  # well after the remote answer was stepped
        dup = ClientError(errors_pb2.ERROR_REASON_DUPLICATE_TX_ID, "tx tx0 is on the ledger")
        return [dup] * len(checked)

    job = _or_job()
    gateway = _gateway(ask)
    await BatchEndorser._gather(gateway, [job])
    assert firsts == {"peer0.org1": True, "peer0.org2": True}
    assert job.final is not None and job.decision.result is PolicyResult.UNSATISFIABLE
    with pytest.raises(ClientError) as raised:
        _prepare(job)
    assert raised.value.reason_name == "DUPLICATE_TX_ID"


async def test_a_proposal_the_local_peer_is_not_asked_for_is_checked_for_duplicates_first() -> None:
    """A policy that names only another organisation does not ask the gateway's own peer: its
    duplicate check is a read of its own before any ask (`_check_unasked`), and a duplicate is
    refused before anyone is asked. Red if `_check_unasked` returns without reading."""
    from dltmw.runtime.roles.gateway.endorsing import BatchEndorser

    candidates = [Candidate("peer0.org2", Signer(b"peer0.org2", "Org2", frozenset({"peer"})))]
    collector = EndorsementCollector(parse_policy("OR(Org2.peer)"), candidates)
    remote_only = _Job(SimpleNamespace(tx_id="tx0"), collector, collector.decision(), 0, 7)
    asked_locally = _or_job()
    asked_locally.checked = SimpleNamespace(tx_id="tx9")
    gateway = _gateway(None, on_ledger={"tx0", "tx9"})
    await BatchEndorser._check_unasked(gateway, {0: remote_only, 1: asked_locally})
    assert gateway.reads == [["tx0"]], "only the proposal the local peer is not asked for"
    assert remote_only.final is not None and asked_locally.final is None
    assert remote_only.decision.result is PolicyResult.UNSATISFIABLE
    with pytest.raises(ClientError) as raised:
        _prepare(remote_only)
    assert raised.value.reason_name == "DUPLICATE_TX_ID"
