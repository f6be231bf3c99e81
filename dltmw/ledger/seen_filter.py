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

Layout: a *blocked* Bloom filter (Putze, Sanders, Singler 2007): one hash picks a 64-bit word
and sets HASHES bits inside it. A key then costs one hash, one array read and a few integer
operations in Python — the classic layout (HASHES independent bit positions, a list of them
per key) cost ~1.5 µs a key and was ~20 % of the notary's store thread (profile 2026-12-01
14:00 UTC, benchmarks/RESULTS.md). The price is a slightly higher false-positive rate at the
same size (~1 % instead of ~0.5 % at 5 million keys in 2**26 bits), i.e. a few more probes.
The sizes are `BITS_LOG2`'s comment.

The positions come from Python's hash() of the key — SipHash keyed with the process's random
hash secret (the interpreter's hash randomisation): a requester chooses the refs it sends and
must not be able to aim them at the same bits (which would only cost probes, but still); a
fresh interpreter (a restart) draws a new key. Keys are bytes or str (a tx_id is hashed as its
text: no encoding per key).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from typing import TypeVar

# 4 MiB of bits: ~0.9 % false positives at 2.5 million keys with 4 bits per key, ~5 % at 5
# million (measured, 2026-12-02). It was 2**26 (8 MiB, ~0.9 % at 5 million): every notary then
# held 12 MiB of filters from its start (this and the tx_id filter, half the size), which put a
# single notary at 101 MB after 1,000,000 notarisations against issue 18's 100 MB. A false
# positive costs one index probe, so past 2.5 million keys the price is a few % more probes.
BITS_LOG2 = 25
HASHES = 4  # bits set per key, 6 hash bits each (the low 24 bits of the hash)
_WORD_LOG2 = 6  # 64-bit words
_M = 63
K = TypeVar("K", bound=bytes | str)
# The two bits that 12 hash bits choose, for every value of them: a key's 4 bits are the OR of
# two entries (hash bits 0-11 and 12-23), the same bits as four shifts but ~40 % less Python per
# key (0.6-0.8 instead of 1.0-1.2 µs: the notary calls this ~6 times per transaction).
_PAIR = 1 << 12
_PAIRS = tuple((1 << (x & _M)) | (1 << ((x >> 6) & _M)) for x in range(_PAIR))


def key_bits(h: int) -> int:
    """The bits of its word that a key with hash `h` sets (HASHES of them, maybe coinciding)."""
    return _PAIRS[h & (_PAIR - 1)] | _PAIRS[(h >> 12) & (_PAIR - 1)]


class SeenFilter:
    """Blocked Bloom filter over byte or text keys (see module docstring); not thread-safe:
    the store thread owns it."""

    def __init__(self, bits_log2: int = BITS_LOG2) -> None:
        if not 8 <= bits_log2 <= 32:
            raise ValueError("bits_log2 must be within 8..32")
        self._words = array("Q", bytes(1 << (bits_log2 - 3)))
        self._word_mask = (1 << (bits_log2 - _WORD_LOG2)) - 1

    @property
    def size_bytes(self) -> int:
        """Memory the bits take (allocated up front, all of it resident once keys spread)."""
        return self._words.itemsize * len(self._words)

    def add(self, key: bytes | str) -> None:
        """Record `key` as (possibly) written."""
        self.add_all((key,))

    def add_all(self, keys: Iterable[bytes | str]) -> None:
        """Record every key of `keys` (one loop: the per-call overhead counts here)."""
        words, wmask, pairs, low = self._words, self._word_mask, _PAIRS, _PAIR - 1
        for key in keys:  # `key_bits`, inlined: a call per key costs as much as the rest
            h = hash(key)
            words[(h >> 24) & wmask] |= pairs[h & low] | pairs[(h >> 12) & low]

    def may_hold(self, key: bytes | str) -> bool:
        """False only if `key` was certainly never added."""
        return bool(self.maybe((key,)))

    def maybe(self, keys: Iterable[K]) -> list[K]:
        """Those of `keys` that may have been added (the others certainly were not)."""
        words, wmask, pairs, low = self._words, self._word_mask, _PAIRS, _PAIR - 1
        out = []
        for key in keys:
            h = hash(key)
            bits = pairs[h & low] | pairs[(h >> 12) & low]  # `key_bits`, inlined
            if words[(h >> 24) & wmask] & bits == bits:
                out.append(key)
        return out
