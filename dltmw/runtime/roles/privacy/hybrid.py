"""The runtime half of the hybrid key wrap: ML-KEM-768 encapsulation and key loading.

Encapsulation draws fresh randomness inside OpenSSL, so it cannot run in a core; the sender's
privacy manager encapsulates here, once per recipient and payload, and hands the results
(`KemShare`) to `core/privacy/envelope.seal`. The recipients' ML-KEM keys come only from the signed
channel config (`NodeConfig.privacy_kem_public_key`), like their X25519 keys, never from a
request. A simulated run of a hybrid channel is therefore not byte-for-byte replayable (the
ciphertexts differ), though its decisions are: payload hashes cover the payload's ciphertext,
not its boxes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dltmw.core.errors import ClientError
from dltmw.core.privacy.envelope import PrivacyKey
from dltmw.core.privacy.kem import KEM_PUBLIC_BYTES, KemShare
from dltmw.v1 import errors_pb2

R = errors_pb2
PUBLIC_KEYS_CACHED = 1024


@functools.lru_cache(maxsize=PUBLIC_KEYS_CACHED)
def _public(kem_public_key: bytes) -> MLKEM768PublicKey:
    """A recipient's parsed ML-KEM key: parsing costs as much as an encapsulation, and a channel
    has few recipients, so each is parsed once (bounded, like the X25519 kek cache)."""
    return MLKEM768PublicKey.from_public_bytes(kem_public_key)


def encapsulate(kem_public_key: bytes) -> KemShare:
    """A fresh ML-KEM-768 encapsulation to `kem_public_key` (taken from the channel config)."""
    if len(kem_public_key) != KEM_PUBLIC_BYTES:
        raise ClientError(
            R.ERROR_REASON_INVALID_FIELD,
            f"ML-KEM-768 public key must be {KEM_PUBLIC_BYTES} bytes, not {len(kem_public_key)}",
        )
    try:
        public = _public(kem_public_key)
    except ValueError as exc:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"bad ML-KEM-768 key: {exc}") from exc
    secret, ciphertext = public.encapsulate()
    return KemShare(kem_public_key, secret, ciphertext)


def encapsulate_all(kem_keys: Mapping[bytes, bytes]) -> dict[bytes, KemShare]:
    """One fresh share per recipient: X25519 key -> share for its ML-KEM key."""
    return {x25519: encapsulate(kem) for x25519, kem in kem_keys.items()}


def load_privacy_key(pem: bytes, kem_pem: bytes | None = None) -> PrivacyKey:
    """The node's PrivacyKey from its PKCS8 PEM file(s): X25519, plus ML-KEM-768 if given."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, X25519PrivateKey):
        raise ValueError("privacy key must be an X25519 private key")
    seed = None
    if kem_pem is not None:
        kem = serialization.load_pem_private_key(kem_pem, password=None)
        if not isinstance(kem, MLKEM768PrivateKey):
            raise ValueError("privacy KEM key must be an ML-KEM-768 private key")
        seed = kem.private_bytes_raw()
    return PrivacyKey(key.private_bytes_raw(), seed)
