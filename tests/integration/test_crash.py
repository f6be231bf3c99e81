"""kill -9 a peer under load, restart it: it catches up, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.v1 import transaction_pb2

from .ledgers import blocks, height, ledger_path, read_only, replay_state, tx_codes

pytestmark = pytest.mark.integration
TXS = 300
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


def _db(net: Path, node: str) -> sqlite3.Connection:
    return read_only(ledger_path(net, node))


def _height(net: Path, node: str) -> int:
    return height(ledger_path(net, node))


async def test_kill9_peer_under_load_then_catch_up(network) -> None:
    net, sup = network(batch_ms=50)
    c = await GatewayClient.connect(net, "user1.org1")
    committed: list[str] = []
    sem = asyncio.Semaphore(8)

    async def put(i: int) -> None:
        async with sem:
            try:
                done = await c.submit_transaction("trades", "kv", "put", f"k{i % 50}", f"v{i}")
            except Exception:  # endorsement or submit may fail while the peer is down
                return
            if done.status.result == VALID:
                committed.append(done.tx_id)

    try:
        load = asyncio.gather(*(put(i) for i in range(TXS)))
        deadline = time.monotonic() + 60
        while len(committed) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        sup.kill("peer0.org2")
        killed_at = len(committed)
        await load
        assert len(committed) > killed_at, "commits continued while the peer was down"
        sup.start("peer0.org2")
        sup.wait_ready("peer0.org2")
        deadline = time.monotonic() + 60
        while _height(net, "peer0.org2") < _height(net, "peer0.org1"):
            assert time.monotonic() < deadline, "restarted peer did not catch up"
            await asyncio.sleep(0.1)
    finally:
        await c.close()
    sup.stop("peer0.org1")
    sup.stop("peer0.org2")
    for node in ("peer0.org1", "peer0.org2"):
        db = _db(net, node)
        try:
            rows = dict(db.execute("SELECT tx_id, code FROM txs").fetchall())
            for tx_id in committed:
                assert rows.get(tx_id) == VALID, f"{node} lost {tx_id}"
            chain = blocks(ledger_path(net, node))
            occurrences = tx_codes(chain)
            assert all(len(occurrences[t]) == 1 for t in committed), f"{node} holds a tx twice"
            stored = {
                (ns, k): bytes(v)
                for ns, k, v in db.execute("SELECT namespace, key, value FROM state")
            }
            replayed = {ref: value for ref, (value, _) in replay_state(chain).items()}
            assert stored == replayed, f"{node} state differs from a replay of its blocks"
        finally:
            db.close()
