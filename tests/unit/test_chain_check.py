"""The stored hash chain: its tail checked at open in O(1) rows, the whole of it in the background
(`ledger/chain_check.py`).

Opening a ledger must not read the whole chain (restart time grew with the ledger): the open
runs a fixed handful of statements and checks at most `OPEN_CHECK_BLOCKS` blocks, whatever the
height. The check is not dropped: an edit of the tail refuses the open, and an edit anywhere
else (or a missing block) is found by `verify_stored_chain`, which the node runs after start.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pytest

from dltmw.core.block import make_block
from dltmw.core.errors import InvariantViolation
from dltmw.ledger import ledger_base
from dltmw.ledger.chain_check import CHECK_CHUNK_BLOCKS, OPEN_CHECK_BLOCKS
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.v1 import block_pb2

CH = "chain"
BLOCKS = 2 * CHECK_CHUNK_BLOCKS + 40  # several background chunks, far more than the tail


async def _made(path: Path, blocks: int = BLOCKS) -> Path:
    ledger = await ChannelLedger.open(path, synchronous="NORMAL")
    for number in range(blocks):
        block = make_block(CH, number, ledger.last_hash, [b"env%d" % number])
        await ledger.commit_block(block, ())
    await ledger.close()
    return path


def _edit(path: Path, number: int) -> None:
    """Change block `number`'s envelope (its stored hash and header stay): a file edit."""
    conn = sqlite3.connect(path)
    data = conn.execute("SELECT data FROM blocks WHERE number=?", (number,)).fetchone()[0]
    block = block_pb2.Block.FromString(data)
    block.data.envelopes[0] = b"forged"
    conn.execute("UPDATE blocks SET data=? WHERE number=?", (block.SerializeToString(), number))
    conn.commit()
    conn.close()


async def test_open_reads_a_fixed_number_of_statements_and_rows_whatever_the_height(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = await _made(tmp_path / "l.sqlite")
    statements: list[str] = []
    checked: list[int] = []
    load = ChannelLedger._check_and_load
    check_rows = ledger_base.check_rows

    def traced(self: ChannelLedger, conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)
        try:
            load(self, conn)
        finally:
            conn.set_trace_callback(None)

    def counted(
        name: str, rows: Iterable[tuple[int, bytes, bytes]], first: int, previous: bytes
    ) -> tuple[int, bytes]:
        def each() -> Iterable[tuple[int, bytes, bytes]]:
            for row in rows:
                checked.append(row[0])
                yield row

        return check_rows(name, each(), first, previous)

    monkeypatch.setattr(ChannelLedger, "_check_and_load", traced)
    monkeypatch.setattr(ledger_base, "check_rows", counted)
    ledger = await ChannelLedger.open(path)
    try:
        assert ledger.height == BLOCKS
        assert checked == list(range(BLOCKS - OPEN_CHECK_BLOCKS, BLOCKS))
        # the tail, its predecessor's hash, the accumulator, and the client identity table
        # (rows bounded by the certificates registered, not by the height)
        assert len(statements) <= 5, statements
        assert not any("ORDER BY number" in s and "number>=" not in s for s in statements)
    finally:
        await ledger.close()


async def test_an_edit_in_the_tail_refuses_the_open(tmp_path: Path) -> None:
    path = await _made(tmp_path / "l.sqlite")
    _edit(path, BLOCKS - 3)
    with pytest.raises(InvariantViolation, match="data hash"):
        await ChannelLedger.open(path)


@pytest.mark.parametrize("number", [0, 5, CHECK_CHUNK_BLOCKS, BLOCKS - OPEN_CHECK_BLOCKS - 1])
async def test_an_old_edit_is_found_by_the_background_check(tmp_path: Path, number: int) -> None:
    path = await _made(tmp_path / "l.sqlite")
    _edit(path, number)
    ledger = await ChannelLedger.open(path)  # the tail is intact
    try:
        with pytest.raises(InvariantViolation, match=f"block {number} data hash"):
            await ledger.verify_stored_chain()
    finally:
        await ledger.close()


async def test_a_missing_old_block_is_found_by_the_background_check(tmp_path: Path) -> None:
    path = await _made(tmp_path / "l.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM blocks WHERE number=?", (CHECK_CHUNK_BLOCKS + 3,))
    conn.commit()
    conn.close()
    ledger = await ChannelLedger.open(path)
    try:
        with pytest.raises(InvariantViolation, match="hash chain broken"):
            await ledger.verify_stored_chain()
    finally:
        await ledger.close()


async def test_an_intact_chain_passes_both_checks_small_and_large(tmp_path: Path) -> None:
    for blocks in (1, OPEN_CHECK_BLOCKS - 1, BLOCKS):
        path = await _made(tmp_path / f"l{blocks}.sqlite", blocks)
        ledger = await ChannelLedger.open(path)
        try:
            assert ledger.height == blocks
            await ledger.verify_stored_chain()
        finally:
            await ledger.close()
