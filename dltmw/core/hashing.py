"""Hashes with a fixed, language-independent definition.

Every hash that two nodes must agree on is defined over explicit byte concatenations of carried
fields, never over a re-serialised protobuf (protobuf serialisation is not canonical across
languages). hashlib is used rather than `cryptography` because it is ~3x faster for small inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

ZERO_HASH = bytes(32)
NONCE_MIN_BYTES = 24


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of `data`."""
    return hashlib.sha256(data).digest()


def compute_tx_id(nonce: bytes, creator: bytes) -> str:
    """tx_id = lower-case hex of SHA-256(nonce || creator)."""
    return hashlib.sha256(nonce + creator).hexdigest()


def data_hash(envelopes: Iterable[bytes]) -> bytes:
    """SHA-256 over the concatenated SHA-256 digests of each envelope, in order."""
    h = hashlib.sha256()
    for env in envelopes:
        h.update(hashlib.sha256(env).digest())
    return h.digest()


def header_hash(channel_id: str, number: int, previous_hash: bytes, data_digest: bytes) -> bytes:
    """Block hash: SHA-256(channel_id || 0x00 || number (u64 BE) || previous_hash || data_hash)."""
    return hashlib.sha256(
        channel_id.encode() + b"\x00" + number.to_bytes(8, "big") + previous_hash + data_digest
    ).digest()


HEADER_V2_TAG = b"\xffdltmw-block-v2"
"""Begins every version-2 header preimage; 0xFF never begins a version-1 one (ASCII channel id)."""


def header_hash_v2(
    channel_id: str, number: int, previous_hash: bytes, data_digest: bytes, tx_root: bytes
) -> bytes:
    """Block hash of a header with a tx_root (version 2): SHA-256(0xFF || "dltmw-block-v2" ||
    channel_id || 0x00 || number (u64 BE) || previous_hash || data_hash || tx_root)."""
    return hashlib.sha256(
        HEADER_V2_TAG
        + channel_id.encode()
        + b"\x00"
        + number.to_bytes(8, "big")
        + previous_hash
        + data_digest
        + tx_root
    ).digest()
