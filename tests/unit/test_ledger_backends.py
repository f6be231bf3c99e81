"""The ledger contract (`ledger/backend.py`) that both backends keep, run on each
(`ledger_backends.py`: a sqlite file, a schema of a real PostgreSQL server).

A block whose transaction fails before COMMIT leaves nothing of itself (a transient fault is
retried whole and commits once); keys — empty, with NUL, beyond the BMP — come back in UTF-8
byte order from range reads (what phantom-read checks compare); a snapshot read sees one
committed state even when a block commits in the middle of it; the orderer queue and the tx
index survive a reopen.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from ledger_backends import LedgerSite

from dltmw.core.block import TxRecord, make_block
from dltmw.core.handlers.base import PendingEnvelope
from dltmw.core.rwset import StateWrite, Version
from dltmw.ledger import failpoints
from dltmw.ledger.backend import Ledger, StateReader

CH = "trades"
ODD_KEYS = ["", "a", "a\x00b", "ab", "b", "z", "é", "\U0010ffff", "k" * 3000]


async def _commit(ledger: Ledger, writes: list[tuple[str, bytes | None]]) -> None:
    number = ledger.height
    block = make_block(CH, number, ledger.last_hash, [f"env{number}".encode()])
    block.metadata.validation_codes.append(1)
    state_writes = [StateWrite("kv", k, v, Version(number, i)) for i, (k, v) in enumerate(writes)]
    await ledger.commit_block(block, [f"tx{number}"], state_writes)


async def test_a_failed_block_leaves_nothing_and_a_transient_fault_commits_once(
    site: LedgerSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = await site.open()
    try:
        await _commit(ledger, [("a", b"1")])
        before = (ledger.height, ledger.last_hash, ledger.state_hash)
        monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse("ledger.commit_block=corrupt"))
        with pytest.raises(Exception, match="malformed"):
            await _commit(ledger, [("a", b"2"), ("b", b"3")])
        monkeypatch.setattr(failpoints, "_ARMED", {})
        assert (ledger.height, ledger.last_hash, ledger.state_hash) == before
        assert await ledger.block(1) is None and await ledger.tx_record("tx1") is None
        assert await ledger.delta_values([("kv", "a"), ("kv", "b")]) == {("kv", "a"): b"1"}
        assert site.table_hash() == ledger.state_hash
        monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse("ledger.commit_block=locked*2"))
        await _commit(ledger, [("a", b"2"), ("b", b"3")])  # retried whole: committed once
        monkeypatch.setattr(failpoints, "_ARMED", {})
        assert ledger.height == 2 and await ledger.tx_record("tx1") == TxRecord(1, 0, 1)
        assert site.audit([], 0, recompute=True).height == 2
    finally:
        await ledger.close()
    ledger = await site.open()  # and the store agrees after a reopen
    try:
        assert ledger.height == 2 and site.table_hash() == ledger.state_hash
        assert await ledger.delta_values([("kv", "b")]) == {("kv", "b"): b"3"}
    finally:
        await ledger.close()


async def test_keys_of_any_text_come_back_in_utf8_byte_order(site: LedgerSite) -> None:
    ledger = await site.open()
    try:
        await _commit(ledger, [(k, k.encode() or b"-") for k in ODD_KEYS])
        in_order = sorted(ODD_KEYS, key=str.encode)
        whole = await ledger.read_snapshot(lambda r: r.range("kv", "", "", 100))
        assert [e.key for e in whole] == in_order
        assert [e.value for e in whole] == [k.encode() or b"-" for k in in_order]
        ranges = await ledger.ranges([("kv", "a", "b"), ("kv", "a\x00", "a\x01"), ("kv", "z", "")])
        assert [k for k, _ in ranges[("kv", "a", "b")]] == ["a", "a\x00b", "ab"]
        assert [k for k, _ in ranges[("kv", "a\x00", "a\x01")]] == ["a\x00b"]
        assert [k for k, _ in ranges[("kv", "z", "")]] == ["z", "é", "\U0010ffff"]
        versions = await ledger.versions(("kv", k) for k in ODD_KEYS)
        assert versions == {("kv", k): Version(0, i) for i, k in enumerate(ODD_KEYS)}
        limited = await ledger.read_snapshot(lambda r: r.range("kv", "a", "", 2))
        assert [e.key for e in limited] == ["a", "a\x00b"]
    finally:
        await ledger.close()


async def test_a_snapshot_sees_one_state_while_a_block_commits(site: LedgerSite) -> None:
    ledger = await site.open()
    first_read, committed = threading.Event(), threading.Event()

    def simulate(reader: StateReader) -> tuple[object, ...]:
        before = (reader.last_block_number(), reader.get("kv", "a"), reader.range("kv", "", "", 9))
        first_read.set()
        if not committed.wait(30):  # a bound, not a timing: the commit below sets it
            raise TimeoutError("the block did not commit")
        after = (reader.last_block_number(), reader.get("kv", "a"), reader.range("kv", "", "", 9))
        return before, after

    try:
        await _commit(ledger, [("a", b"1")])
        reading = asyncio.ensure_future(ledger.read_snapshot(simulate))
        await asyncio.get_running_loop().run_in_executor(None, first_read.wait, 30)
        await _commit(ledger, [("a", b"2"), ("b", b"3")])
        committed.set()
        before, after = await reading
        assert before == after  # not a half, not a whole of the block that committed meanwhile
        assert after[0] == 0 and after[1] == (b"1", Version(0, 0))  # type: ignore[index]
        fresh = await ledger.read_snapshot(lambda r: (r.last_block_number(), r.get("kv", "a")))
        assert fresh == (1, (b"2", Version(1, 0)))
    finally:
        committed.set()
        await ledger.close()


async def test_queue_and_tx_index_survive_a_reopen(site: LedgerSite) -> None:
    ledger = await site.open()
    try:
        assert ledger.created
        await ledger.enqueue([PendingEnvelope(1, b"e1"), PendingEnvelope(2, b"e2")])
        await ledger.enqueue([PendingEnvelope(3, b"e3")])
        await _commit(ledger, [])
        block = make_block(CH, 1, ledger.last_hash, [b"e1", b"e2"])
        await ledger.commit_block(block, ["t1", "", "t1"], consumed_seq=2)  # a duplicate id
    finally:
        await ledger.close()
    ledger = await site.open()
    try:
        assert not ledger.created and ledger.height == 2
        assert await ledger.pending() == [PendingEnvelope(3, b"e3")]
        assert await ledger.tx_records(["t1", "tx0", "nope"]) == [
            TxRecord(1, 0, 0),  # its first occurrence
            TxRecord(0, 0, 1),
            None,
        ]
        assert await ledger.existing_tx_ids(["t1", "", "nope"]) == {"t1"}
        assert [b.header.number for b in await ledger.blocks_before(2, 5)] == [1, 0]
        assert (await ledger.block(1)) == block
    finally:
        await ledger.close()
