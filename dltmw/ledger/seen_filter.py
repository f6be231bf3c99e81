"""A Bloom filter of the keys a store has written: "certainly never written" answered from
memory, so a lookup of a key that was never written costs no index probe.

Why: a notary looks up every input of every request in its spent-set before deciding, and
almost every input is fresh (a state spent for the first time). Those lookups were ~15 % of the
notary's store thread, which is its bottleneck (one sqlite connection decides, writes and
commits each batch in turn). The filter answers `may_hold(key) is False` for nearly all of them.

Safety: the filter must hold every key that is durable in the table. The store adds a batch's
keys BEFORE it writes them (so even a commit whose outcome is unknown leaves the filter a
superset) and adds every key of the table when it opens. A false positive only costs the probe
the filter saved; a key missing from the filter would let a consumed state look fresh — the
spent table's primary key would still refuse the double spend (the batch rolls back and the
notary stops), which is why the filter lives only in front of that table.

The positions come from keyed BLAKE2b with a per-process random key: a requester can choose the
refs it sends, and must not be able to aim them at the same bits (which would only cost probes,
but still).
"""

from __future__ import annotations

import hashlib
import os

BITS_LOG2 = 26  # 8 MiB of bits: ~0.5 % false positives at 5 million keys with 4 hashes
HASHES = 4


class SeenFilter:
    """Bloom filter over byte keys (see module docstring); not thread-safe: the store thread
    owns it."""

    def __init__(self, bits_log2: int = BITS_LOG2, hashes: int = HASHES) -> None:
        self._bits = bytearray(1 << (bits_log2 - 3))
        self._mask = (1 << bits_log2) - 1
        self._shift = bits_log2
        self._hashes = hashes
        self._salt = os.urandom(16)
        self._size = (bits_log2 * hashes + 7) // 8

    def _positions(self, key: bytes) -> list[int]:
        digest = hashlib.blake2b(key, digest_size=self._size, key=self._salt).digest()
        value = int.from_bytes(digest, "little")
        out = []
        for _ in range(self._hashes):
            out.append(value & self._mask)
            value >>= self._shift
        return out

    def add(self, key: bytes) -> None:
        """Record `key` as (possibly) written."""
        bits = self._bits
        for p in self._positions(key):
            bits[p >> 3] |= 1 << (p & 7)

    def may_hold(self, key: bytes) -> bool:
        """False only if `key` was certainly never added."""
        bits = self._bits
        return all(bits[p >> 3] >> (p & 7) & 1 for p in self._positions(key))
