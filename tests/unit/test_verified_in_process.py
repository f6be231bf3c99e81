"""Nodes of one process share the signature checks that succeeded, and nothing else.

Each `Membership` below stands for one node of a `dltmw.open` network (same channel, separate
memberships): what one verified, another does not verify again (`verified_memo.IN_PROCESS`,
replaced here by a fresh one with two nodes started), but it still identifies the signer
itself — an organisation it does not trust, a certificate it has revoked or one expired at its
`now` is refused whatever another node verified. A process of one node keeps no shared memo.
A signature a signing identity of the process made with a key it holds is in the memo from the
start (the embedded client's proposal and envelope, the solo orderer's block signature); one an
external key (an HSM) returned is verified like anyone's.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dltmw.core import identity as identity_mod
from dltmw.core.identity import BadSignature, Membership, NotAMember, Revoked, SigningIdentity
from dltmw.core.verified_memo import ProcessMemo, verified_key
from dltmw.pki.ca import issue_cert, make_ca

NOW = datetime.now(UTC)
CA = make_ca("Org1")
ISSUED = issue_cert(CA, "Org1", "peer0.Org1", "peer")
ME = SigningIdentity.from_pem("Org1", ISSUED.cert_pem, ISSUED.key_pem)
SERIAL = x509.load_pem_x509_certificate(ISSUED.cert_pem).serial_number


@pytest.fixture(autouse=True)
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> ProcessMemo:
    """A process memo of its own, as in a process running two nodes."""
    memo = ProcessMemo()
    memo.node_started()
    memo.node_started()
    monkeypatch.setattr(identity_mod, "IN_PROCESS", memo)
    return memo


def _node() -> Membership:
    """One node's view of the channel (its own membership, as each node builds its own)."""
    return Membership({"Org1": CA.cert_pem})


def _fresh(label: bytes) -> tuple[bytes, bytes]:
    """Data no other test of the process has signed (the memo is the process's), signed as in
    another process: its signature is not in this process's memo."""
    data = label + os.urandom(16)
    with mock.patch.object(identity_mod, "IN_PROCESS", ProcessMemo()):
        return data, ME.sign(data)


class _Hsm:
    """An external key (`identity.ExternalKey`) holding the same private key as ME."""

    def __init__(self) -> None:
        self._key = serialization.load_pem_private_key(ISSUED.key_pem, password=None)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        public = self._key.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        return public

    def sign_sha256(self, data: bytes) -> bytes:
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))


def test_what_a_signing_identity_of_the_process_signs_is_not_verified_again() -> None:
    data = b"proposal " + os.urandom(16)
    sig = ME.sign(data)  # the embedded client, the solo orderer: a key this process holds
    with mock.patch.object(identity_mod, "verify_signature", side_effect=AssertionError) as spy:
        _node().verify(ME.identity_bytes, data, sig, NOW)
        _node().verify(ME.identity_bytes, data, sig, NOW, remember=False)
        assert spy.call_count == 0
    with pytest.raises(BadSignature):  # the same signature over other data is checked
        _node().verify(ME.identity_bytes, data + b"!", sig, NOW)


def test_what_an_external_key_signs_is_verified_as_anyones() -> None:
    hsm = SigningIdentity.from_external("Org1", ISSUED.cert_pem, _Hsm())
    data = b"envelope " + os.urandom(16)
    sig = hsm.sign(data)
    real = identity_mod.verify_signature
    with mock.patch.object(identity_mod, "verify_signature", side_effect=real) as spy:
        _node().verify(hsm.identity_bytes, data, sig, NOW)
        assert spy.call_count == 1


def test_a_process_of_one_node_remembers_nothing_it_signs(two_nodes: ProcessMemo) -> None:
    two_nodes.node_stopped()
    data = b"block hash " + os.urandom(16)
    ME.sign(data)
    assert len(two_nodes) == 0
    two_nodes.node_started()


def test_a_signature_one_node_verified_is_not_verified_again_by_another() -> None:
    gateway, orderer = _node(), _node()
    data, sig = _fresh(b"envelope ")
    real = identity_mod.verify_signature
    with mock.patch.object(identity_mod, "verify_signature", side_effect=real) as spy:
        gateway.verify(ME.identity_bytes, data, sig, NOW)
        orderer.verify(ME.identity_bytes, data, sig, NOW)
        assert spy.call_count == 1


def test_a_block_signature_checked_without_remembering_is_shared_all_the_same() -> None:
    """Peers check a block's orderer signature with remember=False (their own memo keeps room);
    the second peer of the process still finds the first one's check."""
    peer1, peer2 = _node(), _node()
    data, sig = _fresh(b"block hash ")
    peer1.verify(ME.identity_bytes, data, sig, NOW, remember=False)
    with mock.patch.object(identity_mod, "verify_signature", side_effect=AssertionError) as spy:
        peer2.verify(ME.identity_bytes, data, sig, NOW, remember=False)
        assert spy.call_count == 0


def test_an_endorsers_own_signature_is_known_to_the_other_peers_of_the_process() -> None:
    endorser, other_peer = _node(), _node()
    data, sig = _fresh(b"proposal response ")
    endorser.remember_own_signature(ME, data, sig)
    with mock.patch.object(identity_mod, "verify_signature", side_effect=AssertionError) as spy:
        other_peer.verify(ME.identity_bytes, data, sig, NOW)
        assert spy.call_count == 0


def test_each_node_still_identifies_the_signer_itself() -> None:
    data, sig = _fresh(b"envelope ")
    _node().verify(ME.identity_bytes, data, sig, NOW)
    other_org = make_ca("Org2")
    with pytest.raises(NotAMember):  # a node of a channel that does not trust Org1
        Membership({"Org2": other_org.cert_pem}).verify(ME.identity_bytes, data, sig, NOW)
    with pytest.raises(Revoked):  # a node whose configuration revoked the certificate
        Membership({"Org1": CA.cert_pem}, {"Org1": [SERIAL]}).verify(
            ME.identity_bytes, data, sig, NOW
        )
    with pytest.raises(NotAMember):  # a node whose clock is past the certificate's validity
        _node().verify(ME.identity_bytes, data, sig, NOW + timedelta(days=36500))


def test_a_failed_check_is_not_shared() -> None:
    data, _ = _fresh(b"envelope ")
    _, forged = _fresh(b"something else")
    with pytest.raises(BadSignature):
        _node().verify(ME.identity_bytes, data, forged, NOW)
    with pytest.raises(BadSignature):
        _node().verify(ME.identity_bytes, data, forged, NOW)


def test_a_process_of_one_node_shares_nothing_and_the_last_but_one_stop_drops_the_memo(
    two_nodes: ProcessMemo,
) -> None:
    alone = ProcessMemo()
    alone.node_started()
    alone.add(b"k" * 32)
    assert not alone.shared and len(alone) == 0  # a process of one node
    data, sig = _fresh(b"envelope ")
    two_nodes.node_stopped()  # one node left
    assert not two_nodes.shared
    _node().verify(ME.identity_bytes, data, sig, NOW, remember=False)
    assert len(two_nodes) == 0
    real = identity_mod.verify_signature
    with mock.patch.object(identity_mod, "verify_signature", side_effect=real) as spy:
        _node().verify(ME.identity_bytes, data, sig, NOW)
        assert spy.call_count == 1
    two_nodes.node_started()  # two again: shared from now on
    _node().verify(ME.identity_bytes, data, sig, NOW)
    assert len(two_nodes) == 1
    two_nodes.node_stopped()
    assert len(two_nodes) == 0


def test_the_process_memo_is_bounded_to_two_generations() -> None:
    memo = ProcessMemo(generation=8)
    memo.node_started()
    memo.node_started()
    keys = [verified_key(b"id", b"%d" % i, b"sig") for i in range(40)]
    for key in keys:
        memo.add(key)
        assert len(memo) <= 16
    assert keys[-1] in memo and keys[0] not in memo
