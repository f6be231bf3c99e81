"""Identity references (core/identity.py, `ChannelConfig.identity_references`): a node the
channel's config lists signs as `Identity{org_id, certificate_ref}`; every node resolves it
from the config in force and runs every check on the full certificate; an unknown reference has
its own reason and validation code; a channel without the flag refuses references as malformed.
The commit rule gives the same codes whether the config's nodes sign in full or by reference.

Real keys, certificates and the real commit rule (tests/unit/ledger_parties.py).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_parties import NOW, header, kv_rwset, make_parties, seal

from dltmw.core import endorsement_batch
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.errors import ClientError
from dltmw.core.hashing import compute_tx_id, sha256
from dltmw.core.identity import (
    MalformedIdentity,
    NotAMember,
    Revoked,
    SigningIdentity,
    UnknownReference,
    reference_bytes,
)
from dltmw.core.light_client import block_signer, check_orderer_quorum
from dltmw.core.policy import PolicyResult
from dltmw.core.privacy import agreement as ag
from dltmw.core.privacy import agreement_batch
from dltmw.core.txcheck import check_envelope, check_transaction
from dltmw.runtime.explorer import view as explorer_view
from dltmw.runtime.roles.gateway.endorsing import _named_as
from dltmw.v1 import config_pb2, identity_pb2, proposal_pb2, transaction_pb2
from dltmw.v1 import transaction_pb2 as C
from tests.unit import test_endorsing_outcome as endorsing_outcome
from tests.unit import test_private_agreement as pa

P = make_parties()
VALID = C.TX_VALIDATION_CODE_VALID
UNKNOWN = C.TX_VALIDATION_CODE_UNKNOWN_IDENTITY_REFERENCE
POLICY_FAILURE = C.TX_VALIDATION_CODE_ENDORSEMENT_POLICY_FAILURE


def _serial(s: SigningIdentity) -> str:
    return format(x509.load_der_x509_certificate(s.certificate_der).serial_number, "x")


def _view(refs: bool, revoked: SigningIdentity | None = None) -> ChannelView:
    """The parties' channel with its two peers (and orderers) listed, the flag `refs`, and
    `revoked`'s certificate on its organisation's revocation list; a fresh membership."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(P.view.config)
    config.identity_references = refs
    for node_id, s in (("peer0.org1", P.peer1), ("peer0.org2", P.peer2)):
        config.peers.add(node_id=node_id, org_id=s.org_id, identity=s.identity_bytes)
    if revoked is not None:
        org = next(o for o in config.organizations if o.org_id == revoked.org_id)
        org.revoked_serials.append(_serial(revoked))
    return channel_view(config)


def _ref(s: SigningIdentity, org_id: str | None = None) -> bytes:
    ref = reference_bytes(s.identity_bytes)
    assert ref is not None
    if org_id is None:
        return ref
    msg = identity_pb2.Identity.FromString(ref)
    msg.org_id = org_id
    return msg.SerializeToString()


# --- resolution ------------------------------------------------------------------------------


def test_a_config_node_s_reference_resolves_to_its_full_identity() -> None:
    membership = _view(True).membership
    ref = _ref(P.peer1)
    assert len(ref) < 50 and len(P.peer1.identity_bytes) > 400
    by_ref, in_full = (
        membership.identify(ref, NOW),
        membership.identify(P.peer1.identity_bytes, NOW),
    )
    assert by_ref.identity_id == in_full.identity_id == sha256(P.peer1.certificate_der)
    assert (by_ref.org_id, by_ref.roles, by_ref.common_name) == (
        in_full.org_id,
        in_full.roles,
        in_full.common_name,
    )
    assert by_ref.identity_bytes == P.peer1.identity_bytes  # in full, as the config names it
    assert membership.identify(ref, NOW) is by_ref  # cached by the bytes as sent
    # an orderer of the config is referable too
    assert membership.takes_references
    orderers = _view(True).orderer_membership
    assert orderers.identify(_ref(P.orderers[0]), NOW).org_id == P.orderers[0].org_id


def test_a_node_signs_as_its_reference_only_where_the_channel_takes_them_and_lists_it() -> None:
    on, off = _view(True).membership, _view(False).membership
    assert on.reference_of(P.peer1.identity_bytes) == _ref(P.peer1)
    assert on.reference_of(P.user.identity_bytes) == P.user.identity_bytes  # not a config node
    assert off.reference_of(P.peer1.identity_bytes) == P.peer1.identity_bytes
    assert not off.takes_references


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(lambda: _ref(P.user), id="a-member-that-is-no-config-node"),
        pytest.param(lambda: _ref(P.outsider), id="an-outsider"),
        pytest.param(lambda: _ref(P.peer1, org_id="Org2"), id="a-node-under-another-org"),
        pytest.param(
            lambda: identity_pb2.Identity(
                org_id="Org1", certificate_ref=hashlib.sha256(b"nobody").digest()
            ).SerializeToString(),
            id="no-certificate-at-all",
        ),
        pytest.param(
            lambda: identity_pb2.Identity(
                org_id="Org1",
                certificate_ref=sha256(P.peer1.certificate_der),
                signature_algorithm=2,  # not the one the config's identity names (none)
            ).SerializeToString(),
            id="another-named-algorithm",
        ),
    ],
)
def test_an_unknown_reference_is_refused_with_its_own_reason(sent) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownReference) as refused:
        _view(True).membership.identify(sent(), NOW)
    assert refused.value.reason == "UNKNOWN_IDENTITY_REFERENCE"


def _both() -> bytes:
    msg = identity_pb2.Identity.FromString(P.peer1.identity_bytes)
    msg.certificate_ref = sha256(P.peer1.certificate_der)
    return msg.SerializeToString()


def test_exactly_one_of_certificate_and_reference_where_references_are_taken() -> None:
    membership = _view(True).membership
    with pytest.raises(MalformedIdentity):
        membership.identify(_both(), NOW)
    with pytest.raises(MalformedIdentity):  # neither
        membership.identify(identity_pb2.Identity(org_id="Org1").SerializeToString(), NOW)


def test_a_channel_without_the_flag_refuses_a_reference_as_malformed_as_before() -> None:
    membership = _view(False).membership
    with pytest.raises(MalformedIdentity):
        membership.identify(_ref(P.peer1), NOW)
    # both set: the certificate with an unknown extra field, as a release before the field
    # takes it (peers of both releases decide alike on such a channel)
    assert membership.identify(_both(), NOW).identity_id == sha256(P.peer1.certificate_der)


def test_a_revoked_node_s_reference_is_refused_like_its_certificate() -> None:
    membership = _view(True, revoked=P.peer2).membership
    with pytest.raises(Revoked):
        membership.identify(P.peer2.identity_bytes, NOW)
    with pytest.raises(Revoked):
        membership.identify(_ref(P.peer2), NOW)
    assert membership.identify(_ref(P.peer1), NOW).org_id == "Org1"  # control


def test_a_reference_is_judged_at_its_time_like_the_certificate() -> None:
    membership = _view(True).membership
    later = NOW + timedelta(days=365 * 200)
    with pytest.raises(NotAMember):
        membership.identify(P.peer1.identity_bytes, later)
    with pytest.raises(NotAMember):
        membership.identify(_ref(P.peer1), later)


# --- commit ----------------------------------------------------------------------------------

Action = tuple[bytes, bytes, bytes]  # (header bytes, proposal bytes, response payload bytes)


def _action(creator: bytes | None = None, signer: SigningIdentity = P.user) -> Action:
    head = header(signer)
    if creator is not None:
        head.creator = creator
        head.tx_id = compute_tx_id(head.nonce, creator)
    header_bytes = head.SerializeToString()
    invocation = proposal_pb2.ContractInvocation(contract="bank", function="put")
    proposal_bytes = proposal_pb2.Proposal(
        header=header_bytes, payload=invocation.SerializeToString()
    ).SerializeToString()
    response = proposal_pb2.ProposalResponsePayload(
        proposal_hash=sha256(proposal_bytes),
        rwset=kv_rwset(writes=[("k", b"v")], namespace="bank"),
        response=proposal_pb2.ContractResponse(status=200),
    )
    return header_bytes, proposal_bytes, response.SerializeToString()


def _endorsement(
    signer: SigningIdentity, payload: bytes, by_ref: bool, fault: str = "none"
) -> proposal_pb2.Endorsement:
    """`signer`'s lone endorsement of `payload`, naming itself by reference or in full; with
    `fault` "signature" its signature is over other bytes."""
    endorser = _ref(signer) if by_ref else signer.identity_bytes
    signed = payload + endorser if fault == "none" else b"other" + endorser
    return proposal_pb2.Endorsement(endorser=endorser, signature=signer.sign(signed))


def _envelope(
    action: Action, endorsements: list[proposal_pb2.Endorsement], signer: SigningIdentity = P.user
) -> bytes:
    header_bytes, proposal_bytes, response = action
    tx = transaction_pb2.Transaction(
        proposal_bytes=proposal_bytes, response_payload=response, endorsements=endorsements
    )
    return seal(signer, header_bytes, tx.SerializeToString())


def test_endorsements_by_reference_commit_valid_and_the_peer_signs_them_so() -> None:
    view = _view(True)
    action = _action()
    per_peer = [
        endorsement_batch.sign(s, view.membership, [action[2]], True)[0] for s in (P.peer1, P.peer2)
    ]
    assert [e.endorser for e in per_peer] == [_ref(P.peer1), _ref(P.peer2)]
    assert check_transaction(_envelope(action, per_peer), view).code == VALID
    # the same bytes on a channel without the flag: the references are malformed identities
    assert check_transaction(_envelope(action, per_peer), _view(False)).code == POLICY_FAILURE


def test_an_unknown_endorser_reference_is_its_own_code_where_it_fails_the_policy() -> None:
    view = _view(True)
    action = _action()
    # peer2's signature, but under a reference the config does not list (another org's name)
    endorser = _ref(P.peer2, org_id="Org1")
    unknown = proposal_pb2.Endorsement(
        endorser=endorser, signature=P.peer2.sign(action[2] + endorser)
    )
    good = _endorsement(P.peer1, action[2], by_ref=True)
    assert check_transaction(_envelope(action, [good, unknown]), view).code == UNKNOWN
    both = [good, _endorsement(P.peer2, action[2], by_ref=True)]
    assert check_transaction(_envelope(action, [*both, unknown]), view).code == VALID


def test_a_creator_by_reference_resolves_and_an_unknown_one_has_its_own_code() -> None:
    view = _view(True)

    def endorse(a: Action) -> list[proposal_pb2.Endorsement]:
        return [_endorsement(s, a[2], by_ref=True) for s in (P.peer1, P.peer2)]

    unknown = _action(creator=_ref(P.user))  # a client is no config node
    assert check_transaction(_envelope(unknown, endorse(unknown)), view).code == UNKNOWN
    known = _action(creator=_ref(P.peer1), signer=P.peer1)  # a config node may (not a client)
    env = _envelope(known, endorse(known), signer=P.peer1)
    assert check_transaction(env, view).code == VALID
    off = _action(creator=_ref(P.peer1), signer=P.peer1)
    code = check_transaction(_envelope(off, endorse(off), signer=P.peer1), _view(False)).code
    assert code == C.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE
    with pytest.raises(ClientError) as refused:  # at an RPC edge: the reason
        check_envelope(_envelope(unknown, endorse(unknown)), {view.channel_id: view}, NOW, 900)
    assert refused.value.reason_name == "UNKNOWN_IDENTITY_REFERENCE"


Endorser = tuple[int, bool, str]  # (who: index into SIGNERS, by reference, fault)
SIGNERS = (P.peer1, P.peer2, P.user, P.orderers[0], P.outsider)  # config nodes: 0, 1, 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    txs=st.lists(
        st.lists(
            st.tuples(
                st.integers(0, len(SIGNERS) - 1),
                st.booleans(),
                st.sampled_from(["none", "none", "signature"]),
            ),
            max_size=4,
        ),
        min_size=1,
        max_size=6,
    ),
    revoke=st.booleans(),
)
def test_a_block_gets_the_same_codes_whether_config_nodes_sign_in_full_or_by_reference(
    txs: list[list[Endorser]], revoke: bool
) -> None:
    """Any endorsements by config nodes (peers, an orderer), a client and an outsider, with
    bad signatures, on a channel where a peer may be revoked: the codes are those of the same
    transactions with every identity in full — on the flag-on channel, and on one without it."""
    on = _view(True, revoked=P.peer2 if revoke else None)
    off = _view(False, revoked=P.peer2 if revoke else None)
    actions = [_action() for _ in txs]

    def envelopes(by_ref: bool) -> list[bytes]:
        return [
            _envelope(
                a,
                [
                    # only a config node is named by reference (as `reference_of` does)
                    _endorsement(SIGNERS[i], a[2], ref and by_ref and i in (0, 1, 3), fault)
                    for i, ref, fault in tx
                ],
            )
            for a, tx in zip(actions, txs, strict=True)
        ]

    full = [check_transaction(e, on).code for e in envelopes(False)]
    assert [check_transaction(e, on).code for e in envelopes(True)] == full
    assert [check_transaction(e, off).code for e in envelopes(False)] == full


# --- private agreements ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def private() -> pa.Parties:
    view, user, peers = pa._view(pa.A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS)
    config = config_pb2.ChannelConfig()
    config.CopyFrom(view.config)
    config.identity_references = True
    return channel_view(config), user, peers


def _agreements(parties: pa.Parties, view: ChannelView) -> list[pa.A.PrivateAgreement]:
    """Peers 0 and 1 agree, each signing through `agreement_batch.sign` on `view`."""
    _, user, peers = parties
    keys = [peers[0][1], peers[1][1]]
    body = ag.agreement_body(pa.CHANNEL, pa.tx_id_of(user), pa.HASH, pa.HASHES, keys, ag.AGREE)
    return [agreement_batch.sign(p, view.membership, [body], True)[0] for p, _ in peers[:2]]


def test_agreements_by_reference_are_valid_and_map_to_the_signer_s_privacy_key(
    private: pa.Parties,
) -> None:
    view = private[0]
    signed = _agreements(private, view)
    assert all(len(a.signer) < 50 for a in signed)
    assert pa.verdicts(private, signed) == (VALID, "admitted")


def test_an_unknown_agreement_signer_reference_has_its_own_code_and_reason(
    private: pa.Parties,
) -> None:
    signed = _agreements(private, private[0])
    msg = identity_pb2.Identity.FromString(signed[1].signer)
    msg.org_id = "Org1"  # peer 1 is Org2's: no config node under this name
    signed[1].signer = msg.SerializeToString()
    assert pa.verdicts(private, signed) == (UNKNOWN, "UNKNOWN_IDENTITY_REFERENCE")


def test_agreements_by_reference_on_a_channel_without_the_flag_are_bad_signatures(
    private: pa.Parties,
) -> None:
    view, user, peers = private
    signed = _agreements(private, view)
    off = config_pb2.ChannelConfig()
    off.CopyFrom(view.config)
    off.identity_references = False
    parties_off = (channel_view(off), user, peers)
    bad = C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_BAD_SIGNATURE
    assert pa.verdicts(parties_off, signed) == (bad, "PRIVATE_AGREEMENT_BAD_SIGNATURE")
    # and in full they are valid on both
    full = _agreements(private, parties_off[0])
    assert pa.verdicts(parties_off, full)[0] == VALID
    assert pa.verdicts(private, full)[0] == VALID


# --- display ---------------------------------------------------------------------------------


def test_the_explorer_shows_an_endorser_by_reference_through_the_config() -> None:
    view = _view(True)
    action = _action()
    env = _envelope(action, [_endorsement(s, action[2], by_ref=True) for s in (P.peer1, P.peer2)])
    shown = explorer_view.transaction(env, view.membership.resolved)
    assert shown["endorsers"] == [
        {"org": "Org1", "name": "peer0.org1", "by_reference": True},
        {"org": "Org2", "name": "peer0.org2", "by_reference": True},
    ]
    assert shown["creator"] == {"org": "Org1", "name": "user1"}  # in full: as it is
    unresolved = explorer_view.transaction(env)  # (no config at hand)
    assert unresolved["endorsers"][0] == {
        "org": "Org1",
        "name": "",
        "certificate_ref": sha256(P.peer1.certificate_der).hex(),
    }
    # a membership without the flag shows the bytes as they are (no resolution)
    assert explorer_view.transaction(env, _view(False).membership.resolved) == unresolved


# --- the gateway, while a config update turns the flag on --------------------------------------


def test_the_gateway_takes_an_endorser_in_full_or_by_reference_where_references_are_taken() -> None:
    """An endorser that has not applied the config block turning `identity_references` on yet
    signs in full: the gateway that has takes that endorsement (valid in every block) as well as
    the reference; where references are not taken, only the identity in full
    (`endorsing._named_as`, `_Job.step`). Another node's identity counts for nothing."""
    full, ref = P.peer2.identity_bytes, _ref(P.peer2)
    on, off = _named_as(_view(True).membership, full), _named_as(_view(False).membership, full)
    assert set(on) == {full, ref} and off == (full,)
    for endorser, named_as, counted in (
        (full, on, True),
        (ref, on, True),
        (ref, off, False),
        (P.peer1.identity_bytes, on, False),
    ):
        job = endorsing_outcome._job(local_block=7)
        job.step("peer0.org1", endorsing_outcome._endorsed(b"r", 7, b"o1"), (b"o1",), 7)
        job.step("peer0.org2", endorsing_outcome._endorsed(b"r", 7, endorser), named_as, 7)
        assert (job.decision.result is PolicyResult.SATISFIED) is counted, (endorser, named_as)


# --- block signatures ---------------------------------------------------------------------------


def test_orderers_sign_blocks_by_reference_and_each_counts_once() -> None:
    """On a channel with the flag an orderer names itself by reference in a block's signatures
    (`block_signer`), and the peers' and light clients' rule (`check_orderer_quorum`) resolves
    it to the configured orderer: it counts once whether it signs in full, by reference or both.
    A peer's reference names no orderer; without the flag a reference is no identity."""
    on, off = _view(True), _view(False)
    digest = sha256(b"a block")
    signed = [(o.identity_bytes, o.sign(digest)) for o in P.orderers]
    by_ref = [(block_signer(on, full), sig) for full, sig in signed]
    assert [r for r, _ in by_ref] == [_ref(o) for o in P.orderers]
    assert [block_signer(off, full) for full, _ in signed] == [f for f, _ in signed]
    assert check_orderer_quorum(on, digest, by_ref[:3], NOW, remember=False) == (3, 3)
    assert check_orderer_quorum(on, digest, [*by_ref[:2], signed[0]], NOW, remember=False) == (2, 3)
    assert check_orderer_quorum(off, digest, signed[:3], NOW, remember=False) == (3, 3)
    peer = check_orderer_quorum(on, digest, [(_ref(P.peer1), P.peer1.sign(digest))], NOW)
    assert peer == "signature 0 is not by a configured orderer"
    refused = check_orderer_quorum(off, digest, by_ref[:3], NOW, remember=False)
    assert refused == "signature 0 is not by a configured orderer"
