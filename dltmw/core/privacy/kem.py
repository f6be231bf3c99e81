"""The hybrid key wrap: X25519 + ML-KEM-768, secure while either of the two holds.

Theory of operation (the "KEM combiner" of hybrid TLS key exchange and X-Wing, over HKDF):

* A recipient of a hybrid channel publishes two keys in the signed channel config: its X25519
  key (`NodeConfig.privacy_public_key`, also its identity in the box list) and an ML-KEM-768
  encapsulation key (`NodeConfig.privacy_kem_public_key`).
* For each box the sender encapsulates to the recipient's ML-KEM key, getting a fresh shared
  secret and a 1088-byte ciphertext (`RecipientBox.kem_ciphertext`), and computes the static
  X25519 secret of the (sender, recipient) pair as before. The box's kek is

      HKDF-SHA256(ikm = mlkem_secret || x25519_secret, salt = none,
                  info = HYBRID_INFO || sender || recipient || SHA-256(recipient ML-KEM key)
                         || kem_ciphertext)

  The ikm holds both secrets, so an attacker must know both to get the kek: breaking X25519
  (a quantum computer recovering X25519 keys from public keys) leaves the ML-KEM secret unknown,
  and a flaw in ML-KEM leaves the X25519 secret unknown. The info is the transcript: both
  parties' X25519 keys (X25519's "ciphertext" is the sender's static key), the ML-KEM key that
  was encapsulated to and the ML-KEM ciphertext, so a secret cannot be moved to another box.
* The payload key is then wrapped with AES-256-GCM under that kek exactly like an X25519 box.

ML-KEM encapsulation draws randomness inside OpenSSL, which a core must not do: the runtime
encapsulates (`runtime/roles/privacy/hybrid.encapsulate`) and passes the results in as `KemShare`
values. Decapsulation is deterministic (and, per FIPS 203, returns an unrelated secret for a
damaged ciphertext rather than failing: the box's GCM tag then refuses it), so it runs here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dltmw.v1 import algorithms_pb2

A = algorithms_pb2
X25519 = A.KEY_WRAP_ALGORITHM_X25519
HYBRID = A.KEY_WRAP_ALGORITHM_X25519_MLKEM768
HYBRID_INFO = b"dltmw/pp/kek/x25519-mlkem768/v1"
KEM_SEED_BYTES = 64
KEM_PUBLIC_BYTES = 1184
KEM_CIPHERTEXT_BYTES = 1088
KEM_SECRET_BYTES = 32
KEK_BYTES = 32
KNOWN_WRAPS = frozenset({A.KEY_WRAP_ALGORITHM_UNSPECIFIED, X25519, HYBRID})


def effective_wrap(algorithm: int) -> int:
    """The wrap a payload or channel means: absent (UNSPECIFIED) is X25519."""
    return X25519 if algorithm == A.KEY_WRAP_ALGORITHM_UNSPECIFIED else algorithm


def wrap_name(algorithm: int) -> str:
    """Readable name of a wrap value, also for values this node does not know."""
    try:
        return A.KeyWrapAlgorithm.Name(algorithm)  # type: ignore[arg-type]
    except ValueError:
        return f"key wrap {algorithm}"


@dataclass(frozen=True)
class KemShare:
    """One ML-KEM-768 encapsulation to one recipient, drawn by the runtime."""

    recipient_kem_public_key: bytes
    shared_secret: bytes
    ciphertext: bytes


class KemKey:
    """A node's ML-KEM-768 decapsulation key (from its 64-byte seed)."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != KEM_SEED_BYTES:
            raise ValueError(f"ML-KEM-768 seed must be {KEM_SEED_BYTES} bytes")
        self._private = MLKEM768PrivateKey.from_seed_bytes(seed)
        self.public_key: bytes = self._private.public_key().public_bytes_raw()

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """The shared secret of `ciphertext` (an unrelated one if the ciphertext was altered)."""
        if len(ciphertext) != KEM_CIPHERTEXT_BYTES:
            raise ValueError(f"ML-KEM-768 ciphertext must be {KEM_CIPHERTEXT_BYTES} bytes")
        return self._private.decapsulate(ciphertext)


def hybrid_kek(
    x25519_secret: bytes,
    kem_secret: bytes,
    sender: bytes,
    recipient: bytes,
    recipient_kem_public_key: bytes,
    kem_ciphertext: bytes,
) -> AESGCM:
    """The AEAD of one hybrid box: HKDF over both secrets, the transcript as info."""
    info = (
        HYBRID_INFO
        + sender
        + recipient
        + hashlib.sha256(recipient_kem_public_key).digest()
        + kem_ciphertext
    )
    ikm = kem_secret + x25519_secret
    return AESGCM(HKDF(hashes.SHA256(), KEK_BYTES, None, info).derive(ikm))
