"""Signature algorithm identifiers and the ML-DSA-65 identity option: an ML-DSA member
certificate (issued by the organisation's classical CA) signs and verifies like any other; the
Identity's named algorithm must match the certificate key; an unknown one is refused as such."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dltmw.core.errors import reason_value
from dltmw.core.identity import (
    BadSignature,
    MalformedIdentity,
    Membership,
    SigningIdentity,
    UnknownAlgorithm,
    algorithm_of,
)
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.v1 import algorithms_pb2, errors_pb2, identity_pb2

A = algorithms_pb2
CA = make_ca("Org1")
MLDSA = issue_cert(CA, "Org1", "pq.user1.org1", "client", key_type="mldsa65")
ECDSA = issue_cert(CA, "Org1", "user1.org1", "client")
NOW = datetime.now(UTC)
DATA = b"a proposal's bytes"


def signer(issued: object) -> SigningIdentity:
    return SigningIdentity.from_pem("Org1", issued.cert_pem, issued.key_pem)  # type: ignore[attr-defined]


def named(identity: SigningIdentity, algorithm: int) -> bytes:
    msg = identity_pb2.Identity.FromString(identity.identity_bytes)
    msg.signature_algorithm = algorithm  # type: ignore[assignment]
    return msg.SerializeToString()


def test_an_ml_dsa_identity_signs_and_verifies() -> None:
    me = signer(MLDSA)
    signature = me.sign(DATA)
    assert len(signature) == 3309
    who = Membership({"Org1": CA.cert_pem}).verify(me.identity_bytes, DATA, signature, NOW)
    assert algorithm_of(who.public_key) == A.SIGNATURE_ALGORITHM_ML_DSA_65
    assert who.roles == {"client"}


@pytest.mark.parametrize("tamper", ["data", "signature", "length"])
def test_a_bad_ml_dsa_signature_is_refused(tamper: str) -> None:
    me = signer(MLDSA)
    signature, data = me.sign(DATA), DATA
    if tamper == "data":
        data = DATA + b"!"
    elif tamper == "signature":
        signature = signature[:100] + bytes([signature[100] ^ 1]) + signature[101:]
    else:
        signature = signature[:-1]
    with pytest.raises(BadSignature):
        Membership({"Org1": CA.cert_pem}).verify(me.identity_bytes, data, signature, NOW)


@pytest.mark.parametrize(
    ("issued", "algorithm"),
    [
        (MLDSA, A.SIGNATURE_ALGORITHM_ML_DSA_65),
        (ECDSA, A.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256),
        (ECDSA, A.SIGNATURE_ALGORITHM_UNSPECIFIED),
    ],
    ids=["ml-dsa-named", "ecdsa-named", "ecdsa-absent"],
)
def test_a_named_algorithm_matching_the_key_is_accepted(issued: object, algorithm: int) -> None:
    me = signer(issued)
    identity = named(me, algorithm)
    Membership({"Org1": CA.cert_pem}).verify(identity, DATA, me.sign(DATA), NOW)


@pytest.mark.parametrize(
    ("issued", "algorithm"),
    [(MLDSA, A.SIGNATURE_ALGORITHM_ED25519), (ECDSA, A.SIGNATURE_ALGORITHM_ML_DSA_65)],
    ids=["ml-dsa-key-named-ed25519", "ecdsa-key-named-ml-dsa"],
)
def test_a_named_algorithm_not_the_keys_is_malformed(issued: object, algorithm: int) -> None:
    me = signer(issued)
    with pytest.raises(MalformedIdentity):
        Membership({"Org1": CA.cert_pem}).identify(named(me, algorithm), NOW)


def test_an_unknown_algorithm_is_refused_as_unsupported() -> None:
    me = signer(ECDSA)
    with pytest.raises(UnknownAlgorithm) as refused:
        Membership({"Org1": CA.cert_pem}).identify(named(me, 42), NOW)
    assert reason_value(refused.value.reason) == errors_pb2.ERROR_REASON_UNSUPPORTED_ALGORITHM
