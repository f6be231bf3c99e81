"""The hybrid key wrap (X25519 + ML-KEM-768): read by recipients, secure while either holds,
tampering refused, unknown algorithms refused, X25519 payloads unchanged on the wire."""

from __future__ import annotations

import random

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey

from dltmw.core.privacy.envelope import (
    BOX_AD,
    PayloadError,
    PrivacyKey,
    add_recipients,
    open_payload,
    payload_hash,
    recipients_digest,
    seal,
)
from dltmw.core.privacy.kem import HYBRID, X25519, KemShare, hybrid_kek
from dltmw.v1 import algorithms_pb2, private_payload_pb2

RNG = random.Random(20)
PLAINTEXT = b"hybrid trade 100 XYZ @ 12.5 " + RNG.randbytes(16)


def rand(n: int) -> bytes:
    return RNG.randbytes(n)


def hybrid_key() -> PrivacyKey:
    return PrivacyKey(rand(32), rand(64))


SENDER, ALICE, BOB = hybrid_key(), hybrid_key(), hybrid_key()


def share(k: PrivacyKey) -> KemShare:
    secret, ciphertext = MLKEM768PublicKey.from_public_bytes(k.kem_public_key).encapsulate()
    return KemShare(k.kem_public_key, secret, ciphertext)


def sealed(
    recipients: tuple[PrivacyKey, ...] = (ALICE, BOB),
) -> private_payload_pb2.EncryptedPayload:
    keys = [k.public_key for k in recipients]
    kem = {k.public_key: share(k) for k in (*recipients, SENDER)}
    nonces = [rand(12) for _ in range(len(keys) + 1)]
    return seal(PLAINTEXT, SENDER, keys, rand(32), rand(12), nonces, HYBRID, kem)


def reason(exc: pytest.ExceptionInfo[PayloadError]) -> str:
    return exc.value.reason_name


def box_of(
    p: private_payload_pb2.EncryptedPayload, k: PrivacyKey
) -> private_payload_pb2.RecipientBox:
    return next(b for b in p.recipient_boxes if b.recipient_public_key == k.public_key)


def test_every_recipient_and_the_sender_read_a_hybrid_payload() -> None:
    p = sealed()
    assert p.key_wrap_algorithm == algorithms_pb2.KEY_WRAP_ALGORITHM_X25519_MLKEM768
    assert all(len(b.kem_ciphertext) == 1088 for b in p.recipient_boxes)
    for k in (SENDER, ALICE, BOB):
        assert open_payload(p, k, payload_hash(p)) == PLAINTEXT


def test_x25519_payloads_keep_their_old_bytes() -> None:
    """Absent means X25519: a payload sealed X25519 names no algorithm and has no KEM bytes."""
    keys = [ALICE.public_key]
    p = seal(PLAINTEXT, SENDER, keys, rand(32), rand(12), [rand(12), rand(12)], X25519)
    assert p.key_wrap_algorithm == algorithms_pb2.KEY_WRAP_ALGORITHM_UNSPECIFIED
    assert all(not b.kem_ciphertext for b in p.recipient_boxes)
    old = private_payload_pb2.EncryptedPayload(
        sender_public_key=p.sender_public_key,
        nonce=p.nonce,
        ciphertext=p.ciphertext,
        recipient_boxes=[
            private_payload_pb2.RecipientBox(
                recipient_public_key=b.recipient_public_key,
                nonce=b.nonce,
                wrapped_key=b.wrapped_key,
            )
            for b in p.recipient_boxes
        ],
    )
    assert p.SerializeToString() == old.SerializeToString()
    assert open_payload(p, ALICE, payload_hash(p)) == PLAINTEXT


def test_the_x25519_secret_alone_does_not_open_it() -> None:
    """An attacker holding ALICE's X25519 private key (a broken X25519) but not her ML-KEM key."""
    p = sealed()
    thief = PrivacyKey(ALICE._private.private_bytes_raw(), rand(64))  # same X25519, other ML-KEM
    thief.kem_public_key = ALICE.kem_public_key  # public: the attacker knows it too
    assert thief.public_key == ALICE.public_key
    with pytest.raises(PayloadError) as exc:
        open_payload(p, thief, payload_hash(p))
    assert reason(exc) == "PAYLOAD_UNREADABLE"
    no_kem = PrivacyKey(ALICE._private.private_bytes_raw())
    with pytest.raises(PayloadError) as exc:
        open_payload(p, no_kem, payload_hash(p))
    assert reason(exc) == "PAYLOAD_UNREADABLE"


def _ad(p: private_payload_pb2.EncryptedPayload) -> bytes:
    keys = [b.recipient_public_key for b in p.recipient_boxes]
    return (
        BOX_AD
        + p.sender_public_key
        + payload_hash(p)
        + recipients_digest(keys)
        + HYBRID.to_bytes(4, "big")
    )


def test_either_secret_alone_fails_at_the_key_derivation() -> None:
    """The kek needs both secrets: the right ML-KEM secret with a wrong X25519 secret fails, the
    right X25519 secret with a wrong ML-KEM secret fails, and both right opens the box."""
    p = sealed()
    box = box_of(p, ALICE)
    assert ALICE.kem is not None
    kem_secret = ALICE.kem.decapsulate(box.kem_ciphertext)
    x_secret = ALICE.x25519_secret(SENDER.public_key)
    args = (p.sender_public_key, ALICE.public_key, ALICE.kem_public_key, box.kem_ciphertext)
    right = hybrid_kek(x_secret, kem_secret, *args)
    assert len(right.decrypt(box.nonce, box.wrapped_key, _ad(p))) == 32
    wrong_x = BOB.x25519_secret(SENDER.public_key)
    for x, k in ((x_secret, rand(32)), (wrong_x, kem_secret), (x_secret, b"\0" * 32)):
        with pytest.raises(InvalidTag):
            hybrid_kek(x, k, *args).decrypt(box.nonce, box.wrapped_key, _ad(p))


@pytest.mark.parametrize("field", ["kem_ciphertext", "wrapped_key", "nonce"])
def test_a_tampered_box_is_refused(field: str) -> None:
    p = sealed()
    box = box_of(p, ALICE)
    raw = bytearray(getattr(box, field))
    raw[7] ^= 1
    setattr(box, field, bytes(raw))
    with pytest.raises(PayloadError) as exc:
        open_payload(p, ALICE, payload_hash(p))
    assert reason(exc) == "PAYLOAD_UNREADABLE"
    assert open_payload(p, BOB, payload_hash(p)) == PLAINTEXT  # other boxes are untouched


def test_tampered_ciphertext_is_refused_by_its_hash() -> None:
    p = sealed()
    h = payload_hash(p)
    p.ciphertext = p.ciphertext[:-1] + bytes([p.ciphertext[-1] ^ 1])
    with pytest.raises(PayloadError) as exc:
        open_payload(p, ALICE, h)
    assert reason(exc) == "PAYLOAD_HASH_MISMATCH"


def test_relabelling_a_hybrid_payload_as_x25519_is_refused() -> None:
    """A downgrade of the label alone: the X25519 kek and the algorithm-free AD do not match."""
    p = sealed()
    p.key_wrap_algorithm = algorithms_pb2.KEY_WRAP_ALGORITHM_UNSPECIFIED
    with pytest.raises(PayloadError) as exc:
        open_payload(p, ALICE, payload_hash(p))
    assert reason(exc) == "PAYLOAD_UNREADABLE"


def test_an_unknown_algorithm_is_refused_as_unsupported() -> None:
    p = sealed()
    p.key_wrap_algorithm = 77  # type: ignore[assignment]
    with pytest.raises(PayloadError) as exc:
        open_payload(p, ALICE, payload_hash(p))
    assert reason(exc) == "UNSUPPORTED_ALGORITHM"


def test_a_hybrid_seal_without_shares_is_refused() -> None:
    with pytest.raises(PayloadError) as exc:
        seal(PLAINTEXT, SENDER, [ALICE.public_key], rand(32), rand(12), [rand(12)] * 2, HYBRID)
    assert reason(exc) == "INVALID_FIELD"


def test_adding_a_recipient_rewraps_hybrid() -> None:
    p = sealed((ALICE,))
    kem = {k.public_key: share(k) for k in (SENDER, ALICE, BOB)}
    q = add_recipients(p, SENDER, [BOB.public_key], [rand(12) for _ in range(3)], kem)
    assert q.key_wrap_algorithm == HYBRID and payload_hash(q) == payload_hash(p)
    for k in (SENDER, ALICE, BOB):
        assert open_payload(q, k, payload_hash(q)) == PLAINTEXT
