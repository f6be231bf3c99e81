"""kill -9 a peer under load, restart it: it catches up, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.v1 import block_pb2, common_pb2, proposal_pb2, transaction_pb2

pytestmark = pytest.mark.integration
TXS = 300
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


def _db(net: Path, node: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{net}/nodes/{node}/data/trades.peer.sqlite?mode=ro", uri=True)


def _height(net: Path, node: str) -> int:
    db = _db(net, node)
    try:
        return int(db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0])
    finally:
        db.close()


def _replay(db: sqlite3.Connection) -> dict[tuple[str, str], bytes]:
    """World state recomputed from the stored blocks and their validation codes."""
    state: dict[tuple[str, str], bytes] = {}
    for (data,) in db.execute("SELECT data FROM blocks WHERE number > 0 ORDER BY number"):
        block = block_pb2.Block.FromString(data)
        for env_bytes, code in zip(
            block.data.envelopes, block.metadata.validation_codes, strict=True
        ):
            if code != VALID:
                continue
            payload = common_pb2.Payload.FromString(
                common_pb2.Envelope.FromString(env_bytes).payload
            )
            tx = transaction_pb2.Transaction.FromString(payload.data)
            rw = proposal_pb2.ProposalResponsePayload.FromString(tx.response_payload).rwset
            for w in rw.writes:
                if w.is_delete:
                    state.pop((rw.namespace, w.key), None)
                else:
                    state[(rw.namespace, w.key)] = w.value
    return state


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
            occurrences: dict[str, int] = {}
            for (data,) in db.execute("SELECT data FROM blocks WHERE number > 0"):
                for env in block_pb2.Block.FromString(data).data.envelopes:
                    payload = common_pb2.Payload.FromString(
                        common_pb2.Envelope.FromString(env).payload
                    )
                    tx_id = common_pb2.Header.FromString(payload.header).tx_id
                    occurrences[tx_id] = occurrences.get(tx_id, 0) + 1
            assert all(occurrences[t] == 1 for t in committed), f"{node} holds a tx twice"
            stored = {
                (ns, k): bytes(v)
                for ns, k, v in db.execute("SELECT namespace, key, value FROM state")
            }
            assert stored == _replay(db), f"{node} state differs from a replay of its blocks"
        finally:
            db.close()
