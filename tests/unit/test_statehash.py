"""The state hash (dltmw.core.statehash): a multiset hash kept per block, recomputable from state.

The property that makes it useful: updating the accumulator block by block (O(writes)) gives
exactly what a from-scratch scan of the resulting state gives, whatever the writes, deletes,
rewrites of one key within a block, and order of entries. And the value nodes agree on and
store never changes: `entry_term` (rewritten for speed) gives the bytes of its first, plain
form (`_entry_term_v1`, kept here) on any entry, and a pinned digest.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.rwset import StateWrite, Version
from dltmw.core.statehash import (
    ACC_BYTES,
    StateAccumulator,
    accumulate,
    advance,
    chain_step,
    entry_term,
    final_writes,
)

Entry = tuple[str, str, bytes, Version]
State = dict[tuple[str, str], tuple[bytes, Version]]

NAMESPACES = st.sampled_from(["bank", "kv"])
KEYS = st.sampled_from([f"k{i}" for i in range(6)])
VALUES = st.one_of(st.none(), st.binary(max_size=4))
BLOCK_WRITES = st.lists(st.tuples(NAMESPACES, KEYS, VALUES), max_size=8)


def _entries(state: State) -> list[Entry]:
    return [(ns, k, v, ver) for (ns, k), (v, ver) in state.items()]


def _apply_block(
    state: State, number: int, raw: list[tuple[str, str, bytes | None]]
) -> tuple[list[StateWrite], State]:
    """The writes of one block (tx_index = position) and the naive resulting state."""
    writes = [StateWrite(ns, k, v, Version(number, i)) for i, (ns, k, v) in enumerate(raw)]
    after = dict(state)
    for w in writes:  # sequential model: each write in order
        if w.value is None:
            after.pop((w.namespace, w.key), None)
        else:
            after[(w.namespace, w.key)] = (w.value, w.version)
    return writes, after


@settings(max_examples=300, deadline=None)
@given(st.lists(BLOCK_WRITES, max_size=10))
def test_incremental_equals_from_scratch(blocks: list[list[tuple[str, str, bytes | None]]]) -> None:
    state: State = {}
    acc = StateAccumulator()
    for number, raw in enumerate(blocks, start=1):
        writes, after = _apply_block(state, number, raw)
        final = final_writes(writes)
        old = {ref: state[ref] for ref in final if ref in state}
        acc = advance(acc, old, final)
        state = after
        assert acc == accumulate(_entries(state)), f"diverged at block {number}"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(NAMESPACES, KEYS, st.binary(max_size=4)), unique_by=lambda e: e[:2]))
def test_order_of_entries_does_not_matter(rows: list[tuple[str, str, bytes]]) -> None:
    entries = [(ns, k, v, Version(1, i)) for i, (ns, k, v) in enumerate(rows)]
    assert accumulate(entries) == accumulate(list(reversed(entries)))


def test_any_edited_field_changes_the_digest() -> None:
    base = [("kv", "a", b"1", Version(1, 0)), ("kv", "b", b"2", Version(1, 1))]
    digest = accumulate(base).digest()
    edits = [
        [("kv", "a", b"9", Version(1, 0)), base[1]],  # value
        [("kv", "a", b"1", Version(1, 1)), base[1]],  # version
        [("bank", "a", b"1", Version(1, 0)), base[1]],  # namespace
        [("kv", "c", b"1", Version(1, 0)), base[1]],  # key
        [base[0]],  # a row deleted
        [*base, ("kv", "c", b"3", Version(2, 0))],  # a row inserted
    ]
    for edited in edits:
        assert accumulate(edited).digest() != digest, edited


def test_fields_are_length_prefixed() -> None:
    # ("ab", "c") and ("a", "bc") would collide under plain concatenation
    assert entry_term("ab", "c", b"", Version(0, 0)) != entry_term("a", "bc", b"", Version(0, 0))


def test_stored_form_round_trips_and_rejects_a_wrong_length() -> None:
    acc = accumulate([("kv", "a", b"1", Version(1, 0))])
    assert StateAccumulator.from_bytes(acc.to_bytes()) == acc
    assert len(acc.to_bytes()) == ACC_BYTES
    try:
        StateAccumulator.from_bytes(bytes(32))
    except ValueError:
        pass
    else:
        raise AssertionError("a 32-byte accumulator was accepted")


def test_final_writes_keeps_the_last_write_per_key() -> None:
    writes = [
        StateWrite("kv", "a", None, Version(1, 0)),
        StateWrite("kv", "a", b"x", Version(1, 1)),
        StateWrite("kv", "b", b"y", Version(1, 2)),
    ]
    final = final_writes(writes)
    assert final == {("kv", "a"): writes[1], ("kv", "b"): writes[2]}


def test_chain_step_depends_on_every_earlier_hash() -> None:
    a, b = bytes(32), b"\x01" * 32
    assert chain_step(chain_step(bytes(32), a), b) != chain_step(chain_step(bytes(32), b), b)


def _entry_term_v1(namespace: str, key: str, value: bytes, version: Version) -> int:
    """`entry_term` as first written (the module docstring's encoding, concatenated): the
    reference its faster form must equal, byte for byte."""

    def field(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    encoded = (
        b"dltmw/state/v1\x00"
        + field(namespace.encode())
        + field(key.encode())
        + field(value)
        + version.block_number.to_bytes(8, "big")
        + version.tx_index.to_bytes(8, "big")
    )
    return int.from_bytes(hashlib.shake_256(encoded).digest(256), "big")


U64 = st.integers(0, 2**64 - 1)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40), st.text(max_size=300), st.binary(max_size=700), U64, U64)
def test_entry_term_equals_its_first_form(
    namespace: str, key: str, value: bytes, block_number: int, tx_index: int
) -> None:
    """Any text, any bytes (across SHAKE-256's 136-byte blocks), the whole u64 range: the
    same term. Red when a field's length prefix, the order of fields, the domain or the
    version's width changes (seen: `_VERSION` as ">QI", the key's length left out)."""
    version = Version(block_number, tx_index)
    assert entry_term(namespace, key, value, version) == _entry_term_v1(
        namespace, key, value, version
    )


def test_a_known_state_hash_is_unchanged() -> None:
    """The digest of a fixed state, as computed before `entry_term` was rewritten (the
    value every node stores per block): red on any change of the encoding or the hash."""
    entries = [
        ("kv", "a", b"1", Version(1, 0)),
        ("bank", "acct/\u00e9", b"\x00" * 200, Version(2**40, 7)),
    ]
    assert accumulate(entries).digest().hex() == (
        "83fcccad4f146846299de40aff3bf6f51f269e3026d3aa4a5b6ddd3c7d42e305"
    )
