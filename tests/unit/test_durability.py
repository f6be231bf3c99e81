"""Every sqlite file of a node opens with the same durability settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dltmw.ledger.durability import durable_pragmas
from dltmw.ledger.pbft_store import RecordStore
from dltmw.ledger.sqlite import ChannelLedger


@pytest.mark.parametrize("mode", ["FULL", "NORMAL", "EXTRA"])
def test_known_modes_give_wal_and_the_mode(mode: str) -> None:
    assert durable_pragmas(mode) == ("PRAGMA journal_mode=WAL", f"PRAGMA synchronous={mode}")


@pytest.mark.parametrize("mode", ["OFF", "full", "FULL; DROP TABLE blocks", ""])
def test_other_modes_are_refused(mode: str) -> None:
    with pytest.raises(ValueError, match="unsupported synchronous mode"):
        durable_pragmas(mode)


async def test_stores_refuse_a_bad_mode_before_creating_a_file(tmp_path: Path) -> None:
    for opener in (ChannelLedger.open, RecordStore.open):
        path = tmp_path / f"{opener.__qualname__}.sqlite"
        with pytest.raises(ValueError):
            await opener(path, synchronous="OFF")
        assert not path.exists()


async def test_a_store_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = await RecordStore.open(tmp_path / "r.sqlite")
    await store.close()
    with sqlite3.connect(tmp_path / "r.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
