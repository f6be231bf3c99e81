"""Multi-row INSERTs (`ledger/row_batches.py`) leave exactly the rows `executemany` leaves, and
a block's commit on the sqlite ledger runs a few statements, not one per row; the tx index read
of many ids (`tx_records_found`, padded IN lists) answers as a point read per id, in a few
statements.

The property compares the two on random rows with repeated keys under each conflict clause the
ledger uses (OR IGNORE keeps the first, OR REPLACE the last, plain INSERT refuses a repeat
whole). The ledger test commits random blocks (repeated tx_ids, deletes, rewrites) and checks
the tables and the query answers against a model, before and after a reopen.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.core.block import TxRecord, make_block
from dltmw.core.rwset import StateWrite, Version
from dltmw.ledger.ledger_base import commit_reader
from dltmw.ledger.row_batches import CHUNK_ROWS_MAX, chunk_sizes, in_lists, insert_rows
from dltmw.ledger.sqlite import ChannelLedger

TABLE = "CREATE TABLE t (k TEXT PRIMARY KEY, a INTEGER, b BLOB) WITHOUT ROWID"
rows_strategy = st.lists(
    st.tuples(st.sampled_from("abcdefghij"), st.integers(0, 9), st.binary(max_size=3)),
    max_size=3 * CHUNK_ROWS_MAX + 5,
)


def _table(rows: list[tuple[str, int, bytes]], head: str, many: bool) -> object:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(TABLE)
    try:
        if many:
            conn.executemany(f"{head} VALUES (?,?,?)", rows)
        else:
            insert_rows(conn, head, rows)
    except sqlite3.IntegrityError:
        return "refused"
    return conn.execute("SELECT k, a, b FROM t ORDER BY k").fetchall()


@pytest.mark.parametrize("count", [0, 1, 2, 3, 40, 63, 64, 65, 100, 129, 1000])
def test_chunks_add_up_to_the_rows_each_a_power_of_two_at_most_the_max(count: int) -> None:
    sizes = chunk_sizes(count)
    assert sum(sizes) == count
    assert all(s & (s - 1) == 0 and 0 < s <= CHUNK_ROWS_MAX for s in sizes)


@pytest.mark.parametrize(
    ("count", "sizes"),
    [
        (0, []),
        (1, [1]),
        (3, [4]),
        (8, [8]),
        (9, [16]),
        (15, [16]),
        (37, [40]),
        (64, [64]),
        (65, [64, 1]),
        (130, [64, 64, 2]),
        (200, [64, 64, 64, 8]),
    ],
)
def test_in_lists_hold_each_value_once_padded_by_its_last(count: int, sizes: list[int]) -> None:
    """A read's IN lists: every value, in order, one list per `CHUNK_ROWS_MAX`, each padded
    only with its own last value to a power of two up to 8 or a multiple of 8 above (a
    padded value repeats one asked, so the answers cannot change)."""
    values = [f"v{i}" for i in range(count)]
    lists = in_lists(values)
    assert [len(x) for x in lists] == sizes
    unpadded = [x[: min(CHUNK_ROWS_MAX, count - i * CHUNK_ROWS_MAX)] for i, x in enumerate(lists)]
    assert [v for x in unpadded for v in x] == values
    assert all(set(x[len(u) :]) <= {u[-1]} for x, u in zip(lists, unpadded, strict=True))


@settings(max_examples=150, deadline=None)
@given(rows=rows_strategy, head=st.sampled_from(["INSERT OR IGNORE", "INSERT OR REPLACE"]))
def test_multi_row_inserts_leave_the_rows_executemany_leaves(
    rows: list[tuple[str, int, bytes]], head: str
) -> None:
    head = f"{head} INTO t"
    assert _table(rows, head, many=False) == _table(rows, head, many=True)


@settings(max_examples=50, deadline=None)
@given(rows=rows_strategy)
def test_a_repeated_key_under_plain_insert_is_refused_as_by_executemany(
    rows: list[tuple[str, int, bytes]],
) -> None:
    assert _table(rows, "INSERT INTO t", many=False) == _table(rows, "INSERT INTO t", many=True)


blocks_strategy = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["t1", "t2", "t3", "t4", ""]),  # "" = unauthenticated, not indexed
            st.sampled_from(["a", "b", "c", "é", "k" * 300]),
            st.one_of(st.none(), st.binary(max_size=4)),  # None = delete
        ),
        min_size=1,
        max_size=80,
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=40, deadline=None)
@given(blocks=blocks_strategy)
def test_committed_blocks_read_back_as_the_model_says_before_and_after_a_reopen(
    tmp_path_factory: pytest.TempPathFactory, blocks: list[list[tuple[str, str, bytes | None]]]
) -> None:
    path = tmp_path_factory.mktemp("rows") / "ledger.sqlite"
    txs: dict[str, TxRecord] = {}
    state: dict[str, tuple[bytes, Version]] = {}
    for number, block_txs in enumerate(blocks):
        for index, (tx_id, key, value) in enumerate(block_txs):
            if tx_id:
                txs.setdefault(tx_id, TxRecord(number, index, 1))
            if value is None:
                state.pop(key, None)
            else:
                state[key] = (value, Version(number, index))

    async def commit_all() -> None:
        ledger = await ChannelLedger.open(path)
        try:
            for number, block_txs in enumerate(blocks):
                envelopes = [f"env{number}.{i}".encode() for i in range(len(block_txs))]
                block = make_block("ch", number, ledger.last_hash, envelopes)
                block.metadata.validation_codes.extend([1] * len(block_txs))
                writes = [
                    StateWrite("kv", key, value, Version(number, i))
                    for i, (_, key, value) in enumerate(block_txs)
                ]
                await ledger.commit_block(block, [t for t, _, _ in block_txs], writes)
            await check(ledger)
        finally:
            await ledger.close()

    async def check(ledger: ChannelLedger) -> None:
        ids = ["t1", "t2", "t3", "t4", "t5"]
        assert await ledger.tx_records(ids) == [txs.get(t) for t in ids]
        got = await ledger.read_snapshot(lambda r: r.range("kv", "", "", 1000))
        assert {e.key: (e.value, e.version) for e in got} == state
        assert [e.key.encode() for e in got] == sorted(k.encode() for k in state)

    async def reopen() -> None:
        ledger = await ChannelLedger.open(path)
        try:
            assert ledger.height == len(blocks)
            await check(ledger)
        finally:
            await ledger.close()

    asyncio.run(commit_all())
    asyncio.run(reopen())


async def test_a_block_of_40_transactions_commits_in_a_few_statements(tmp_path: Path) -> None:
    """The count the change is for: rows by multi-row INSERTs, not a statement per row."""
    ledger = await ChannelLedger.open(tmp_path / "ledger.sqlite")
    try:
        statements: list[str] = []
        ledger._file.connection.set_trace_callback(statements.append)
        block = make_block("ch", 0, ledger.last_hash, [b"e%d" % i for i in range(40)])
        block.metadata.validation_codes.extend([1] * 40)
        writes = [StateWrite("kv", f"k{i}", b"v", Version(0, i)) for i in range(40)]
        await ledger.commit_block(block, [f"t{i}" for i in range(40)], writes)
        ledger._file.connection.set_trace_callback(None)
        assert len(statements) <= 12, statements  # executemany: 80 row statements + 7
        assert await ledger.tx_record("t39") == TxRecord(0, 39, 1)
    finally:
        await ledger.close()


@settings(max_examples=40, deadline=None)
@given(asked=st.lists(st.sampled_from([f"t{i}" for i in range(150)] + ["", "x"]), max_size=200))
def test_tx_records_found_equal_a_point_read_per_id(
    tmp_path_factory: pytest.TempPathFactory, asked: list[str]
) -> None:
    """The batched tx index read (chunks of `IN (...)`) answers as `tx_record` per id does,
    for more ids than one chunk holds, repeated and unknown ones."""
    path = tmp_path_factory.mktemp("ids") / "ledger.sqlite"

    async def run() -> None:
        ledger = await ChannelLedger.open(path)
        try:
            for number in range(3):
                ids = [f"t{i}" for i in range(number * 50, number * 50 + 40)]
                block = make_block("ch", number, ledger.last_hash, [i.encode() for i in ids])
                block.metadata.validation_codes.extend([1] * len(ids))
                await ledger.commit_block(block, ids)
            found = await ledger.read_snapshot(lambda r: r.tx_records_found(asked))
            single = await ledger.read_snapshot(lambda r: {t: r.tx_record(t) for t in asked})
            assert found == {t: rec for t, rec in single.items() if rec is not None}
            assert await ledger.tx_records(asked) == [single[t] for t in asked]
        finally:
            await ledger.close()

    asyncio.run(run())


async def test_a_commits_reads_of_40_tx_ids_are_a_few_statements(tmp_path: Path) -> None:
    """The count the batched read is for: a block's tx ids by one chunked `IN`, not per id."""
    ledger = await ChannelLedger.open(tmp_path / "ledger.sqlite")
    try:
        ids = [f"t{i}" for i in range(40)]
        block = make_block("ch", 0, ledger.last_hash, [i.encode() for i in ids])
        block.metadata.validation_codes.extend([1] * 40)
        await ledger.commit_block(block, ids[:20])
        statements: list[str] = []

        def traced(reader: object) -> object:
            conn = reader._conn  # type: ignore[attr-defined]
            conn.set_trace_callback(statements.append)
            try:
                return read(reader)  # type: ignore[arg-type]
            finally:
                conn.set_trace_callback(None)

        _, read = commit_reader([], [], ids)
        _, _, known = await ledger.read_snapshot(traced)  # type: ignore[misc]
        assert known == set(ids[:20])
        assert len(statements) <= 2, statements  # a point read per id: 40
    finally:
        await ledger.close()
