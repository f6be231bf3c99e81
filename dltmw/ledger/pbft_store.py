"""Durable PBFT-lite records of one replica (one sqlite file, one transaction per driver step).

The core's `Effects.persist` records are appended in order, each as (kind, sequence, bytes); a
restart reads them back in the same order and hands them to `Replica.restore`. Every record is
stored as the exact bytes of a replica.proto message, so nothing is re-derived on load. Once a
checkpoint is stable, `compact` deletes what a restart no longer needs (votes and prepared
certificates at or below it, older view and checkpoint records, decided batches below a
retention horizon), so the log stays bounded. With dissemination on (docs/ordering.md) the
store also holds `BatchRecord`s (kind "batch", under their batch key: stored batches) and
`AssembledRecord`s (compacted like decided batches, each with the batches it took:
`core.pbft.assembly.compact_assembled`, which the simulator applies). Batch rows written
before they carried their key (sequence 0) get it when the store opens; a batch row also
carries the batch's `formed_at` (column `formed`, NULL in rows written before it existed), so
that compaction drops batches that expired (`compact_assembled`).
The records belong to one replica group (epoch,
docs/governance.md): when a config block changes the replica set, `reset` discards them all
and names the new epoch; a restart that finds the ledger's epoch (`config_update.epoch_write`)
different from the store's discards them too (a crash fell between the two).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from dltmw.core.errors import InvariantViolation
from dltmw.core.pbft import (
    DecidedRecord,
    Envelope,
    JumpRecord,
    PreparedRecord,
    Record,
    StableRecord,
    ViewRecord,
    VoteRecord,
)
from dltmw.core.pbft.assembly import AssembledRecord
from dltmw.core.pbft.availability import BatchKey
from dltmw.core.pbft.dissemination import BatchRecord
from dltmw.core.pbft.recovery import record_sequence
from dltmw.ledger.page_cache import bound_cache
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.ledger.sqlite_file import SqliteFile
from dltmw.v1 import replica_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY, kind TEXT, seq INTEGER, data BLOB, formed INTEGER
);
CREATE INDEX IF NOT EXISTS records_kind_seq ON records(kind, seq);
CREATE TABLE IF NOT EXISTS epoch (id INTEGER PRIMARY KEY CHECK (id = 0), epoch INTEGER);
"""


# The expired batches of a compaction, found through `FORMED_INDEX` alone. `formed` is stored
# after `data` in a row, so without the index sqlite reads each batch row's ~165 KB overflow
# chain just to get `formed`: at n = 4 that was every retained batch (256 slots, ~40 MB) read
# back at every stable checkpoint, ~5 % of a backup's samples (RESULTS, branch pbft11).
FORMED_INDEX = "CREATE INDEX IF NOT EXISTS records_kind_formed ON records(kind, formed)"
EXPIRED_BATCHES = "DELETE FROM records WHERE kind='batch' AND formed < ?"

StoredRecord = Record | BatchRecord | AssembledRecord


JUMPED = 0xFFFFFFFF  # the batch count of an assembled record that was jumped over


def encode(record: StoredRecord) -> tuple[str, int, bytes]:
    """(kind, sequence, bytes) of a record."""
    if isinstance(record, BatchRecord):  # dissemination: a stored batch, under its key
        return ("batch", batch_row_seq(record.key), record.envelope.SerializeToString())
    if isinstance(record, AssembledRecord):
        return ("assembled", record.sequence, _encode_assembled(record))
    if isinstance(record, ViewRecord):
        return ("view", 0, record.view.to_bytes(8, "big") + bytes([record.changing]))
    if isinstance(record, VoteRecord):
        return ("vote", record_sequence(record), record.envelope.SerializeToString())
    if isinstance(record, PreparedRecord):
        return ("prepared", record_sequence(record), record.certificate.SerializeToString())
    if isinstance(record, DecidedRecord):
        return ("decided", record.batch.sequence, record.batch.SerializeToString())
    if isinstance(record, JumpRecord):
        return ("jump", record.sequence, _encode_jump(record))
    stable = replica_pb2.StableCheckpoint(
        sequence=record.sequence, state_digest=record.state_digest, proof=record.proof
    )
    return ("stable", record.sequence, stable.SerializeToString())


def decode(kind: str, _seq: int, data: bytes, formed: int | None = None) -> StoredRecord:
    """The record stored as (kind, data)."""
    if kind == "batch":
        envelope = Envelope.FromString(data)
        key = _batch_key(_seq) if _seq else _key_of(envelope)
        if formed is None:  # a row written before the column existed: from the batch itself
            formed = replica_pb2.ReplicaMessage.FromString(envelope.payload).batch.formed_at
        return BatchRecord(envelope, key, formed)
    if kind == "assembled":
        return _decode_assembled(_seq, data)
    if kind == "view":
        return ViewRecord(int.from_bytes(data[:8], "big"), bool(data[8]))
    if kind == "vote":
        return VoteRecord(Envelope.FromString(data))
    if kind == "prepared":
        return PreparedRecord(replica_pb2.PreparedCertificate.FromString(data))
    if kind == "decided":
        return DecidedRecord(replica_pb2.DecidedBatch.FromString(data))
    if kind == "stable":
        s = replica_pb2.StableCheckpoint.FromString(data)
        return StableRecord(s.sequence, s.state_digest, tuple(s.proof))
    if kind == "jump":
        return _decode_jump(_seq, data)
    raise InvariantViolation(f"unknown PBFT record kind {kind!r}")


def batch_row_seq(key: BatchKey) -> int:
    """The `seq` of a batch row: its key, packed (origin above 40 bits of batch sequence)."""
    return (key.origin << 40) | key.batch_sequence


def _batch_key(seq: int) -> BatchKey:
    return BatchKey(seq >> 40, seq & ((1 << 40) - 1))


def _key_of(envelope: Envelope) -> BatchKey:
    """The key of a signed batch, from its payload (rows written before keys were stored)."""
    message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
    return BatchKey(envelope.replica, message.batch.batch_sequence)


def _encode_assembled(record: AssembledRecord) -> bytes:
    """batch count (4) | (origin (4) | batch sequence (8) | digest (32))* | envelope ids (32)*;
    a jumped slot (no batches) has the count `JUMPED`."""
    out = [(JUMPED if record.jumped else len(record.batches)).to_bytes(4, "big")]
    for origin, batch_sequence, digest in record.batches:
        out += [origin.to_bytes(4, "big"), batch_sequence.to_bytes(8, "big"), digest]
    return b"".join(out + list(record.envelope_ids))


def _decode_assembled(sequence: int, data: bytes) -> AssembledRecord:
    count = int.from_bytes(data[:4], "big")
    jumped = count == JUMPED
    count = 0 if jumped else count
    batches = []
    offset = 4
    for _ in range(count):
        origin = int.from_bytes(data[offset : offset + 4], "big")
        batch_sequence = int.from_bytes(data[offset + 4 : offset + 12], "big")
        batches.append((origin, batch_sequence, data[offset + 12 : offset + 44]))
        offset += 44
    ids = tuple(data[i : i + 32] for i in range(offset, len(data), 32))
    return AssembledRecord(sequence, tuple(batches), ids, jumped)


def _encode_jump(record: JumpRecord) -> bytes:
    """state digest (32) | checkpoint count (4) | (sequence (8) | digest (32))* | request ids."""
    out = [record.state_digest, len(record.checkpoint_states).to_bytes(4, "big")]
    for sequence, digest in record.checkpoint_states:
        out += [sequence.to_bytes(8, "big"), digest]
    return b"".join(out + list(record.request_ids))


def _decode_jump(sequence: int, data: bytes) -> JumpRecord:
    count = int.from_bytes(data[32:36], "big")
    checkpoints = []
    offset = 36
    for _ in range(count):
        checkpoints.append(
            (int.from_bytes(data[offset : offset + 8], "big"), data[offset + 8 : offset + 40])
        )
        offset += 40
    ids = tuple(data[i : i + 32] for i in range(offset, len(data), 32))
    return JumpRecord(sequence, data[:32], tuple(checkpoints), ids)


# The writer's page cache (KiB; `page_cache.py`). Records are appended at the end of the table
# and most of their bytes are large blobs (a decided batch carries its requests: a notary
# cluster's up to 4 x 96 KiB wraps; an orderer's batches up to `batch_bytes_max`), stored in
# overflow pages that are written once and read again only by a restart, a catch-up or the
# compaction: with the writers' 1 MiB those pages filled the cache for the replica's life. What
# is worth keeping is the tree's interior and right edge, and the two indexes' (a few dozen
# pages): 256 KiB, up to 0.75 MiB less in every PBFT-lite replica and notary-cluster member
# (benchmarks/RESULTS.md 2026-12-05, branch rss60).
RECORDS_CACHE_KIB = 256


class RecordStore:
    """Append-only record log."""

    def __init__(self, file: SqliteFile) -> None:
        self._file = file

    @classmethod
    async def open(
        cls, path: Path, *, synchronous: str = "FULL", retry: RetryPolicy = DEFAULT_RETRY
    ) -> RecordStore:
        """Open (creating if needed); writes are retried on transient faults per `retry`."""
        file = SqliteFile(path, SCHEMA, synchronous=synchronous, retry=retry, name="pbft-store")
        await file.open(lambda conn: bound_cache(conn, RECORDS_CACHE_KIB))
        store = cls(file)
        await store._add_formed_column()
        await store._key_old_batch_rows()
        return store

    async def _add_formed_column(self) -> None:
        """A store made before batch rows carried `formed` gets the column (NULL in old rows);
        every store gets `FORMED_INDEX` here, after the column exists."""

        def write(conn: sqlite3.Connection) -> None:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
            if "formed" not in columns:
                conn.execute("ALTER TABLE records ADD COLUMN formed INTEGER")
            conn.execute(FORMED_INDEX)

        await self._file.write("pbft.formed_column", write)

    async def _key_old_batch_rows(self) -> None:
        """Give batch rows written without their key (sequence 0) their key, once, so that
        `compact` finds them (one transaction; none on a store written by this version)."""

        def write(conn: sqlite3.Connection) -> None:
            rows = conn.execute("SELECT id, data FROM records WHERE kind='batch' AND seq=0")
            keyed = [
                (batch_row_seq(_key_of(Envelope.FromString(bytes(data)))), row_id)
                for row_id, data in rows.fetchall()
            ]
            conn.executemany("UPDATE records SET seq=? WHERE id=?", keyed)

        await self._file.write("pbft.key_batches", write)

    async def load(self) -> list[Record]:
        """Every replica record, in append order (a store without dissemination records: the
        notary cluster's, or an orderer's with dissemination off)."""
        return [
            r for r in await self.load_all() if not isinstance(r, BatchRecord | AssembledRecord)
        ]

    async def load_all(self) -> list[StoredRecord]:
        """Every record, dissemination ones included, in append order."""

        def read(conn: sqlite3.Connection) -> list[StoredRecord]:
            rows = conn.execute("SELECT kind, seq, data, formed FROM records ORDER BY id")
            return [decode(kind, seq, bytes(data), formed) for kind, seq, data, formed in rows]

        return await self._file.read(read)

    async def decided(self, from_sequence: int, count: int) -> list[replica_pb2.DecidedBatch]:
        """The stored decided batches of sequences [from_sequence, from_sequence + count), in
        order (those compaction kept): a replica keeping only the last few in memory answers
        older catch-up requests with them (`core.pbft.DecidedFromStore`)."""

        def read(conn: sqlite3.Connection) -> list[replica_pb2.DecidedBatch]:
            rows = conn.execute(
                "SELECT seq, data FROM records WHERE kind='decided' AND seq>=? AND seq<? "
                "ORDER BY seq, id",
                (from_sequence, from_sequence + count),
            )
            found: dict[int, replica_pb2.DecidedBatch] = {}
            for seq, data in rows:
                found.setdefault(int(seq), replica_pb2.DecidedBatch.FromString(bytes(data)))
            return list(found.values())

        return await self._file.read(read)

    async def batch(self, key: BatchKey, digest: bytes) -> Envelope | None:
        """The stored signed batch `key` with `digest`, or None (compacted, or never stored).
        Answers fetches of batches in the chain (`core.pbft.dissemination.BatchFromStore`);
        an equivocating origin may have two rows under one key, so the digest picks one."""

        def read(conn: sqlite3.Connection) -> Envelope | None:
            rows = conn.execute(
                "SELECT data FROM records WHERE kind='batch' AND seq=? ORDER BY id",
                (batch_row_seq(key),),
            )
            for (data,) in rows:
                envelope = Envelope.FromString(bytes(data))
                message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
                if message.batch.digest == digest:
                    return envelope
            return None

        return await self._file.read(read)

    async def append(self, records: Sequence[StoredRecord]) -> None:
        """Durably append `records` in one transaction."""
        if not records:
            return
        rows = [(*encode(r), r.formed_at if isinstance(r, BatchRecord) else None) for r in records]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO records(kind, seq, data, formed) VALUES (?,?,?,?)", rows)

        await self._file.write("pbft.append", write)

    async def compact(self, stable_seq: int, decided_from: int, expiry: int | None = None) -> None:
        """Delete records a restart no longer needs once `stable_seq` is stable (one txn); the
        same rules as `dltmw.core.pbft.recovery.compact` and
        `dltmw.core.pbft.assembly.compact_assembled`, which the simulator applies (`expiry`:
        the certificate expiry of a channel with dissemination; None: no batch expires)."""

        def write(conn: sqlite3.Connection) -> None:
            old = conn.execute(
                "SELECT seq, data FROM records WHERE kind='assembled' AND seq<?", (decided_from,)
            )
            taken = {
                batch_row_seq(BatchKey(origin, batch_sequence))
                for seq, data in old.fetchall()
                for origin, batch_sequence, _d in _decode_assembled(seq, bytes(data)).batches
            }
            conn.executemany(
                "DELETE FROM records WHERE kind='batch' AND seq=?", [(k,) for k in sorted(taken)]
            )
            if expiry is not None:  # formed + expiry < decided_from, as a range on the index
                conn.execute(EXPIRED_BATCHES, (decided_from - expiry,))
            for sql, args in [
                ("DELETE FROM records WHERE kind IN ('vote','prepared') AND seq<=?", (stable_seq,)),
                ("DELETE FROM records WHERE kind='decided' AND seq<?", (decided_from,)),
                ("DELETE FROM records WHERE kind='assembled' AND seq<?", (decided_from,)),
                (
                    "DELETE FROM records WHERE kind IN ('view','stable') AND id NOT IN "
                    "(SELECT MAX(id) FROM records WHERE kind IN ('view','stable') GROUP BY kind)",
                    (),
                ),
            ]:
                conn.execute(sql, args)

        await self._file.write("pbft.compact", write)

    async def epoch(self) -> int:
        """The replica group (epoch) the records belong to (0 until `reset` named one)."""

        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT epoch FROM epoch WHERE id = 0").fetchone()
            return 0 if row is None else int(row[0])

        return await self._file.read(read)

    async def reset(self, epoch: int) -> None:
        """Discard every record (they belong to an older replica group) and name `epoch` as the
        group of the records appended from now on (one transaction)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM records")
            conn.execute("INSERT OR REPLACE INTO epoch(id, epoch) VALUES (0, ?)", (epoch,))

        await self._file.write("pbft.reset", write)

    async def close(self) -> None:
        """Close the connection."""
        await self._file.close()
