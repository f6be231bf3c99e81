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

The positions come from Python's hash() of the key — SipHash keyed with the process's random
hash secret (the interpreter's hash randomisation) — by double hashing: a requester chooses the
refs it sends and must not be able to aim them at the same bits (which would only cost probes,
but still); a fresh interpreter (a restart) draws a new key.
"""

from __future__ import annotations

BITS_LOG2 = 26  # 8 MiB of bits: ~0.5 % false positives at 5 million keys with 4 hashes
HASHES = 4


class SeenFilter:
    """Bloom filter over byte keys (see module docstring); not thread-safe: the store thread
    owns it."""

    def __init__(self, bits_log2: int = BITS_LOG2, hashes: int = HASHES) -> None:
        if not 8 <= bits_log2 <= 32:
            raise ValueError("bits_log2 must be within 8..32")
        self._bits = bytearray(1 << (bits_log2 - 3))
        self._mask = (1 << bits_log2) - 1
        self._hashes = hashes

    def _positions(self, key: bytes) -> list[int]:
        # Double hashing (Kirsch-Mitzenmacher) from one 64-bit keyed SipHash: Python's own
        # hash() of bytes, keyed per process (hash randomisation), ~0.1 us in C.
        h = hash(key) & 0xFFFF_FFFF_FFFF_FFFF
        first, step, mask = h & 0xFFFF_FFFF, (h >> 32) | 1, self._mask
        return [(first + i * step) & mask for i in range(self._hashes)]

    def add(self, key: bytes) -> None:
        """Record `key` as (possibly) written."""
        bits = self._bits
        for p in self._positions(key):
            bits[p >> 3] |= 1 << (p & 7)

    def may_hold(self, key: bytes) -> bool:
        """False only if `key` was certainly never added."""
        bits = self._bits
        return all(bits[p >> 3] >> (p & 7) & 1 for p in self._positions(key))
