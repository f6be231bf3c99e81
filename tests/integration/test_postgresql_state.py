"""`state = "postgresql"` on real node processes: one peer keeps its channel ledger in a real
PostgreSQL server (`tests/pg_server.py`), the other in sqlite, on the same channel.

After a small load of kv and bank transactions through both gateways, both peers hold the same
chain (block bytes and validation codes) and the same world state (`dltmw audit`'s stored and
recomputed state hashes agree, no finding); the PostgreSQL peer wrote no sqlite ledger. Stopped
and started again, the PostgreSQL peer resumes at its height and keeps agreeing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pg_server
import psycopg
import pytest
from psycopg import sql

from dltmw.client import GatewayClient
from dltmw.client.audit import ChannelReport
from dltmw.ops.supervisor import Supervisor
from dltmw.runtime.config import peer_schema
from dltmw.v1 import block_pb2, transaction_pb2

from .conftest import TWO_ORG
from .figure8 import open_accounts
from .ledgers import blocks, ledger_path
from .test_audit import _settled
from .wire import edit_node_toml, started_network

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CH = "trades"
PG_PEER, SQLITE_PEER = "peer0.org1", "peer0.org2"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor, str]]:
    starting = ThreadPoolExecutor(1).submit(pg_server.start)  # beside `dltmw init`'s work
    server: pg_server.PgServer | None = None

    def on_postgresql(net: Path) -> None:
        nonlocal server
        server = starting.result()
        ledger = {"state": "postgresql", "postgresql_dsn": server.dsn}
        edit_node_toml(net, PG_PEER, {"ledger": ledger})

    try:
        topology = TWO_ORG.replace("BATCH_MS", "50")
        with started_network(tmp_path_factory.mktemp("pg"), topology, on_postgresql) as (p, s):
            assert server is not None
            yield p, s, server.dsn
    finally:
        starting.result().stop()


def _pg_blocks(dsn: str) -> list[block_pb2.Block]:
    with psycopg.connect(dsn) as conn:
        schema = sql.Identifier(peer_schema(PG_PEER, CH))
        rows = conn.execute(
            sql.SQL("SELECT data FROM {}.blocks ORDER BY number").format(schema)
        ).fetchall()
    return [block_pb2.Block.FromString(r[0]) for r in rows]


async def _load(net: Path, rounds: int, accounts: bool = False) -> None:
    """kv puts through both gateways, concurrently, then (once) the bank's accounts."""
    gateways = [await GatewayClient.connect(net, f"user1.org{i}") for i in (1, 2)]
    try:

        async def put(i: int) -> None:
            done = await gateways[i % 2].submit_transaction(CH, "kv", "put", f"k{i % 9}", f"v{i}")
            assert done.status.result == VALID

        await asyncio.gather(*(put(i) for i in range(rounds)))
        if accounts:
            await open_accounts(gateways[0])
    finally:
        for c in gateways:
            await c.close()


async def _agreeing(net: Path) -> ChannelReport:
    """Audit until both peers are at one height (bounded), then require agreement."""
    report = await _settled(net)
    assert report.findings == [] and report.unreachable == {}, report
    peers = [v for v in report.views if v.has_state]
    assert {v.node_id for v in peers} == {PG_PEER, SQLITE_PEER}
    assert len({v.stored_state_hash for v in peers}) == 1
    return report


async def test_a_postgresql_peer_and_a_sqlite_peer_hold_the_same_chain_and_state(
    net: tuple[Path, Supervisor, str],
) -> None:
    path, _, dsn = net
    await _load(path, 30, accounts=True)
    report = await _agreeing(path)
    assert report.common_height > 2
    on_sqlite = blocks(ledger_path(path, SQLITE_PEER))
    on_pg = await asyncio.to_thread(_pg_blocks, dsn)
    assert len(on_pg) == len(on_sqlite) == report.common_height
    assert on_pg == on_sqlite  # the same blocks, with the same validation codes
    assert sum(list(b.metadata.validation_codes).count(VALID) for b in on_pg) >= 30
    assert not ledger_path(path, PG_PEER).exists(), "the PostgreSQL peer wrote a sqlite ledger"


async def test_the_postgresql_peer_resumes_at_its_height_after_a_restart(
    net: tuple[Path, Supervisor, str],
) -> None:
    path, sup, dsn = net
    before = len(await asyncio.to_thread(_pg_blocks, dsn))
    assert sup.stop(PG_PEER) == 0
    sup.start(PG_PEER)
    await asyncio.to_thread(sup.wait_ready, PG_PEER, 60)
    await _load(path, 10)
    await _agreeing(path)
    on_pg = await asyncio.to_thread(_pg_blocks, dsn)
    assert len(on_pg) > before
    assert on_pg == blocks(ledger_path(path, SQLITE_PEER))
