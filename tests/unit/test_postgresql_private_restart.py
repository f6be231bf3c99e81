"""A PostgreSQL private store survives a restart of its database server (fast shutdown drops
every client connection): a block's private transaction is retried on a new connection and
commits once; reads on the store thread (its view, the executor's) and through the store's
methods reconnect. An outage longer than the retry budget is surfaced (StorageUnavailable:
the node stops), never swallowed.
"""

from __future__ import annotations

import asyncio

import pg_server
import pytest

from dltmw.core.rwset import StateWrite, Version
from dltmw.ledger.private_pg import open_pg_private_store
from dltmw.ledger.private_store import PrivateStore, PrivateTxn, PrivateTxRecord
from dltmw.ledger.retry import RetryPolicy, StorageUnavailable

FAST = RetryPolicy(first_s=0.01, max_s=0.2, budget_s=20.0)  # a bound, not a timing
SHORT = RetryPolicy(first_s=0.01, max_s=0.1, budget_s=1.0)


async def _block(store: PrivateStore, number: int) -> None:
    def run(txn: PrivateTxn) -> None:
        txn.apply([StateWrite("kv", f"k{number}", b"v", Version(number, 0))])
        txn.record(number.to_bytes(32, "big"), PrivateTxRecord(f"t{number}", number, 0, 1, b""))
        txn.set_cursor(number + 1)

    await store.transaction(run)


async def test_private_writes_and_reads_reconnect_after_the_server_restarts() -> None:
    with pg_server.running() as server:
        store = await open_pg_private_store(server.dsn, "restart/trades/private", retry=FAST)
        try:
            await _block(store, 1)
            pg_server.restart(server)
            await _block(store, 2)  # the writer's connection was dropped: retried, once
            assert await store.count_status([1]) == 2
            pg_server.restart(server)
            assert await store.cursor() == 3  # a read through the store reconnects
            pg_server.restart(server)
            view = store.view()  # the executor's reads, on the store thread
            got = await asyncio.get_running_loop().run_in_executor(
                store.executor, lambda: view.get("kv", "k2")
            )
            assert got == (b"v", Version(2, 0))
            audit = await store.audit(b"", 10)
            assert audit.stored_state_hash == audit.recomputed_state_hash
            assert [r.tx_id for _, r in audit.txs] == ["t1", "t2"]
        finally:
            await store.close()


async def test_an_outage_longer_than_the_budget_is_surfaced() -> None:
    server = pg_server.start()
    try:
        store = await open_pg_private_store(server.dsn, "outage/trades/private", retry=SHORT)
        await _block(store, 1)
    finally:
        server.stop()  # gone for good (data directory removed)
    try:
        with pytest.raises(StorageUnavailable, match=r"privacy\.execute"):
            await _block(store, 2)
    finally:
        await store.close()
