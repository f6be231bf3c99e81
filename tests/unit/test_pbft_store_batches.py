"""The PBFT-lite record store keeps a disseminated batch only while a restart can need it.

A stored batch (`BatchRecord`) is needed until its slot leaves the retention window: compacting
an assembled slot deletes the batches it took, in the same transaction. Batches not in the chain
stay (bounded per origin by the core). Rows written before batches carried their key get it when
the store opens, so they are compacted too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from dltmw.core.pbft import Envelope
from dltmw.core.pbft.assembly import AssembledRecord
from dltmw.core.pbft.availability import BatchKey
from dltmw.core.pbft.dissemination import BatchRecord
from dltmw.ledger.pbft_store import EXPIRED_BATCHES, RecordStore
from dltmw.v1 import replica_pb2


def batch(origin: int, seq: int, formed_at: int = 0) -> BatchRecord:
    body = replica_pb2.Batch(
        batch_sequence=seq, digest=bytes([seq]) * 32, envelopes=[b"e"], formed_at=formed_at
    )
    message = replica_pb2.ReplicaMessage(batch=body)
    envelope = Envelope(payload=message.SerializeToString(), replica=origin, signature=b"s")
    return BatchRecord(envelope, BatchKey(origin, seq), formed_at)


def slot(sequence: int, *keys: tuple[int, int]) -> AssembledRecord:
    return AssembledRecord(sequence, tuple((o, s, bytes([s]) * 32) for o, s in keys), ())


def keys(records: Sequence[object]) -> set[tuple[int, int]]:
    return {(r.key.origin, r.key.batch_sequence) for r in records if isinstance(r, BatchRecord)}


async def test_compaction_deletes_the_batches_of_compacted_slots_only(tmp_path: Path) -> None:
    store = await RecordStore.open(tmp_path / "r.sqlite")
    await store.append([batch(0, 1), batch(1, 1), batch(0, 2), batch(0, 3), batch(2, 7)])
    await store.append([slot(1, (0, 1), (1, 1)), slot(2, (0, 2)), slot(3, (0, 3))])
    await store.compact(stable_seq=2, decided_from=3)  # slots 1 and 2 leave the window
    records = await store.load_all()
    assert keys(records) == {(0, 3), (2, 7)}  # slot 3's batch, and one not in the chain
    assert [r.sequence for r in records if isinstance(r, AssembledRecord)] == [3]
    await store.close()
    reopened = await RecordStore.open(tmp_path / "r.sqlite")
    assert keys(await reopened.load_all()) == {(0, 3), (2, 7)}
    await reopened.close()


async def test_batch_rows_written_without_their_key_get_it_and_are_compacted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.sqlite"
    store = await RecordStore.open(path)
    await store.append([slot(1, (3, 5))])
    await store.close()
    with sqlite3.connect(path) as conn:  # as the version before keys wrote it: seq 0
        data = batch(3, 5).envelope.SerializeToString()
        conn.execute("INSERT INTO records(kind, seq, data) VALUES ('batch', 0, ?)", (data,))
    reopened = await RecordStore.open(path)
    assert keys(await reopened.load_all()) == {(3, 5)}
    await reopened.compact(stable_seq=1, decided_from=2)
    assert keys(await reopened.load_all()) == set()
    await reopened.close()


async def test_a_stored_batch_is_read_back_by_key_and_digest_until_compacted(
    tmp_path: Path,
) -> None:
    """What answers a fetch of a batch in the chain (`BatchFromStore`): the row under its key
    whose digest matches (an equivocating origin can have two under one key), none after the
    slot that took it was compacted."""
    store = await RecordStore.open(tmp_path / "r.sqlite")
    other = replica_pb2.ReplicaMessage(
        batch=replica_pb2.Batch(batch_sequence=1, digest=b"\x09" * 32, envelopes=[b"x"])
    )
    twin = Envelope(payload=other.SerializeToString(), replica=0, signature=b"t")
    await store.append([BatchRecord(twin, BatchKey(0, 1)), batch(0, 1), batch(1, 2)])
    found = await store.batch(BatchKey(0, 1), bytes([1]) * 32)
    assert found == batch(0, 1).envelope
    assert await store.batch(BatchKey(0, 1), b"\x09" * 32) == twin
    assert await store.batch(BatchKey(0, 1), b"\x07" * 32) is None
    assert await store.batch(BatchKey(3, 1), bytes([1]) * 32) is None
    await store.append([slot(1, (0, 1)), slot(2, (1, 2))])
    await store.compact(stable_seq=1, decided_from=2)
    assert await store.batch(BatchKey(0, 1), bytes([1]) * 32) is None
    assert await store.batch(BatchKey(1, 2), bytes([2]) * 32) == batch(1, 2).envelope
    await store.close()


async def test_expired_batches_are_compacted_and_jumped_slots_stay_marked(tmp_path: Path) -> None:
    """A stored batch formed more than `expiry` slots below the compaction floor can never be
    assembled from there on, in the chain or not: compaction deletes it (before, a batch no
    slot took stayed on disk for good, and every restart read it back). Without `expiry` (a
    store without dissemination rules) nothing expires. A jumped slot's record keeps its
    mark, which a restart needs (`assembly.BatchResolver.blind_upto`)."""
    store = await RecordStore.open(tmp_path / "r.sqlite")
    await store.append([batch(0, 1, formed_at=1), batch(1, 1, formed_at=5), batch(2, 1, 9)])
    await store.append([AssembledRecord(9, (), (b"i" * 32,), jumped=True)])
    await store.compact(stable_seq=1, decided_from=9)
    assert keys(await store.load_all()) == {(0, 1), (1, 1), (2, 1)}
    await store.compact(stable_seq=1, decided_from=9, expiry=4)  # 1 + 4 < 9; 5 + 4 is not
    records = await store.load_all()
    assert keys(records) == {(1, 1), (2, 1)}
    assert [r.formed_at for r in records if isinstance(r, BatchRecord)] == [5, 9]
    assert [r.jumped for r in records if isinstance(r, AssembledRecord)] == [True]
    await store.close()


async def test_a_store_made_before_batches_carried_formed_at_gets_the_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.sqlite"
    with sqlite3.connect(path) as conn:  # the schema before the column
        conn.execute(
            "CREATE TABLE records (id INTEGER PRIMARY KEY, kind TEXT, seq INTEGER, data BLOB)"
        )
        data = batch(3, 5, formed_at=2).envelope.SerializeToString()
        conn.execute(
            "INSERT INTO records(kind, seq, data) VALUES ('batch', ?, ?)", (3 << 40 | 5, data)
        )
    store = await RecordStore.open(path)
    (old,) = await store.load_all()
    assert isinstance(old, BatchRecord) and old.formed_at == 2  # read from the batch itself
    await store.append([batch(3, 6, formed_at=7)])
    assert [r.formed_at for r in await store.load_all() if isinstance(r, BatchRecord)] == [2, 7]
    await store.close()


async def test_expired_batches_are_found_through_the_index_without_reading_their_rows(
    tmp_path: Path,
) -> None:
    """`formed` is stored after a batch's bytes, so a compaction that judged `formed` from the
    row read every retained batch's overflow pages back at every stable checkpoint (~40 MB at
    n = 4). The expiry is a range on (kind, formed): only the expired rows are visited. Also
    in a store made before the column, which gets the index when it opens."""
    for made_before_the_column in (False, True):
        path = tmp_path / f"r{made_before_the_column}.sqlite"
        if made_before_the_column:
            with sqlite3.connect(path) as conn:
                conn.execute(
                    "CREATE TABLE records (id INTEGER PRIMARY KEY, kind TEXT, seq INTEGER,"
                    " data BLOB)"
                )
        store = await RecordStore.open(path)
        await store.close()
        with sqlite3.connect(path) as conn:
            plan = " ".join(
                row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {EXPIRED_BATCHES}", (9,))
            )
        assert "USING INDEX records_kind_formed (kind=? AND formed<?)" in plan, plan
