"""A client's proposals and envelopes signed per batch (core/creator_batch.py): one signature over
a Merkle root of a request's items, checked through each item's proof by admission (endorser,
gateway, orderer) and by the commit rule, verified once per batch per node, refused where the
channel does not take them (endorser transactions: `creator_batches`, private transactions:
`private_creator_batches`, config updates never), and when altered.

Real keys, certificates, transactions and the real checks (`core/txcheck.py`); the client side
(`client/creator_signing.py`) signs a real TransactRequest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial

import pytest
from google.protobuf.message import DecodeError
from ledger_parties import CHANNEL, NOW, Parties, endorser_tx, header, kv_rwset, make_parties

from dltmw.client.creator_signing import CreatorSigner
from dltmw.core import creator_batch
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.errors import ClientError
from dltmw.core.txcheck import (
    check_envelope,
    check_orderable,
    check_signed_proposal,
    check_transaction,
)
from dltmw.v1 import common_pb2, config_pb2, gateway_service_pb2, proposal_pb2
from dltmw.v1 import transaction_pb2 as C
from tests.unit.test_agreement_own_signature import _counted

PARTIES = make_parties()
VALID = C.TX_VALIDATION_CODE_VALID
BAD_CREATOR = C.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE


def _view(batches: bool, private: bool = False) -> ChannelView:
    """A fresh view (its own memo: nothing verified yet) with or without creator batches
    (`private`: of private transactions' envelopes too)."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(PARTIES.view.config)
    config.creator_batches = batches
    config.private_creator_batches = private
    return channel_view(config)


def _private_payloads(
    n: int, kind: int = common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION, at: datetime = NOW
) -> list[bytes]:
    """Payloads of `n` valid private transactions (the channel requires no agreements), or of
    another `kind` with the same data; their headers stamped `at`."""
    data = C.PrivateTransaction(payload_hash=bytes(range(32))).SerializeToString()
    return [
        common_pb2.Payload(
            header=header(PARTIES.user, kind, at=at).SerializeToString(), data=data
        ).SerializeToString()
        for _ in range(n)
    ]


def _payloads(n: int, parties: Parties = PARTIES, at: datetime = NOW) -> list[bytes]:
    """Payloads of `n` valid endorser transactions (kv, endorsed by Org1's peer), their
    headers stamped `at`."""
    return [
        common_pb2.Envelope.FromString(
            endorser_tx(parties, kv_rwset(writes=[(f"k{i}", b"v")]), h=header(parties.user, at=at))
        ).payload
        for i in range(n)
    ]


def _proposals(n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        invocation = proposal_pb2.ContractInvocation(contract="kv", function="put", args=[b"k"])
        out.append(
            proposal_pb2.Proposal(
                header=header(PARTIES.user).SerializeToString(),
                payload=invocation.SerializeToString(),
            ).SerializeToString()
        )
    return out


def _bytes(envelopes: Sequence[common_pb2.Envelope]) -> list[bytes]:
    return [e.SerializeToString() for e in envelopes]


def _refused(call: object, reason: str | set[str]) -> None:
    with pytest.raises(ClientError) as exc:
        call()  # type: ignore[operator]
    assert exc.value.reason_name in ({reason} if isinstance(reason, str) else reason)


# --- a valid batch ----------------------------------------------------------------------------


def test_a_batch_of_envelopes_is_valid_everywhere_and_verified_once_per_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    envelopes = creator_batch.sign_envelopes(PARTIES.user, _payloads(5))
    assert all(e.HasField("batch_proof") for e in envelopes)
    assert len({e.signature for e in envelopes}) == 1
    calls = _counted(monkeypatch)
    gateway, committer = _view(True), _view(True)
    for raw in _bytes(envelopes):
        check_envelope(raw, {CHANNEL: gateway}, NOW, 900.0)
    assert [check_transaction(raw, committer).code for raw in _bytes(envelopes)] == [VALID] * 5
    creator_calls = [c for c in calls if c.startswith(creator_batch.ENVELOPE_BATCH_DOMAIN)]
    assert len(creator_calls) == 2  # one per node (gateway, committer) for the five


def test_a_batch_of_private_envelopes_is_valid_everywhere_and_verified_once_per_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Private envelopes under a request's one root (with an endorser transaction's: one tree
    for the request's envelopes) where the channel takes both kinds."""
    envelopes = creator_batch.sign_envelopes(PARTIES.user, [*_private_payloads(4), *_payloads(1)])
    assert len({e.signature for e in envelopes}) == 1
    calls = _counted(monkeypatch)
    gateway, orderer, committer = _view(True, True), _view(True, True), _view(True, True)
    for raw in _bytes(envelopes):
        check_envelope(raw, {CHANNEL: gateway}, NOW, 900.0)  # the agreements' rule too
        check_orderable(raw, {CHANNEL: orderer})
    checked = [check_transaction(raw, committer) for raw in _bytes(envelopes)]
    assert [c.code for c in checked] == [VALID] * 5
    assert all(c.tx_id for c in checked)
    creator_calls = [c for c in calls if c.startswith(creator_batch.ENVELOPE_BATCH_DOMAIN)]
    assert len(creator_calls) == 3  # one per node for the five


def test_a_batch_of_proposals_is_admitted_and_verified_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed = creator_batch.sign_proposals(PARTIES.user, _proposals(4))
    assert all(p.HasField("batch_proof") for p in signed)
    calls = _counted(monkeypatch)
    view = _view(True)
    checked = [check_signed_proposal(p, view, NOW, 900.0) for p in signed]
    assert [c.creator.org_id for c in checked] == ["Org1"] * 4
    assert [c.batch_proof for c in checked] == [p.batch_proof for p in signed]  # forwarded on
    assert len(calls) == 1 and calls[0].startswith(creator_batch.PROPOSAL_BATCH_DOMAIN)


def test_a_batch_of_one_is_signed_alone() -> None:
    (envelope,) = creator_batch.sign_envelopes(PARTIES.user, _payloads(1))
    (proposal,) = creator_batch.sign_proposals(PARTIES.user, _proposals(1))
    assert not envelope.HasField("batch_proof") and not proposal.HasField("batch_proof")
    off = _view(False)  # so it passes where batches are off
    assert check_transaction(envelope.SerializeToString(), off).code == VALID
    check_signed_proposal(proposal, off, NOW, 900.0)


# --- altered proofs and items -----------------------------------------------------------------


def _altered(proof: common_pb2.BatchProof, how: str) -> None:
    if how == "index":
        proof.leaf_index = (proof.leaf_index + 1) % proof.leaf_count
    elif how == "count":  # (a count whose path computes the same root proves the same item in
        proof.leaf_count -= 1  # the same signed root: 1 of 3 and 1 of 4 do; 1 of 2 cannot)
    elif how == "path":
        proof.path[0] = bytes(32)
    elif how == "path-short":
        del proof.path[-1]


ALTERATIONS = ["index", "count", "path", "path-short", "no-proof", "item"]
# a well-formed proof leading to another root: the signature does not verify (as for a lone
# signature over other bytes); a path of the wrong length for its position and tree size:
# refused as malformed. Which one an altered index or count gives depends on the tree's shape.
EITHER = {"BAD_SIGNATURE", "CREATOR_BATCH_REFUSED"}
REASON: dict[str, str | set[str]] = {
    "index": EITHER,
    "count": EITHER,
    "path": "BAD_SIGNATURE",
    "path-short": "CREATOR_BATCH_REFUSED",
    "no-proof": "BAD_SIGNATURE",
    "item": "BAD_SIGNATURE",
}


@pytest.mark.parametrize("private", [False, True], ids=["endorser", "private"])
@pytest.mark.parametrize("how", ALTERATIONS)
def test_an_altered_envelope_proof_or_payload_is_refused_and_recorded_invalid(
    how: str, private: bool
) -> None:
    """Of an endorser transaction, or a private one on a channel taking both kinds' proofs."""
    payloads = _private_payloads(3) if private else _payloads(3)
    envelopes = creator_batch.sign_envelopes(PARTIES.user, payloads)
    env = envelopes[1]
    if how == "no-proof":  # the batch signature presented as a lone one
        env.ClearField("batch_proof")
    elif how == "item":  # another transaction's payload under this proof
        env.payload = envelopes[2].payload
    else:
        _altered(env.batch_proof, how)
    raw = env.SerializeToString()
    reason = REASON[how]
    view = partial(_view, True, private)
    _refused(lambda: check_envelope(raw, {CHANNEL: view()}, NOW, 900.0), reason)
    _refused(lambda: check_orderable(raw, {CHANNEL: view()}), reason)
    assert check_transaction(raw, view()) == check_transaction(raw, view())
    checked = check_transaction(raw, view())
    assert (checked.code, checked.tx_id) == (BAD_CREATOR, "")  # squats no tx_id


@pytest.mark.parametrize("how", ALTERATIONS)
def test_an_altered_proposal_proof_or_item_is_refused(how: str) -> None:
    signed = creator_batch.sign_proposals(PARTIES.user, _proposals(3))
    p = signed[1]
    if how == "no-proof":
        p.ClearField("batch_proof")
    elif how == "item":
        p.proposal_bytes = signed[2].proposal_bytes
    else:
        _altered(p.batch_proof, how)
    reason = REASON[how]
    _refused(lambda: check_signed_proposal(p, _view(True), NOW, 900.0), reason)


# --- where proofs are not taken ---------------------------------------------------------------


def test_proofs_are_refused_where_the_channel_does_not_take_them() -> None:
    envelopes = creator_batch.sign_envelopes(PARTIES.user, _payloads(2))
    proposals = creator_batch.sign_proposals(PARTIES.user, _proposals(2))
    off = _view(False)
    refused = "CREATOR_BATCH_REFUSED"
    forwarded = {CHANNEL}  # a member peer's forward: no signature check, still the proof's rule
    for raw in _bytes(envelopes):
        _refused(partial(check_envelope, raw, {CHANNEL: off}, NOW, 900.0), refused)
        _refused(partial(check_orderable, raw, {CHANNEL: off}), refused)
        _refused(
            partial(check_envelope, raw, {CHANNEL: off}, NOW, 900.0, None, True, forwarded), refused
        )
        assert check_transaction(raw, off).code == BAD_CREATOR
    for p in proposals:
        _refused(partial(check_signed_proposal, p, off, NOW, 900.0), refused)


@pytest.mark.parametrize(
    ("kind", "private_flag"),
    [
        (common_pb2.HEADER_TYPE_CONFIG_UPDATE, True),
        (common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION, False),
    ],
)
def test_a_proof_on_a_config_update_or_unflagged_private_transaction_is_refused(
    kind: int, private_flag: bool
) -> None:
    """A config update is never signed per batch; a private transaction only where the channel
    takes private proofs (`private_creator_batches`), whatever `creator_batches` says."""
    payloads = [*_private_payloads(1, kind), *_payloads(1)]
    raw = creator_batch.sign_envelopes(PARTIES.user, payloads)[0].SerializeToString()
    on = _view(True, private_flag)
    _refused(lambda: check_envelope(raw, {CHANNEL: on}, NOW, 900.0), "CREATOR_BATCH_REFUSED")
    _refused(lambda: check_orderable(raw, {CHANNEL: on}), "CREATOR_BATCH_REFUSED")
    assert check_transaction(raw, on).code == BAD_CREATOR


def test_the_private_flag_takes_no_endorser_transaction_proofs() -> None:
    """Each kind its own flag: private_creator_batches alone does not let endorser transactions
    carry proofs."""
    envelopes = creator_batch.sign_envelopes(PARTIES.user, [*_payloads(1), *_private_payloads(1)])
    endorser, private = _bytes(envelopes)
    only_private = _view(False, True)
    _refused(
        lambda: check_envelope(endorser, {CHANNEL: only_private}, NOW, 900.0),
        "CREATOR_BATCH_REFUSED",
    )
    assert check_transaction(endorser, only_private).code == BAD_CREATOR
    assert check_transaction(private, only_private).code == VALID


def test_an_envelope_with_unknown_fields_in_its_proof_is_not_canonical() -> None:
    envelope = creator_batch.sign_envelopes(PARTIES.user, _payloads(2))[0]
    raw = envelope.SerializeToString() + b""
    proof = envelope.batch_proof.SerializeToString() + b"\x20\x01"  # field 4 varint: unknown
    padded = common_pb2.Envelope(payload=envelope.payload, signature=envelope.signature)
    noisy = padded.SerializeToString() + b"\xaa\x24" + bytes([len(proof)]) + proof  # field 581
    check_envelope(raw, {CHANNEL: _view(True)}, NOW, 900.0)
    _refused(lambda: check_envelope(noisy, {CHANNEL: _view(True)}, NOW, 900.0), "MALFORMED")


def test_the_domains_differ_and_cannot_parse_as_a_lone_item() -> None:
    domains = {creator_batch.PROPOSAL_BATCH_DOMAIN, creator_batch.ENVELOPE_BATCH_DOMAIN}
    assert len(domains) == 2
    for domain in domains:
        with pytest.raises(DecodeError):
            proposal_pb2.Proposal.FromString(domain + bytes(32))
        with pytest.raises(DecodeError):
            common_pb2.Payload.FromString(domain + bytes(32))


# --- the client -------------------------------------------------------------------------------

G = gateway_service_pb2


def test_the_client_signs_only_the_items_left_unsigned_once_per_kind() -> None:
    signer = CreatorSigner(PARTIES.user, batched_channels=[CHANNEL])
    proposals, payloads = _proposals(3), _payloads(3)
    alone = signer.proposal(proposals[2])
    request = G.TransactRequest(
        endorse=[
            G.EndorseItem(ref=1, request=G.EndorseRequest(signed_proposal={"proposal_bytes": b}))
            for b in proposals[:2]
        ]
        + [G.EndorseItem(ref=3, request=G.EndorseRequest(signed_proposal=alone))],
        submit=[
            G.SubmitItem(ref=i + 1, request=G.SubmitRequest(envelope={"payload": p}))
            for i, p in enumerate(payloads)
        ],
    )
    request.endorse[1].ref = 2
    unsigned = {("e", 1), ("e", 2), ("s", 1), ("s", 2), ("s", 3)}
    signer.sign_request(request, unsigned.__contains__)
    signed = [i.request.signed_proposal for i in request.endorse]
    assert signed[0].signature == signed[1].signature != signed[2].signature
    assert signed[2] == alone  # signed alone by its caller: untouched
    assert len({i.request.envelope.signature for i in request.submit}) == 1
    assert (signer.batches, signer.batched_items) == (2, 5)
    view = _view(True)
    for p in signed:
        check_signed_proposal(p, view, NOW, 900.0)
    for i in request.submit:
        assert check_transaction(i.request.envelope.SerializeToString(), view).code == VALID
    assert signer.batches_on(CHANNEL)
    signer.signs_alone(CHANNEL)
    assert not signer.batches_on(CHANNEL)


def test_the_client_keeps_the_private_setting_apart() -> None:
    signer = CreatorSigner(PARTIES.user, batched_channels=[], private_batched_channels=[CHANNEL])
    assert signer.batches_on(CHANNEL, private=True) and not signer.batches_on(CHANNEL)
    signer.signs_alone(CHANNEL)  # an endorser item refused: the private setting stays
    assert signer.batches_on(CHANNEL, private=True)
    signer.signs_alone(CHANNEL, private=True)
    assert not signer.batches_on(CHANNEL, private=True)


def test_a_presuming_client_batches_every_channel_until_it_refuses() -> None:
    """The SDK's signer (no genesis read): any channel is presumed to take endorser proofs
    until it refuses one, and only that channel is then signed alone; private ones never."""
    signer = CreatorSigner(PARTIES.user, presuming=True)
    assert signer.batches_on(CHANNEL) and signer.batches_on("other")
    assert not signer.batches_on(CHANNEL, private=True)
    signer.signs_alone(CHANNEL)
    assert not signer.batches_on(CHANNEL) and signer.batches_on("other")
