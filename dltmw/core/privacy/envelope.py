"""The private-payload envelope: one AES-256-GCM encryption, one key box per recipient.

Theory of operation (Tessera's EncodedPayload, with X25519 + HKDF + AES-GCM instead of NaCl box):

* The payload is encrypted once under a fresh 32-byte key K with a fresh 12-byte nonce;
  associated data "dltmw/pp/payload/v1" || sender public key, so a payload cannot be re-labelled
  with another sender. Its ledger identity is payload_hash = SHA-256(ciphertext incl. GCM tag).
* For each recipient, K is wrapped under kek = HKDF-SHA256(X25519(sender, recipient),
  info = "dltmw/pp/kek/v1" || sender || recipient) with a fresh nonce and associated data
  "dltmw/pp/box/v1" || sender || payload_hash || SHA-256(sorted recipient keys). The box list IS
  the recipient list: dropping, adding or swapping a box changes the digest and every box then
  fails to open, so recipients can trust who else holds the payload (private state validation
  compares exactly those parties).
* The sender is always one of the recipients (it executes the transaction too).
* Adding a recipient later re-wraps K for the new, larger list with the sender's key; the
  ciphertext, and so the payload hash on the ledger, stays the same.

The kek of a (sender, recipient) pair never changes, so `PrivacyKey` caches it: the X25519
operation is paid once per pair, not per payload (Tessera's precomputed `box_afternm`). With
random 96-bit nonces one kek safely wraps far more keys than a node will ever send.

Pure: no randomness is drawn here. Callers pass the fresh key and nonces as bytes (the runtime
draws them through `aio/entropy.token_bytes`: the OS, or the simulator's seeded source), which
keeps tests deterministic.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dltmw.core.errors import ClientError
from dltmw.v1 import errors_pb2, private_payload_pb2

R = errors_pb2
EncryptedPayload = private_payload_pb2.EncryptedPayload
KEY_BYTES = 32
NONCE_BYTES = 12
KEK_INFO = b"dltmw/pp/kek/v1"
BOX_AD = b"dltmw/pp/box/v1"
PAYLOAD_AD = b"dltmw/pp/payload/v1"
KEK_CACHE_MAX = 4096


class PayloadError(ClientError):
    """A payload or box that does not authenticate, or is not meant for this key."""


def payload_hash(payload: EncryptedPayload) -> bytes:
    """The payload's ledger identity: SHA-256 of its ciphertext."""
    return hashlib.sha256(payload.ciphertext).digest()


def recipients_digest(recipient_keys: Sequence[bytes]) -> bytes:
    """SHA-256 over the sorted recipient keys, concatenated (bound into every box)."""
    return hashlib.sha256(b"".join(sorted(recipient_keys))).digest()


def recipients_of(payload: EncryptedPayload) -> list[bytes]:
    """The recipients' public keys, as the boxes list them."""
    return [box.recipient_public_key for box in payload.recipient_boxes]


def _check_len(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise PayloadError(R.ERROR_REASON_INVALID_FIELD, f"{what} must be {size} bytes")


class PrivacyKey:
    """A node's X25519 key pair plus its cache of key-encryption keys."""

    def __init__(self, private_bytes: bytes) -> None:
        _check_len(private_bytes, KEY_BYTES, "X25519 private key")
        self._private = X25519PrivateKey.from_private_bytes(private_bytes)
        self.public_key: bytes = self._private.public_key().public_bytes_raw()
        self._keks: dict[tuple[bytes, bytes], AESGCM] = {}
        self._lock = threading.Lock()

    def kek(self, sender: bytes, recipient: bytes) -> AESGCM:
        """AEAD under HKDF(X25519(...)) of a pair in which this key is sender or recipient."""
        cached = self._keks.get((sender, recipient))
        if cached is not None:
            return cached
        other = recipient if sender == self.public_key else sender
        if self.public_key not in (sender, recipient):
            raise ValueError("this key is neither sender nor recipient")
        _check_len(other, KEY_BYTES, "X25519 public key")
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(other))
        except ValueError as exc:  # low-order point: all-zero shared secret
            raise PayloadError(R.ERROR_REASON_INVALID_FIELD, f"unusable public key: {exc}") from exc
        kek = HKDF(hashes.SHA256(), KEY_BYTES, None, KEK_INFO + sender + recipient).derive(shared)
        aead = AESGCM(kek)
        with self._lock:
            if len(self._keks) >= KEK_CACHE_MAX:
                del self._keks[next(iter(self._keks))]
            self._keks[(sender, recipient)] = aead
        return aead


def _box_ad(sender: bytes, digest: bytes, keys: Sequence[bytes]) -> bytes:
    return BOX_AD + sender + digest + recipients_digest(keys)


def _wrap(
    sender: PrivacyKey,
    payload_key: bytes,
    digest: bytes,
    recipients: Sequence[bytes],
    box_nonces: Sequence[bytes],
) -> list[private_payload_pb2.RecipientBox]:
    keys = sorted(set(recipients) | {sender.public_key})
    if len(box_nonces) < len(keys):
        raise ValueError(f"need {len(keys)} box nonces, got {len(box_nonces)}")
    ad = _box_ad(sender.public_key, digest, keys)
    boxes = []
    for key, nonce in zip(keys, box_nonces, strict=False):
        _check_len(key, KEY_BYTES, "recipient public key")
        _check_len(nonce, NONCE_BYTES, "box nonce")
        wrapped = sender.kek(sender.public_key, key).encrypt(nonce, payload_key, ad)
        boxes.append(
            private_payload_pb2.RecipientBox(
                recipient_public_key=key, nonce=nonce, wrapped_key=wrapped
            )
        )
    return boxes


def seal(
    plaintext: bytes,
    sender: PrivacyKey,
    recipients: Sequence[bytes],
    payload_key: bytes,
    nonce: bytes,
    box_nonces: Sequence[bytes],
) -> EncryptedPayload:
    """Encrypt `plaintext` once and wrap its key for `recipients` and the sender.

    `payload_key` (32 bytes), `nonce` and every box nonce (12 bytes) must be fresh random bytes;
    one box nonce per distinct recipient, the sender included.
    """
    _check_len(payload_key, KEY_BYTES, "payload key")
    _check_len(nonce, NONCE_BYTES, "payload nonce")
    ciphertext = AESGCM(payload_key).encrypt(nonce, plaintext, PAYLOAD_AD + sender.public_key)
    payload = EncryptedPayload(
        sender_public_key=sender.public_key, nonce=nonce, ciphertext=ciphertext
    )
    boxes = _wrap(sender, payload_key, payload_hash(payload), recipients, box_nonces)
    payload.recipient_boxes.extend(boxes)
    return payload


def open_key(payload: EncryptedPayload, me: PrivacyKey, expected_hash: bytes) -> bytes:
    """The payload key, from this key's box; refuses a payload whose hash is not `expected_hash`.

    Raises PayloadError: PAYLOAD_HASH_MISMATCH (altered ciphertext), NOT_AUTHORIZED (no box for
    this key), PAYLOAD_UNREADABLE (box altered, or the box list differs from what was wrapped).
    """
    digest = payload_hash(payload)
    if digest != expected_hash:
        raise PayloadError(
            R.ERROR_REASON_PAYLOAD_HASH_MISMATCH,
            f"payload hash {digest.hex()[:16]}.. differs from {expected_hash.hex()[:16]}..",
        )
    keys = recipients_of(payload)
    if me.public_key not in keys:
        raise PayloadError(R.ERROR_REASON_NOT_AUTHORIZED, "this node is not a recipient")
    if len(set(keys)) != len(keys):
        raise PayloadError(R.ERROR_REASON_PAYLOAD_UNREADABLE, "duplicate recipient boxes")
    box = payload.recipient_boxes[keys.index(me.public_key)]
    sender = payload.sender_public_key
    try:
        kek = me.kek(sender, me.public_key)
        payload_key = kek.decrypt(box.nonce, box.wrapped_key, _box_ad(sender, digest, keys))
    except (InvalidTag, ValueError) as exc:
        raise PayloadError(
            R.ERROR_REASON_PAYLOAD_UNREADABLE, "recipient box does not authenticate"
        ) from exc
    if len(payload_key) != KEY_BYTES:
        raise PayloadError(R.ERROR_REASON_PAYLOAD_UNREADABLE, "wrapped key has a wrong size")
    return payload_key


def open_payload(payload: EncryptedPayload, me: PrivacyKey, expected_hash: bytes) -> bytes:
    """Decrypt a payload this key is a recipient of (see `open_key` for the refusals)."""
    payload_key = open_key(payload, me, expected_hash)
    try:
        return AESGCM(payload_key).decrypt(
            payload.nonce, payload.ciphertext, PAYLOAD_AD + payload.sender_public_key
        )
    except (InvalidTag, ValueError) as exc:
        raise PayloadError(
            R.ERROR_REASON_PAYLOAD_UNREADABLE, "ciphertext does not authenticate"
        ) from exc


def add_recipients(
    payload: EncryptedPayload,
    sender: PrivacyKey,
    new_recipients: Sequence[bytes],
    box_nonces: Sequence[bytes],
) -> EncryptedPayload:
    """The same payload (same ciphertext and hash) with its key re-wrapped for a larger list.

    Only the sender can do it: every box is bound to the recipient list, so all are re-made.
    """
    if payload.sender_public_key != sender.public_key:
        raise PayloadError(R.ERROR_REASON_NOT_AUTHORIZED, "only the sender can add recipients")
    digest = payload_hash(payload)
    payload_key = open_key(payload, sender, digest)
    keys = set(recipients_of(payload)) | set(new_recipients)
    out = EncryptedPayload(
        sender_public_key=payload.sender_public_key,
        nonce=payload.nonce,
        ciphertext=payload.ciphertext,
    )
    out.recipient_boxes.extend(_wrap(sender, payload_key, digest, sorted(keys), box_nonces))
    return out
