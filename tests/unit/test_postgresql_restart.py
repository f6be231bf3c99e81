"""A PostgreSQL peer ledger survives a restart of its database server (a server of its own here,
restarted with fast shutdown, which drops every client connection): the next block's write is
retried on a new connection and commits once, and the next snapshot read reconnects too.
"""

from __future__ import annotations

import pg_server

from dltmw.core.block import make_block
from dltmw.core.rwset import StateWrite, Version
from dltmw.ledger.backend import Ledger
from dltmw.ledger.postgresql import PgChannelLedger
from dltmw.ledger.retry import RetryPolicy

FAST = RetryPolicy(first_s=0.01, max_s=0.2, budget_s=20.0)  # a bound, not a timing


async def _commit(ledger: Ledger, key: str) -> None:
    number = ledger.height
    block = make_block("trades", number, ledger.last_hash, [f"env{number}".encode()])
    write = StateWrite("kv", key, f"v{number}".encode(), Version(number, 0))
    await ledger.commit_block(block, [f"tx{number}"], [write])


async def test_writes_and_reads_reconnect_after_the_server_restarts() -> None:
    with pg_server.running() as server:
        ledger = await PgChannelLedger.open(server.dsn, "restart/trades/peer", retry=FAST)
        try:
            await _commit(ledger, "a")
            assert await ledger.versions([("kv", "a")]) == {("kv", "a"): Version(0, 0)}
            pg_server.restart(server)
            await _commit(ledger, "b")  # the writer's connection was dropped: retried, once
            assert await ledger.existing_tx_ids(["tx0", "tx1"]) == {"tx0", "tx1"}
            pg_server.restart(server)
            got = await ledger.read_snapshot(lambda r: (r.last_block_number(), r.get("kv", "b")))
            assert got == (1, (b"v1", Version(1, 0)))  # the reader's too: read again
        finally:
            await ledger.close()
        reopened = await PgChannelLedger.open(server.dsn, "restart/trades/peer")
        try:
            assert reopened.height == 2 and reopened.state_hash == ledger.state_hash
        finally:
            await reopened.close()
