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

Algorithms (`EncryptedPayload.key_wrap_algorithm`, algorithms.proto): absent means X25519 as
above, and an X25519 payload's bytes are exactly what they were before identifiers existed.
KEY_WRAP_ALGORITHM_X25519_MLKEM768 wraps each box under a hybrid kek (`kem.py`: HKDF over the
X25519 and an ML-KEM-768 secret); its box associated data also ends with the algorithm number,
and the sender's and every recipient's X25519 key stay the box list (and so the recipients'
identities). A value this code does not know is refused (UNSUPPORTED_ALGORITHM), never guessed.

Pure: no randomness is drawn here. Callers pass the fresh key and nonces as bytes (the runtime
draws them through `aio/entropy.token_bytes`: the OS, or the simulator's seeded source), which
keeps tests deterministic. ML-KEM encapsulations likewise arrive as `KemShare` values.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dltmw.core.errors import ClientError
from dltmw.core.privacy.kem import (
    HYBRID,
    KNOWN_WRAPS,
    X25519,
    KemKey,
    KemShare,
    effective_wrap,
    hybrid_kek,
    wrap_name,
)
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
    """A node's X25519 key pair (and, for hybrid channels, its ML-KEM-768 key) plus its cache
    of key-encryption keys."""

    def __init__(self, private_bytes: bytes, kem_seed: bytes | None = None) -> None:
        _check_len(private_bytes, KEY_BYTES, "X25519 private key")
        self._private = X25519PrivateKey.from_private_bytes(private_bytes)
        self.public_key: bytes = self._private.public_key().public_bytes_raw()
        self.kem = KemKey(kem_seed) if kem_seed is not None else None
        self.kem_public_key: bytes = self.kem.public_key if self.kem is not None else b""
        self._keks: dict[tuple[bytes, bytes], AESGCM] = {}
        self._secrets: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def x25519_secret(self, other: bytes) -> bytes:
        """X25519(this key, `other`), cached per peer key like the keks (the hybrid wrap needs
        the raw secret); refuses a malformed or low-order public key."""
        cached = self._secrets.get(other)
        if cached is not None:
            return cached
        _check_len(other, KEY_BYTES, "X25519 public key")
        try:
            secret = self._private.exchange(X25519PublicKey.from_public_bytes(other))
        except ValueError as exc:  # low-order point: all-zero shared secret
            raise PayloadError(R.ERROR_REASON_INVALID_FIELD, f"unusable public key: {exc}") from exc
        with self._lock:
            if len(self._secrets) >= KEK_CACHE_MAX:
                del self._secrets[next(iter(self._secrets))]
            self._secrets[other] = secret
        return secret

    def kek(self, sender: bytes, recipient: bytes) -> AESGCM:
        """AEAD under HKDF(X25519(...)) of a pair in which this key is sender or recipient."""
        cached = self._keks.get((sender, recipient))
        if cached is not None:
            return cached
        other = recipient if sender == self.public_key else sender
        if self.public_key not in (sender, recipient):
            raise ValueError("this key is neither sender nor recipient")
        shared = self.x25519_secret(other)
        kek = HKDF(hashes.SHA256(), KEY_BYTES, None, KEK_INFO + sender + recipient).derive(shared)
        aead = AESGCM(kek)
        with self._lock:
            if len(self._keks) >= KEK_CACHE_MAX:
                del self._keks[next(iter(self._keks))]
            self._keks[(sender, recipient)] = aead
        return aead


def _box_ad(sender: bytes, digest: bytes, keys: Sequence[bytes], algorithm: int) -> bytes:
    ad = BOX_AD + sender + digest + recipients_digest(keys)
    return ad if algorithm == X25519 else ad + algorithm.to_bytes(4, "big")


def _box_kek(
    sender: PrivacyKey,
    recipient: bytes,
    algorithm: int,
    kem: Mapping[bytes, KemShare] | None,
) -> tuple[AESGCM, bytes]:
    """The sender's AEAD for one recipient's box, and the box's KEM ciphertext (if hybrid)."""
    if algorithm == X25519:
        return sender.kek(sender.public_key, recipient), b""
    share = (kem or {}).get(recipient)
    if share is None:
        raise PayloadError(
            R.ERROR_REASON_INVALID_FIELD, "a hybrid wrap needs an ML-KEM share per recipient"
        )
    aead = hybrid_kek(
        sender.x25519_secret(recipient),
        share.shared_secret,
        sender.public_key,
        recipient,
        share.recipient_kem_public_key,
        share.ciphertext,
    )
    return aead, share.ciphertext


def _recipient_kek(
    payload: EncryptedPayload, box: private_payload_pb2.RecipientBox, me: PrivacyKey
) -> AESGCM:
    """This recipient's AEAD for its box (raises ValueError/PayloadError when it cannot be)."""
    sender = payload.sender_public_key
    if effective_wrap(payload.key_wrap_algorithm) == X25519:
        return me.kek(sender, me.public_key)
    if me.kem is None:
        raise PayloadError(
            R.ERROR_REASON_PAYLOAD_UNREADABLE, "hybrid payload, but this node has no ML-KEM key"
        )
    return hybrid_kek(
        me.x25519_secret(sender),
        me.kem.decapsulate(box.kem_ciphertext),
        sender,
        me.public_key,
        me.kem_public_key,
        box.kem_ciphertext,
    )


def check_algorithm(payload: EncryptedPayload) -> int:
    """The payload's effective key wrap, or UNSUPPORTED_ALGORITHM for a value not known here."""
    if payload.key_wrap_algorithm not in KNOWN_WRAPS:
        raise PayloadError(
            R.ERROR_REASON_UNSUPPORTED_ALGORITHM,
            f"{wrap_name(payload.key_wrap_algorithm)} is not supported by this node",
        )
    return effective_wrap(payload.key_wrap_algorithm)


def _wrap(
    sender: PrivacyKey,
    payload_key: bytes,
    digest: bytes,
    recipients: Sequence[bytes],
    box_nonces: Sequence[bytes],
    algorithm: int = X25519,
    kem: Mapping[bytes, KemShare] | None = None,
) -> list[private_payload_pb2.RecipientBox]:
    keys = sorted(set(recipients) | {sender.public_key})
    if len(box_nonces) < len(keys):
        raise ValueError(f"need {len(keys)} box nonces, got {len(box_nonces)}")
    ad = _box_ad(sender.public_key, digest, keys, algorithm)
    boxes = []
    for key, nonce in zip(keys, box_nonces, strict=False):
        _check_len(key, KEY_BYTES, "recipient public key")
        _check_len(nonce, NONCE_BYTES, "box nonce")
        aead, kem_ciphertext = _box_kek(sender, key, algorithm, kem)
        boxes.append(
            private_payload_pb2.RecipientBox(
                recipient_public_key=key,
                nonce=nonce,
                wrapped_key=aead.encrypt(nonce, payload_key, ad),
                kem_ciphertext=kem_ciphertext,
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
    algorithm: int = X25519,
    kem: Mapping[bytes, KemShare] | None = None,
) -> EncryptedPayload:
    """Encrypt `plaintext` once and wrap its key for `recipients` and the sender.

    `payload_key` (32 bytes), `nonce` and every box nonce (12 bytes) must be fresh random bytes;
    one box nonce per distinct recipient, the sender included. A hybrid `algorithm` needs one
    fresh `KemShare` per recipient X25519 key in `kem`, the sender's own included.
    """
    algorithm = effective_wrap(algorithm)
    if algorithm not in (X25519, HYBRID):
        raise PayloadError(R.ERROR_REASON_UNSUPPORTED_ALGORITHM, f"cannot wrap with {algorithm}")
    _check_len(payload_key, KEY_BYTES, "payload key")
    _check_len(nonce, NONCE_BYTES, "payload nonce")
    ciphertext = AESGCM(payload_key).encrypt(nonce, plaintext, PAYLOAD_AD + sender.public_key)
    payload = EncryptedPayload(
        sender_public_key=sender.public_key, nonce=nonce, ciphertext=ciphertext
    )
    if algorithm != X25519:  # absent means X25519: X25519 payloads keep their old bytes
        payload.key_wrap_algorithm = algorithm  # type: ignore[assignment]
    boxes = _wrap(
        sender, payload_key, payload_hash(payload), recipients, box_nonces, algorithm, kem
    )
    payload.recipient_boxes.extend(boxes)
    return payload


def open_key(payload: EncryptedPayload, me: PrivacyKey, expected_hash: bytes) -> bytes:
    """The payload key, from this key's box; refuses a payload whose hash is not `expected_hash`.

    Raises PayloadError: UNSUPPORTED_ALGORITHM (a key wrap not known here), PAYLOAD_HASH_MISMATCH
    (altered ciphertext), NOT_AUTHORIZED (no box for this key), PAYLOAD_UNREADABLE (box altered,
    or the box list differs from what was wrapped, or a hybrid box and no ML-KEM key here).
    """
    algorithm = check_algorithm(payload)
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
        kek = _recipient_kek(payload, box, me)
        ad = _box_ad(sender, digest, keys, algorithm)
        payload_key = kek.decrypt(box.nonce, box.wrapped_key, ad)
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
    kem: Mapping[bytes, KemShare] | None = None,
) -> EncryptedPayload:
    """The same payload (same ciphertext and hash) with its key re-wrapped for a larger list.

    Only the sender can do it: every box is bound to the recipient list, so all are re-made
    with the payload's own key wrap (a hybrid one needs `kem` shares for every key, as `seal`).
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
        key_wrap_algorithm=payload.key_wrap_algorithm,
    )
    algorithm = effective_wrap(payload.key_wrap_algorithm)
    boxes = _wrap(sender, payload_key, digest, sorted(keys), box_nonces, algorithm, kem)
    out.recipient_boxes.extend(boxes)
    return out
