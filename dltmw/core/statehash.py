"""The state hash: one comparable digest of a whole world state, kept up to date per block.

Why. Block hashes prove that two nodes hold the same blocks, but the world state is derived
data in a table that anyone with file access can edit: a row changed behind the node's back is
served by queries and endorsements as if it had been committed. A state hash stored with every
block (in the same sqlite transaction) and recomputable from the state table alone makes such
an edit visible: the recomputed hash differs from the stored one, and a stored hash that was
"fixed up" too differs from every other peer's at that height.

How. A multiset hash (Bellare-Micciancio's AdHash): the accumulator is the sum, modulo 2^2048,
of one term per live entry, term = SHAKE-256(encode(namespace, key, value, version)) read as a
2048-bit integer. Addition is commutative, so the accumulator depends only on the set of
entries, not on the order in which they were written; a block updates it in O(its writes)
(subtract the old entry's term, add the new one's; a delete only subtracts), and a scan of the
table recomputes it from scratch. The published `state_hash` is SHA-256 over the accumulator
(32 bytes, what nodes compare and report).

Why 2048 bits and not 256. A sum of hashes modulo 2^n can be attacked with Wagner's generalised
birthday algorithm in roughly 2^(2·sqrt(n)) work, which is ~2^32 for n = 256 — an attacker could
then choose edited rows whose terms cancel. At n = 2048 it is ~2^90; the price is 256 bytes of
accumulator per ledger (not per block: only the 32-byte digest is stored per block) and one
SHAKE-256 squeeze of 256 bytes per write (~1-2 µs).

Encoding (language independent): DOMAIN || field(namespace) || field(key) || field(value) ||
block_number (u64 BE) || tx_index (u64 BE), where field(x) = len(x) (u32 BE) || x and text is
UTF-8, so no two entries share an encoding.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dltmw.core.rwset import StateWrite, Version

DOMAIN = b"dltmw/state/v1\x00"
DIGEST_DOMAIN = b"dltmw/state-digest/v1\x00"
ACC_BYTES = 256  # 2048-bit accumulator (see the module docstring for why not 256 bits)
MODULUS = 1 << (8 * ACC_BYTES)

KeyRef = tuple[str, str]


_LENGTH = struct.Struct(">I").pack  # field(x)'s len(x), u32 BE
_VERSION = struct.Struct(">QQ").pack  # block_number, tx_index, u64 BE each
# SHAKE-256 with DOMAIN absorbed: each term continues a copy of it (never updated itself).
_SEEDED = hashlib.shake_256(DOMAIN)


def entry_term(namespace: str, key: str, value: bytes, version: Version) -> int:
    """The accumulator term of one live state entry: SHAKE-256 of the module docstring's
    encoding, squeezed to ACC_BYTES, as a big-endian integer.

    Why it is written this way. It runs once per write on a peer's writer thread (twice for
    an overwrite), and its value is agreed between nodes and stored, so only its cost may
    change: a copy of `_SEEDED` instead of hashing DOMAIN again, the rest in one `join`
    with precompiled `struct` packs instead of four `to_bytes` and five concatenations
    (~1.54 -> ~1.31 us for a kv-bench entry; the SHAKE-256 call and the int conversion,
    ~1.0 us, are the floor; benchmarks/RESULTS.md, branch kvdup). The same bytes as the
    plain concatenation, property-tested against it (tests/unit/test_statehash.py); a
    length or version outside u32 / u64 (never on a ledger) raises struct.error."""
    n = namespace.encode()
    k = key.encode()
    shake = _SEEDED.copy()
    shake.update(
        b"".join(
            (
                _LENGTH(len(n)),
                n,
                _LENGTH(len(k)),
                k,
                _LENGTH(len(value)),
                value,
                _VERSION(version.block_number, version.tx_index),
            )
        )
    )
    return int.from_bytes(shake.digest(ACC_BYTES), "big")


@dataclass(frozen=True)
class StateAccumulator:
    """The multiset hash of a state: `value` is the sum of the entries' terms mod 2^2048."""

    value: int = 0

    @staticmethod
    def from_bytes(data: bytes) -> StateAccumulator:
        """Read the stored form (ACC_BYTES big-endian); ValueError on a wrong length."""
        if len(data) != ACC_BYTES:
            raise ValueError(f"state accumulator must be {ACC_BYTES} bytes, not {len(data)}")
        return StateAccumulator(int.from_bytes(data, "big"))

    def to_bytes(self) -> bytes:
        """The stored form."""
        return self.value.to_bytes(ACC_BYTES, "big")

    def digest(self) -> bytes:
        """The 32-byte state hash that nodes store per block and compare."""
        return hashlib.sha256(DIGEST_DOMAIN + self.to_bytes()).digest()

    def add(self, namespace: str, key: str, value: bytes, version: Version) -> StateAccumulator:
        """With one more live entry."""
        return StateAccumulator((self.value + entry_term(namespace, key, value, version)) % MODULUS)

    def remove(self, namespace: str, key: str, value: bytes, version: Version) -> StateAccumulator:
        """Without one live entry."""
        return StateAccumulator((self.value - entry_term(namespace, key, value, version)) % MODULUS)


def final_writes(writes: Iterable[StateWrite]) -> dict[KeyRef, StateWrite]:
    """The last write to each key, in first-write order: what a block leaves in the state.

    Several valid transactions of one block may write (or delete and rewrite) the same key; only
    the last one survives, whatever the order in which storage applies them.
    """
    last: dict[KeyRef, StateWrite] = {}
    for w in writes:
        last[(w.namespace, w.key)] = w
    return last


def advance(
    acc: StateAccumulator,
    old: Mapping[KeyRef, tuple[bytes, Version]],
    final: Mapping[KeyRef, StateWrite],
) -> StateAccumulator:
    """The accumulator after a block: `old` holds the pre-block entry of every key in `final`
    that existed (value, version), `final` is `final_writes` of the block."""
    value = acc.value
    for ref, w in final.items():
        before = old.get(ref)
        if before is not None:
            value -= entry_term(ref[0], ref[1], before[0], before[1])
        if w.value is not None:
            value += entry_term(w.namespace, w.key, w.value, w.version)
    return StateAccumulator(value % MODULUS)


def accumulate(entries: Iterable[tuple[str, str, bytes, Version]]) -> StateAccumulator:
    """The accumulator of a whole state, from scratch (namespace, key, value, version)."""
    total = 0
    for namespace, key, value, version in entries:
        total += entry_term(namespace, key, value, version)
    return StateAccumulator(total % MODULUS)


def chain_step(previous: bytes, state_hash: bytes) -> bytes:
    """One step of the running hash over stored state hashes (heights 0..n): it lets an audit
    bisect for the first height where two nodes' stored state hashes differ without shipping
    every per-block hash (a chained value differs from the first difference onwards)."""
    return hashlib.sha256(previous + state_hash).digest()
