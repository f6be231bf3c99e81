"""The shared rule of items signed per batch (core/batch_signature.py): an item's signature is
checked over the root its proof leads to, under the kind's batch domain; any change to the item,
the proof or the domain, or a proof where batches are off, fails. Real keys and the real
`Membership.verify` (the agreements' own tests cover their commit rule on top of this)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import load_der_x509_certificate

from dltmw.core import batch_signature
from dltmw.core.identity import BadSignature, SigningIdentity, verify_signature
from dltmw.v1 import common_pb2
from tests.unit.test_private_agreement import _view

DOMAIN = b"dltmw/test-batch/v1"
ITEMS = [b"item-%d" % i for i in range(5)]


def _signed() -> tuple[SigningIdentity, bytes, list[common_pb2.BatchProof]]:
    view, _, peers = _view(1)
    signer = peers[0][0]
    signature, proofs = batch_signature.sign_batch(signer, view.membership, ITEMS, DOMAIN)
    wire = [batch_signature.wire_proof(p) for p in proofs]
    return signer, signature, wire


def _check(signer: SigningIdentity, data: bytes, signature: bytes) -> None:
    """The public-key operation itself (no memo: `sign_batch` remembered its own signature)."""
    key = load_der_x509_certificate(signer.certificate_der).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    verify_signature(key, data, signature)


def test_every_item_verifies_over_its_root_and_one_signature_covers_the_batch() -> None:
    signer, signature, proofs = _signed()
    for item, proof in zip(ITEMS, proofs, strict=True):
        data = batch_signature.signed_data(item, proof, True, DOMAIN)
        assert data is not None and data.startswith(DOMAIN)
        _check(signer, data, signature)


def test_an_item_without_proof_is_its_own_signed_bytes() -> None:
    assert batch_signature.signed_data(b"alone", None, False, DOMAIN) == b"alone"
    assert batch_signature.signed_data(b"alone", None, True, DOMAIN) == b"alone"


def test_a_proof_where_batches_are_off_is_refused() -> None:
    _, _, proofs = _signed()
    assert batch_signature.signed_data(ITEMS[0], proofs[0], False, DOMAIN) is None


@pytest.mark.parametrize("how", ["index", "count", "path", "item", "domain"])
def test_an_altered_item_proof_or_domain_does_not_verify(how: str) -> None:
    signer, signature, proofs = _signed()
    item, proof = ITEMS[1], common_pb2.BatchProof()
    proof.CopyFrom(proofs[1])
    domain = DOMAIN
    if how == "index":
        proof.leaf_index = 2
    elif how == "count":
        proof.leaf_count = 9  # 6 would be the same tree seen from leaf 1: only the item is bound
    elif how == "path":
        proof.path[0] = bytes(32)
    elif how == "item":
        item = b"item-9"
    else:
        domain = b"dltmw/other-batch/v1"
    data = batch_signature.signed_data(item, proof, True, domain)
    if data is not None:
        with pytest.raises(BadSignature):
            _check(signer, data, signature)
