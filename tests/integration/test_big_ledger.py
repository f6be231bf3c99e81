"""The large-ledger generator and catch-up path (`bench/bigledger.py`, `bench/bigrun.py`), small.

The generator writes real, signed envelopes straight into the orderer's ledger; the real nodes
then start, and the peers catch up by Deliver through their normal commit path. If anything in
the generated envelopes differed from what a client, the gateway and the endorsers make (a
signature, the contract sequence, the policy's endorsers, the tx_id rule), the peers would
flag the transactions invalid: so every one must be VALID on both peers, each key written, and
each peer's blocks the orderer's blocks. The restart check then times a peer and the orderer.
An old block edited in the orderer's file stops the orderer after it started (the open checks
only the tail; the whole chain is checked in the background, `ledger/chain_check.py`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dltmw.bench.bigledger import LedgerPlan, make_ledger, orderer_ledger_path
from dltmw.bench.bigrun import CHANNEL, run_big, run_experiment
from dltmw.bench.topology import NetworkShape, topology_toml
from dltmw.ledger.chain_check import OPEN_CHECK_BLOCKS
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.runtime.process import EXIT_FATAL
from dltmw.v1 import block_pb2

pytestmark = pytest.mark.integration

PLAN = LedgerPlan(blocks=12, txs_per_block=10)
PEERS = ("peer0.org1", "peer0.org2")


def _read(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


def test_generated_ledger_is_caught_up_and_committed_valid_by_real_peers(tmp_path: Path) -> None:
    result = run_big(tmp_path / "big", PLAN, repeats=1, say=lambda _: None)
    net = tmp_path / "big" / "net"
    orderer_hashes = _read(
        orderer_ledger_path(net, "orderer0", CHANNEL), "SELECT number, hash FROM blocks"
    )
    assert len(orderer_hashes) == PLAN.blocks + 1 == result["height"]
    for peer in PEERS:
        path = net / "nodes" / peer / "data" / f"{CHANNEL}.peer.sqlite"
        assert _read(path, "SELECT code, count(*) FROM txs GROUP BY code") == [(1, PLAN.txs + 1)]
        keys = _read(path, "SELECT count(*) FROM state WHERE namespace='kv' AND key LIKE 'k%'")
        assert keys == [(PLAN.txs,)]
        assert _read(path, "SELECT number, hash FROM blocks") == orderer_hashes
        assert result["peak_rss_mib"][peer] > 0
    for node in ("peer0.org1", "orderer0"):
        restarted = result["restarts"][node]
        assert restarted["ledger_height"] == PLAN.blocks + 1
        assert restarted["median_s"] > 0


def test_an_edited_old_block_stops_the_node_after_it_started(tmp_path: Path) -> None:
    # The open checks only the chain's tail; the background check of the whole chain finds an
    # old block edited in the file and is fatal: the node exits EXIT_FATAL (chain_check.py).
    root = tmp_path / "net"
    (tmp_path / "topology.toml").write_text(topology_toml(NetworkShape(), ("kv",)))
    init_network(tmp_path / "topology.toml", root)
    blocks = OPEN_CHECK_BLOCKS + 8
    make_ledger(root, CHANNEL, LedgerPlan(blocks=blocks, txs_per_block=1), workers=1)
    path = orderer_ledger_path(root, "orderer0", CHANNEL)
    conn = sqlite3.connect(path)
    data = conn.execute("SELECT data FROM blocks WHERE number=3").fetchone()[0]
    block = block_pb2.Block.FromString(data)
    block.data.envelopes[0] = block.data.envelopes[0][:-1] + b"!"
    conn.execute("UPDATE blocks SET data=? WHERE number=3", (block.SerializeToString(),))
    conn.commit()
    conn.close()
    sup = Supervisor(root)
    try:
        sup.start("orderer0")
        code = sup.nodes["orderer0"].process.wait(timeout=60)
        assert code == EXIT_FATAL, sup.log_tail("orderer0")
        assert "block 3 data hash" in sup.log_tail("orderer0", 20000)
    finally:
        sup.down()


def test_the_bench_experiment_appends_every_nodes_peak_rss_and_restarts(tmp_path: Path) -> None:
    # `dltmw bench --experiment big-ledger` (make bench-all): the same check, its figures in a
    # RESULTS.md section and a report.json under results/.
    (tmp_path / "RESULTS.md").write_text("# results\n")
    plan = LedgerPlan(blocks=6, txs_per_block=2)
    result = run_experiment(
        plan,
        tmp_path,
        "dltmw bench --experiment big-ledger",
        repeats=1,
        keep=tmp_path / "big",
        say=lambda _: None,
    )
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Large ledger" in text and "dltmw bench --experiment big-ledger" in text
    for node, mib in result["peak_rss_mib"].items():
        assert f"{node} {mib}" in text and mib > 0
    for node in ("peer0.org1", "orderer0"):
        assert f"| {node} | " in text and result["restarts"][node]["ledger_height"] == 7
    (report,) = (tmp_path / "results").glob("*-big-ledger/report.json")
    assert '"blocks": 6' in report.read_text()
