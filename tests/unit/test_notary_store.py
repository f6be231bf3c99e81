"""The notary's sqlite spent-set: what a decision spent is committed at once and read back for
the next one (through the seen-filters that skip lookups of keys never written), signatures
survive a reopen (same bytes), and the primary key refuses a double spend even if the core were
wrong."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from utxo_parties import make_parties

from dltmw.core.handlers.notary import Ask, Decide, NotaryEffects, SingleNotary, Spent
from dltmw.core.notary import NotarisationAsk
from dltmw.core.notary_batch import SignedBatch, encode, sign_tree
from dltmw.core.utxo.model import Ref, Window
from dltmw.ledger.notary_store import (
    CACHE_KIB,
    SCHEMA,
    WAL_AUTOCHECKPOINT_PAGES,
    NotaryStore,
    StoreCorrupt,
    pack_tx_ids,
    resolve,
    unpack_tx_ids,
    write_batches,
)
from dltmw.ledger.seen_filter import SeenFilter, key_bits
from dltmw.ledger.sqlite_file import FORMAT
from dltmw.v1 import errors_pb2

P = make_parties()
R1, R2, R3 = Ref("01" * 32, 0), Ref("02" * 32, 1), Ref("03" * 32, 2)
T1, T2, T3, T4, T5 = "a1" * 32, "b2" * 32, "c3" * 32, "d4" * 32, "e5" * 32
NO_WINDOW = Window()


def ask(tx_id: str, *inputs: Ref) -> Ask:
    return Ask(NotarisationAsk(tx_id, inputs, (), NO_WINDOW, b""), 0, tx_id)


def decide(store: NotaryStore, *asks: Ask) -> NotaryEffects:
    """One driver step, by hand: load the rows the asks touch, step a core, record what it
    spent (all on the store thread, as the driver runs it)."""

    def step() -> NotaryEffects:
        core = SingleNotary(P.notary.sign)
        core.step(Decide(asks, store.rows_for([a.ask for a in asks])))
        effects = core.ready()
        for spent in effects.decided:
            store.record(spent)
        return effects

    return store.run(step)


def test_decisions_are_durable_and_idempotent_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "notary.sqlite"
    store = NotaryStore(path, P.notary.sign)
    store.open()
    first = decide(store, ask(T1, R1, R2), ask(T2, R2))
    store.close()
    signed, refused = (d for _, d in first.replies)
    assert signed.signature and refused.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
    reopened = NotaryStore(path, P.notary.sign)
    reopened.open()
    again = decide(reopened, ask(T1, R1, R2), ask(T2, R2))
    reopened.close()
    assert [d for _, d in again.replies] == [d for _, d in first.replies]
    assert again.decided == ()  # nothing new spent: the stored signature was answered
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM spent").fetchone()[0] == 2
        assert conn.execute("SELECT tx_id, inputs FROM notarised").fetchall() == [(T1, 2)]


class BrokenView:
    """A view that forgets everything: the core would sign a double spend."""

    def consumer_of(self, ref: Ref) -> str | None:
        return None

    def signature_of(self, tx_id: str) -> bytes | None:
        return None


def test_the_primary_key_refuses_a_double_spend_and_rolls_back(tmp_path: Path) -> None:
    store = NotaryStore(tmp_path / "notary.sqlite", P.notary.sign)
    store.open()
    decide(store, ask(T1, R1))

    def broken() -> None:
        core = SingleNotary(P.notary.sign)
        core.step(Decide((ask(T2, R1, R2),), BrokenView()))
        (spent,) = core.ready().decided
        store.record(spent)

    with pytest.raises(sqlite3.IntegrityError):
        store.run(broken)
    rows = store.run(lambda: store._conn.execute("SELECT ref, tx_id FROM spent").fetchall())  # type: ignore[union-attr]
    store.close()
    assert rows == [(R1.key, T1)]


def test_a_later_step_sees_what_an_earlier_step_spent(tmp_path: Path) -> None:
    """Each step loads only what the seen-filters say may be stored: a state spent in an
    earlier step (of this open store) must still be found, and a signed tx_id answered again."""
    store = NotaryStore(tmp_path / "notary.sqlite", P.notary.sign)
    store.open()
    (signed,) = (d for _, d in decide(store, ask(T1, R1)).replies)
    late = decide(store, ask(T2, R2, R1), ask(T1, R1))
    store.close()
    refused, again = (d for _, d in late.replies)
    assert refused.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
    assert [c.ref for c in refused.conflicts] == [R1]
    assert again == signed and late.decided == ()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=200),
    st.lists(st.text(max_size=64), max_size=200),
)
def test_the_seen_filter_never_hides_a_key_it_was_given(
    keys: list[bytes], texts: list[str]
) -> None:
    seen = SeenFilter(bits_log2=12)  # small: many collisions, which may only add positives
    for k in keys[:50]:
        seen.add(k)
    seen.add_all(keys[50:])
    seen.add_all(texts)
    assert all(seen.may_hold(k) for k in keys) and all(seen.may_hold(t) for t in texts)
    assert seen.maybe(keys) == keys and seen.maybe(texts) == texts


@given(st.integers(0, 2**64 - 1))
def test_a_keys_bits_are_the_four_six_bit_positions_of_its_hash(h: int) -> None:
    """The table lookup sets exactly the bits of the definition: 6 hash bits per position."""
    expected = 0
    for shift in (0, 6, 12, 18):
        expected |= 1 << ((h >> shift) & 63)
    assert key_bits(h) == expected


def test_the_seen_filter_says_no_to_most_keys_it_was_not_given() -> None:
    """What the filter is for: a fresh key costs no probe (a filter that said "maybe" to all
    would be safe but useless; this is its false-positive rate at 1/8 of its design load)."""
    seen = SeenFilter(bits_log2=16)
    seen.add_all(i.to_bytes(36, "big") for i in range(1000))
    others = [i.to_bytes(36, "big") for i in range(10_000, 20_000)]
    assert len(seen.maybe(others)) < 200


def test_a_batch_is_stored_once_and_a_retry_gets_the_proof_it_was_first_given(
    tmp_path: Path,
) -> None:
    """Format 2: one `notary_batches` row per decided batch, a 16-byte reference per tx_id
    instead of its own signature and proof; a retry (after a reopen) is answered with the very
    signature and proof of the first answer, rebuilt from the batch."""
    path = tmp_path / "notary.sqlite"
    store = NotaryStore(path, P.notary.sign)
    store.open()
    txs = [f"{i:064x}" for i in range(1, 8)]
    first = decide(store, *(ask(t, Ref(t, 0)) for t in txs))
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM notary_batches").fetchone()[0] == 1
        values = [bytes(v) for (v,) in conn.execute("SELECT signature FROM notarised")]
        assert len(values) == len(txs) and all(len(v) == 16 for v in values)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT == 2
    reopened = NotaryStore(path, P.notary.sign)
    reopened.open()
    again = decide(reopened, *(ask(t, Ref(t, 0)) for t in reversed(txs)))
    explorer = reopened.run(lambda: reopened.notarised(txs[3]))
    reopened.close()
    answers = {d.tx_id: d for _, d in first.replies}
    assert [d for _, d in again.replies] == [answers[t] for t in reversed(txs)]
    assert again.decided == () and len({d.signature for d in answers.values()}) == 1
    assert explorer == (encode(answers[txs[3]].signature, answers[txs[3]].proof), 1)  # type: ignore[arg-type]


def _format_1_file(path: Path) -> dict[str, bytes]:
    """A notary file as format 1 left it: per tx_id its own attestation (a batch signature
    with proof, and a bare signature from before batch signing), no batch table."""
    signature, proofs = sign_tree([T1, T2], P.notary.sign)
    stored = {T1: encode(signature, proofs[0]), T2: encode(signature, proofs[1])}
    stored[T3] = P.notary.sign(T3.encode())
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE spent (ref BLOB PRIMARY KEY, tx_id TEXT NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE notarised (tx_id TEXT PRIMARY KEY, signature BLOB NOT NULL,"
            " inputs INTEGER NOT NULL) WITHOUT ROWID; PRAGMA user_version = 1;"
        )
        conn.executemany("INSERT INTO spent VALUES (?,?)", [(R1.key, T1), (R2.key, T2)])
        conn.executemany(
            "INSERT INTO notarised VALUES (?,?,?)",
            [(T1, stored[T1], 1), (T2, stored[T2], 1), (T3, stored[T3], 0)],
        )
    return stored


def test_a_format_1_file_opens_and_answers_as_before(tmp_path: Path) -> None:
    """Old stores still open: their rows are answered unchanged (same signature and proof,
    also a bare pre-batch signature), their spent states stay spent, and new batches are
    added in the new layout beside them."""
    path = tmp_path / "notary.sqlite"
    stored = _format_1_file(path)
    store = NotaryStore(path, P.notary.sign)
    store.open()
    out = decide(store, ask(T1, R1), ask(T2, R2), ask(T3), ask(T4, R1), ask(T5, R3))
    store.close()
    again1, again2, again3, refused, fresh = (d for _, d in out.replies)
    assert encode(again1.signature, again1.proof) == stored[T1]  # type: ignore[arg-type]
    assert encode(again2.signature, again2.proof) == stored[T2]  # type: ignore[arg-type]
    assert again3.signature == stored[T3] and again3.proof is None
    assert refused.reason == errors_pb2.ERROR_REASON_INPUT_CONSUMED
    assert fresh.signature and fresh.proof is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT
        assert conn.execute("SELECT count(*) FROM notary_batches").fetchone()[0] == 1
        kept = dict(conn.execute("SELECT tx_id, signature FROM notarised WHERE tx_id<>?", (T5,)))
    assert {t: bytes(v) for t, v in kept.items()} == stored  # nothing rewritten


def test_a_reference_to_a_missing_batch_is_refused_not_answered(tmp_path: Path) -> None:
    path = tmp_path / "notary.sqlite"
    store = NotaryStore(path, P.notary.sign)
    store.open()
    decide(store, ask(T1, R1))
    store.run(lambda: store._conn.execute("DELETE FROM notary_batches"))
    with pytest.raises(StoreCorrupt):
        decide(store, ask(T1, R1))
    store.close()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.one_of(st.binary(min_size=32, max_size=32).map(bytes.hex), st.text()), min_size=1)
)
def test_packed_tx_ids_read_back_in_order(tx_ids: list[str]) -> None:
    tx_ids = [t for t in tx_ids if "\n" not in t] or ["a" * 64]
    assert unpack_tx_ids(pack_tx_ids(tx_ids)) == tuple(tx_ids)


def test_the_notary_connection_gets_its_page_cache(tmp_path: Path) -> None:
    """Its own bound, above sqlite's default and resident for the node's life (CACHE_KIB)."""
    store = NotaryStore(tmp_path / "notary.sqlite", P.notary.sign)
    store.open()
    size = store.run(lambda: store._conn.execute("PRAGMA cache_size").fetchone()[0])
    store.close()
    assert size == -CACHE_KIB


def test_the_notary_checkpoints_less_often_and_a_reopen_sees_every_batch(tmp_path: Path) -> None:
    """Pages dirtied by several batches are checkpointed once (see WAL_AUTOCHECKPOINT_PAGES);
    what is committed but not yet checkpointed is read back after a reopen."""
    path = tmp_path / "notary.sqlite"
    store = NotaryStore(path, P.notary.sign)
    store.open()
    pages = store.run(lambda: store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    for b in range(20):
        decide(store, *(ask(f"{b:032x}{i:032x}", Ref(f"{b:032x}{i:032x}", 0)) for i in range(50)))
    in_wal = path.with_name(path.name + "-wal").stat().st_size
    store.close()
    assert pages == WAL_AUTOCHECKPOINT_PAGES > 1000 and in_wal > 0
    reopened = NotaryStore(path, P.notary.sign)
    reopened.open()
    again = decide(reopened, ask(f"{7:032x}{9:032x}", Ref(f"{7:032x}{9:032x}", 0)))
    reopened.close()
    assert again.decided == () and next(d for _, d in again.replies).signature
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM spent").fetchone()[0] == 20 * 50


class _RecordingConnection:
    """A sqlite connection that also keeps the rows of every `executemany`, in order."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.rows: list[list[Any]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Any]) -> sqlite3.Cursor:
        self.rows.append(list(rows))
        return self._conn.executemany(sql, rows)


def test_a_batchs_notarised_rows_are_inserted_in_key_order_and_keep_their_leaves() -> None:
    """With a small page cache (CACHE_KIB), inserts in key order walk the B-tree once per batch
    instead of re-reading evicted leaves; each row still names its own leaf, so every retry
    gets the proof its first answer carried."""
    tx_ids = tuple(f"{(i * 7919) % 101:064x}" for i in range(101))  # leaf order != key order
    batch = SignedBatch(b"signature", tx_ids)
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    recording = _RecordingConnection(conn)
    write_batches(recording, Spent(batches=(batch,)))  # type: ignore[arg-type]
    (notarised,) = recording.rows
    assert [row[0] for row in notarised] == sorted(tx_ids)
    stored = {t: bytes(v) for t, v in conn.execute("SELECT tx_id, signature FROM notarised")}
    assert resolve(conn, stored) == dict(batch.attestations())


def test_a_notarys_seen_filters_take_6_mib_together(tmp_path: Path) -> None:
    """The filters are allocated whole at start and resident for the notary's life: 4 + 2 MiB
    (issue 18's 100 MB per node; `seen_filter.BITS_LOG2` says what the size buys)."""
    store = NotaryStore(tmp_path / "notary.sqlite", P.notary.sign)
    store.open()
    try:
        assert store.filter_bytes == 6 * 1024 * 1024
    finally:
        store.close()
