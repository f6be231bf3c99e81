"""Endorsements signed per batch (core/endorsement_batch.py): one signature over a Merkle root
of the endorsements an endorser answered together, checked through each endorsement's proof
by the commit rule (`txcheck.check_transaction`, AND(Org1.peer, Org2.peer)), verified once per
batch per node, and counting for nothing on a channel that does not sign endorsements per
batch (peers of an older release could not check them).

Real keys, certificates and the real commit rule (tests/unit/ledger_parties.py); the peer's
signing step (`PeerChannel._sign`) with a stand-in node context and view.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_parties import NOW, Parties, header, kv_rwset, make_parties, seal
from proof_alterations import PROOF_ALTERATIONS, alter_proof

from dltmw.core import endorsement_batch
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.hashing import sha256
from dltmw.core.identity import SigningIdentity
from dltmw.core.txcheck import check_transaction
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.v1 import config_pb2, proposal_pb2, transaction_pb2
from dltmw.v1 import transaction_pb2 as C
from tests.unit.test_agreement_own_signature import _counted

PARTIES: Parties = make_parties()
VALID = C.TX_VALIDATION_CODE_VALID
POLICY_FAILURE = C.TX_VALIDATION_CODE_ENDORSEMENT_POLICY_FAILURE
Action = tuple[bytes, bytes, bytes]  # (header bytes, proposal bytes, response payload bytes)


def _view(batches: bool) -> ChannelView:
    """The parties' channel (bank: AND(Org1.peer, Org2.peer)) with or without the flag; a fresh
    membership each time (nothing remembered)."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(PARTIES.view.config)
    config.endorsement_batches = batches
    return channel_view(config)


def _actions(n: int) -> list[Action]:
    out: list[Action] = []
    for i in range(n):
        header_bytes = header(PARTIES.user).SerializeToString()
        invocation = proposal_pb2.ContractInvocation(contract="bank", function="put")
        proposal = proposal_pb2.Proposal(
            header=header_bytes, payload=invocation.SerializeToString()
        )
        proposal_bytes = proposal.SerializeToString()
        response = proposal_pb2.ProposalResponsePayload(
            proposal_hash=sha256(proposal_bytes),
            rwset=kv_rwset(writes=[(f"k{i}", b"v")], namespace="bank"),
            response=proposal_pb2.ContractResponse(status=200),
        )
        out.append((header_bytes, proposal_bytes, response.SerializeToString()))
    return out


def _endorse(actions: list[Action], batches: bool = True) -> list[list[proposal_pb2.Endorsement]]:
    """Per action, the endorsements of peer1 and peer2, each peer's signed as ONE batch (with a
    membership of its own: the checking view has remembered nothing)."""
    payloads = [r for _, _, r in actions]
    per_peer = [
        endorsement_batch.sign(peer, _view(batches).membership, payloads, batches)
        for peer in (PARTIES.peer1, PARTIES.peer2)
    ]
    return [list(pair) for pair in zip(*per_peer, strict=True)]


def _envelope(action: Action, endorsements: list[proposal_pb2.Endorsement]) -> bytes:
    header_bytes, proposal_bytes, response_bytes = action
    tx = transaction_pb2.Transaction(
        proposal_bytes=proposal_bytes, response_payload=response_bytes, endorsements=endorsements
    )
    return seal(PARTIES.user, header_bytes, tx.SerializeToString())


def _codes(view: ChannelView, actions: list[Action], signed: list[Any]) -> list[int]:
    return [
        check_transaction(_envelope(a, e), view).code for a, e in zip(actions, signed, strict=True)
    ]


def test_a_batch_is_valid_and_each_endorser_is_verified_once_per_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view = _view(batches=True)
    actions = _actions(5)
    signed = _endorse(actions)
    assert all(e.HasField("batch_proof") for pair in signed for e in pair)
    assert len({e.signature for pair in signed for e in pair}) == 2  # one per endorser
    envelopes = [_envelope(a, e) for a, e in zip(actions, signed, strict=True)]
    calls = _counted(monkeypatch)
    assert [check_transaction(env, view).code for env in envelopes] == [VALID] * 5
    endorsement_checks = [c for c in calls if c.startswith(endorsement_batch.BATCH_DOMAIN)]
    assert len(endorsement_checks) == 2  # one public-key operation per endorser, five txs
    assert len(calls) == 2 + 5  # and the five creators' envelope signatures


def test_a_batch_proof_counts_for_nothing_on_a_channel_without_batches() -> None:
    actions = _actions(3)
    signed = _endorse(actions)
    assert _codes(_view(batches=False), actions, signed) == [POLICY_FAILURE] * 3


def test_lone_endorsements_stay_valid_on_a_channel_with_batches() -> None:
    actions = _actions(3)
    signed = _endorse(actions, batches=False)  # as an endorser of an older release signs
    assert not any(e.HasField("batch_proof") for pair in signed for e in pair)
    assert _codes(_view(batches=True), actions, signed) == [VALID] * 3
    assert _codes(_view(batches=False), actions, signed) == [VALID] * 3


def test_a_batch_of_one_is_signed_alone() -> None:
    (lone,) = endorsement_batch.sign(PARTIES.peer1, _view(True).membership, [b"payload"], True)
    assert not lone.HasField("batch_proof")
    assert endorsement_batch.signed_data(lone, b"payload", True) == b"payload" + lone.endorser


def _altered(e: proposal_pb2.Endorsement, how: str) -> proposal_pb2.Endorsement:
    out = proposal_pb2.Endorsement()
    out.CopyFrom(e)
    if alter_proof(out, how):
        pass
    elif how == "endorser":  # the other endorser named under this one's proof and signature
        out.endorser = PARTIES.peer2.identity_bytes
    return out


@pytest.mark.parametrize(
    "how",
    [*PROOF_ALTERATIONS, "endorser"],  # and another endorser's leaf under the same proof
)
def test_an_altered_batch_endorsement_does_not_count(how: str) -> None:
    view = _view(batches=True)
    actions = _actions(4)
    signed = _endorse(actions)
    pair = [_altered(signed[1][0], how), signed[1][1]]
    assert _codes(view, [actions[1]], [pair]) == [POLICY_FAILURE]
    assert _codes(view, [actions[1]], [signed[1]]) == [VALID]  # control


def test_another_payload_under_a_valid_proof_does_not_count() -> None:
    view = _view(batches=True)
    actions = _actions(3)
    signed = _endorse(actions)
    # transaction 1's payload with transaction 2's endorsements (a valid proof of another leaf)
    assert _codes(view, [actions[1]], [signed[2]]) == [POLICY_FAILURE]


class _Signer:
    """A peer's signer that counts what it signs."""

    def __init__(self, inner: SigningIdentity) -> None:
        self.inner = inner
        self.identity_bytes = inner.identity_bytes
        self.identity_id = inner.identity_id
        self.signed: list[bytes] = []

    def sign(self, data: bytes) -> bytes:
        self.signed.append(data)
        return self.inner.sign(data)


@pytest.mark.parametrize("batches", [True, False])
def test_a_peer_signs_its_batch_once_where_the_channel_allows_it(batches: bool) -> None:
    view = _view(batches)
    signer = _Signer(PARTIES.peer1)
    peer = cast(Any, SimpleNamespace(ctx=SimpleNamespace(signer=signer), view=view))
    actions = _actions(6)
    refused = proposal_pb2.ProposalResponse(response=proposal_pb2.ContractResponse(status=500))
    responses = [
        proposal_pb2.ProposalResponse(payload=r, response=proposal_pb2.ContractResponse(status=200))
        for _, _, r in actions
    ]
    PeerChannel._sign(peer, [*responses[:3], refused, *responses[3:]], batches)
    assert len(signer.signed) == (1 if batches else 6)
    assert not refused.HasField("endorsement")  # a refusal is not endorsed
    others = _endorse(actions, batches)
    pairs = [[r.endorsement, o[1]] for r, o in zip(responses, others, strict=True)]
    assert all(p[0].HasField("batch_proof") == batches for p in pairs)
    assert _codes(_view(batches), actions, pairs) == [VALID] * 6


@settings(max_examples=20, deadline=None)
@given(size=st.integers(min_value=2, max_value=40), data=st.data())
def test_every_position_of_any_batch_size_verifies_and_no_other(
    size: int, data: st.DataObject
) -> None:
    payloads = [bytes([i % 256]) * (1 + i) for i in range(size)]
    signed = endorsement_batch.sign(PARTIES.peer1, _view(True).membership, payloads, True)
    i = data.draw(st.integers(min_value=0, max_value=size - 1))
    j = data.draw(st.integers(min_value=0, max_value=size - 1).filter(lambda j: j != i))
    membership = _view(True).membership
    good = endorsement_batch.signed_data(signed[i], payloads[i], True)
    assert good is not None
    membership.verify(signed[i].endorser, good, signed[i].signature, NOW)
    assert endorsement_batch.signed_data(signed[i], payloads[j], True) != good
