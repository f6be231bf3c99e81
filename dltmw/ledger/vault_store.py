"""A vault node's transactions and states on sqlite (one file per node, WAL, synchronous=FULL).

Tables: `transactions` holds every verified, notarised transaction the node knows — the ones it
is a party to (relevant = 1) and the backchain it resolved to verify them (relevant = 0), so it
can verify and serve them later; `states` holds the output states it records (those it
participates in, or every output of a transaction it observes) with the tx_id that consumed them;
`state_parties` indexes participants for queries; `outbox` lists the nodes a final transaction
this node initiated must still be delivered to (written with the transaction, deleted once the
recipient acknowledged, `runtime/roles/vault/outbox.py`); `spent` lists every input of every
recorded transaction, so a state recorded AFTER the transaction that consumed it (a recovery or a
standby replicating out of order) is born consumed. Recording a transaction — the transaction,
its new states and the consumption of its inputs — is ONE sqlite transaction, and recording the
same transaction again changes nothing.

All sqlite work runs on the store's own thread (`sqlite_file.SqliteFile`); the async methods
await it once per call. Encryption at rest (`at_rest.py`, `values`): each `stx` and `output` is
sealed into SQL with its tx id or state ref as associated data, and opened out of it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import DecodeError

from dltmw.core.utxo.model import Output, Ref, output_message, output_of
from dltmw.core.utxo.verify import SignedTx, read_signed
from dltmw.ledger.at_rest import PLAIN, ValueCodec
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.ledger.sqlite_file import SqliteFile
from dltmw.v1 import utxo_pb2

T = TypeVar("T")
SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    tx_id TEXT PRIMARY KEY, stx BLOB NOT NULL, relevant INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS states (
    ref BLOB PRIMARY KEY, tx_id TEXT NOT NULL, idx INTEGER NOT NULL, contract TEXT NOT NULL,
    owner BLOB NOT NULL, output BLOB NOT NULL, consumed_by TEXT NOT NULL DEFAULT '')
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS states_contract ON states(contract, consumed_by);
CREATE INDEX IF NOT EXISTS states_owner ON states(owner, consumed_by);
CREATE TABLE IF NOT EXISTS state_parties (
    party BLOB NOT NULL, ref BLOB NOT NULL, PRIMARY KEY (party, ref)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spent (ref BLOB PRIMARY KEY, tx_id TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    tx_id TEXT NOT NULL, node TEXT NOT NULL, observer INTEGER NOT NULL,
    PRIMARY KEY (tx_id, node)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Delivery:
    """One outbox row: a final transaction `node` has not acknowledged yet."""

    tx_id: str
    node: str
    observer: bool
    stx: bytes


@dataclass(frozen=True)
class VaultRow:
    """One recorded state."""

    ref: Ref
    output: Output
    output_bytes: bytes
    consumed_by: str


def owner_of(output: Output) -> bytes:
    """The owner field of a cash or security state (b"" for other contracts or bad data)."""
    try:
        if output.contract == "cash":
            return utxo_pb2.CashState.FromString(output.data).owner
        if output.contract == "security":
            return utxo_pb2.SecurityState.FromString(output.data).owner
    except DecodeError:  # a malformed state cannot be owned by anyone
        pass
    return b""


def output_bytes(output: Output) -> bytes:
    """Serialised UtxoOutput of an Output."""
    return output_message(output).SerializeToString()


class VaultStore:
    """Transactions and states of one vault node."""

    def __init__(
        self,
        path: Path,
        synchronous: str = "FULL",
        retry: RetryPolicy = DEFAULT_RETRY,
        values: ValueCodec = PLAIN,
    ) -> None:
        # ValueError for an unknown mode, before touching the file
        self._file = SqliteFile(path, SCHEMA, synchronous=synchronous, retry=retry, name="vault")
        self.path = path
        self._values = values

    def _stx(self, tx_id: str, stored: bytes) -> bytes:
        return self._values.open("transactions", tx_id.encode(), bytes(stored))

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.read(fn)

    async def _write(self, name: str, body: Callable[[sqlite3.Connection], None]) -> None:
        """`body` as one write transaction (retried whole on transient faults)."""
        await self._file.write(name, body)

    async def open(self) -> None:
        """Open (creating if needed)."""
        await self._file.open()

    async def close(self) -> None:
        """Close (idempotent)."""
        await self._file.close()

    async def transactions(self, tx_ids: Iterable[str]) -> dict[str, bytes]:
        """Stored transactions among `tx_ids` (serialised SignedUtxoTransaction)."""
        wanted = sorted(set(tx_ids))

        def fetch(conn: sqlite3.Connection) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT tx_id, stx FROM transactions WHERE tx_id IN ({marks})"
                out.update((t, self._stx(t, s)) for t, s in conn.execute(sql, chunk))
            return out

        return await self._call(fetch) if wanted else {}

    async def ancestors(self, tx_ids: Iterable[str], limit: int) -> set[str]:
        """Stored transactions that `tx_ids` depend on, transitively (at most `limit`)."""

        def walk(conn: sqlite3.Connection) -> set[str]:
            seen: set[str] = set()
            todo = list(tx_ids)
            while todo and len(seen) < limit:
                tx_id = todo.pop()
                row = conn.execute(
                    "SELECT stx FROM transactions WHERE tx_id=?", (tx_id,)
                ).fetchone()
                if row is None:
                    continue
                wire = read_signed(self._stx(tx_id, row[0])).wire
                for ref in (*wire.inputs, *wire.references):
                    if ref.tx_id not in seen:
                        seen.add(ref.tx_id)
                        todo.append(ref.tx_id)
            return seen

        return await self._call(walk)

    async def store_dependencies(self, stxs: Sequence[SignedTx]) -> None:
        """Keep verified backchain transactions (no states are recorded for them)."""
        seal = self._values.seal
        rows = [(s.wire.tx_id, seal("transactions", s.wire.tx_id.encode(), s.raw)) for s in stxs]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO transactions(tx_id, stx, relevant) VALUES (?,?,0)", rows
            )

        if rows:
            await self._write("vault.dependencies", write)

    async def record(
        self,
        stx: SignedTx,
        outputs: Sequence[int],
        deliveries: Sequence[tuple[str, bool]] = (),
    ) -> None:
        """Record a notarised transaction: itself, outputs at `outputs` as states, the
        consumption of any of its inputs this vault holds, and an outbox row per (node,
        observer) in `deliveries`; one sqlite transaction, so a final transaction is never
        recorded without the duty to deliver it."""
        wire = stx.wire
        states: list[tuple[bytes, str, int, str, bytes, bytes, bytes]] = []
        parties: list[tuple[bytes, bytes]] = []
        for i in outputs:
            out = wire.outputs[i]
            key = wire.out_ref(i).key
            sealed = self._values.seal("states", key, output_bytes(out))
            states.append((key, wire.tx_id, i, out.contract, owner_of(out), sealed, key))
            parties.extend((p, key) for p in set(out.participants))
        spent = [(wire.tx_id, r.key) for r in wire.inputs]
        raw = self._values.seal("transactions", wire.tx_id.encode(), stx.raw)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO transactions(tx_id, stx, relevant) VALUES (?,?,1) "
                "ON CONFLICT(tx_id) DO UPDATE SET relevant=1",
                (wire.tx_id, raw),
            )
            conn.executemany("INSERT OR IGNORE INTO spent VALUES (?,?)", [(k, t) for t, k in spent])
            conn.executemany(
                "INSERT OR IGNORE INTO states(ref, tx_id, idx, contract, owner, output, "
                "consumed_by) VALUES (?,?,?,?,?,?, "
                "COALESCE((SELECT tx_id FROM spent WHERE ref = ?), ''))",
                states,
            )
            conn.executemany("INSERT OR IGNORE INTO state_parties VALUES (?,?)", parties)
            conn.executemany("UPDATE states SET consumed_by=? WHERE ref=?", spent)
            conn.executemany(
                "INSERT OR IGNORE INTO outbox(tx_id, node, observer) VALUES (?,?,?)",
                [(wire.tx_id, node, int(obs)) for node, obs in deliveries],
            )

        await self._write("vault.record", write)

    async def outbox(self, limit: int, after: tuple[str, str] = ("", "")) -> list[Delivery]:
        """Pending deliveries in (tx_id, node) order after `after` (at most `limit`): a caller
        pages through all of them, so undeliverable rows cannot hide the others."""

        def run(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(
                "SELECT o.tx_id, o.node, o.observer, t.stx FROM outbox o "
                "JOIN transactions t ON t.tx_id = o.tx_id WHERE (o.tx_id, o.node) > (?, ?) "
                "ORDER BY o.tx_id, o.node LIMIT ?",
                (*after, limit),
            ).fetchall()
            return [Delivery(t, n, bool(o), self._stx(t, s)) for t, n, o, s in rows]

        return await self._call(run)

    async def relevant(self, after: str, limit: int) -> list[tuple[str, bytes]]:
        """Transactions this node is a party to or observed (not mere backchain), in tx_id
        order after `after`, at most `limit` (vault recovery pages through them)."""

        def run(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = conn.execute(
                "SELECT tx_id, stx FROM transactions WHERE relevant = 1 AND tx_id > ? "
                "ORDER BY tx_id LIMIT ?",
                (after, limit),
            ).fetchall()
            return [(t, self._stx(t, s)) for t, s in rows]

        return await self._call(run)

    async def relevant_among(self, tx_ids: Iterable[str]) -> set[str]:
        """Those of `tx_ids` recorded as transactions this node is a party to or observed."""
        wanted = sorted(set(tx_ids))

        def run(conn: sqlite3.Connection) -> set[str]:
            out: set[str] = set()
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT tx_id FROM transactions WHERE relevant = 1 AND tx_id IN ({marks})"
                out.update(t for (t,) in conn.execute(sql, chunk))
            return out

        return await self._call(run) if wanted else set()

    async def delivered(self, tx_id: str, node: str) -> None:
        """`node` acknowledged `tx_id`: drop its outbox row (idempotent)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM outbox WHERE tx_id=? AND node=?", (tx_id, node))

        await self._write("outbox.write", write)

    async def query(
        self,
        contract: str = "",
        owner: bytes = b"",
        participant: bytes = b"",
        include_consumed: bool = False,
        limit: int = 10_000,
    ) -> list[VaultRow]:
        """States matching every non-empty filter, in (tx_id, index) order."""
        sql = "SELECT s.ref, s.output, s.consumed_by FROM states s"
        where: list[str] = []
        args: list[object] = []
        if participant:
            sql += " JOIN state_parties p ON p.ref = s.ref"
            where.append("p.party = ?")
            args.append(participant)
        for column, value in (("s.contract", contract), ("s.owner", owner)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if not include_consumed:
            where.append("s.consumed_by = ''")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.tx_id, s.idx LIMIT ?"
        args.append(limit)

        def run(conn: sqlite3.Connection) -> list[VaultRow]:
            rows = conn.execute(sql, args).fetchall()
            opened = self._values.open
            return [_row(bytes(r), opened("states", bytes(r), bytes(o)), c) for r, o, c in rows]

        return await self._call(run)


def _row(ref: bytes, raw: bytes, consumed_by: str) -> VaultRow:
    output = output_of(utxo_pb2.UtxoOutput.FromString(raw))
    return VaultRow(Ref.from_key(ref), output, raw, consumed_by)
