"""Smoke run of the benchmark harness: `dltmw bench` end to end, checked for completeness and
consistency — not for speed (benchmarks are not timed tests).

A short bank run with a skewed account choice, so the report has valid AND invalid transactions
to account for. The report must add up (submitted = valid + invalid by code + failed by reason),
and the peers' ledgers, read independently here after the run, must hold exactly the genesis,
the setup and the committed transactions, with as many VALID ones as the report claims.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TXS = 150
PEERS = ("peer0.org1", "peer0.org2")


def _ledger_counts(net: Path, peer: str) -> tuple[int, int]:
    """(VALID rows, other rows) in a peer's tx index of channel bench0."""
    path = net / "nodes" / peer / "data" / "bench0.peer.sqlite"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        valid = conn.execute("SELECT count(*) FROM txs WHERE code = 1").fetchone()[0]
        other = conn.execute("SELECT count(*) FROM txs WHERE code != 1").fetchone()[0]
    finally:
        conn.close()
    return int(valid), int(other)


def test_bench_smoke_report_is_complete_and_consistent(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "RESULTS.md").write_text("# Benchmark results\n\nhistory stays.\n")
    keep = tmp_path / "net"
    dltmw = Path(sys.executable).parent / "dltmw"
    command = [
        str(dltmw),
        "bench",
        "--workload",
        "bank",
        "-p",
        "accounts=8",
        "-p",
        "skew=zipf:1.5",
        "--txs",
        str(TXS),
        "--in-flight",
        "16",
        "--duration",
        "45",
        "--batch-timeout-ms",
        "100",
        "--results-dir",
        str(results),
        "--keep",
        str(keep),
        "--restart-check",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=150, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    reports = list((results / "results").glob("*/report.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    c = report["counts"]
    invalid = sum(c["invalid_by_code"].values())
    failed = sum(c["failed_by_reason"].values())
    assert c["submitted"] == TXS
    assert c["submitted"] == c["valid"] + invalid + failed
    assert c["committed"] == c["valid"] + invalid
    assert c["valid"] > 0
    assert invalid > 0, "a skewed bank mix at 16 in flight must produce MVCC conflicts"
    assert set(c["invalid_by_code"]) <= {"MVCC_READ_CONFLICT", "PHANTOM_READ_CONFLICT"}
    assert report["checks"] == {"counts_add_up": True, "ledgers_agree": True}

    # The peers' ledgers, read here: genesis + setup + every committed tx, same verdicts. A
    # transaction that failed at the client after it was submitted (a deadline under load) may
    # still have committed, so only those may add rows; normally `failed` is 0 and this is exact.
    for peer in PEERS:
        valid_rows, other_rows = _ledger_counts(keep / "net", peer)
        expected_valid = 1 + report["setup_txs"] + c["valid"]
        assert expected_valid <= valid_rows <= expected_valid + failed, peer
        assert invalid <= other_rows <= invalid + failed, peer
    assert report["setup_txs"] == 8

    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert abs(report["rates"]["valid_tx_s"] - c["valid"] / report["elapsed_s"]) < 1e-6
    assert set(report["cpu_ms_per_committed_tx"]) == {"orderer0", *PEERS, "client"}
    assert all(v > 0 for v in report["cpu_ms_per_committed_tx"].values())
    cpu_s = sum(report["cpu_ms_per_committed_tx"].values()) * c["committed"] / 1000
    assert report["valid_tx_per_cpu_s"] == pytest.approx(c["valid"] / cpu_s)
    assert set(report["peak_rss_mb"]) == {"orderer0", *PEERS, "client"}
    # --restart-check: the first peer was stopped, started, and served its whole ledger again
    restart = report["restart"]
    assert restart["node"] == PEERS[0] and restart["restart_to_serving_s"] > 0
    assert restart["ledger_height"] == restart["ledger_height_before"] > 1
    assert report["blocks"]["blocks"] > 0
    assert report["blocks"]["max_tx_per_block"] <= report["network"]["batch_max_tx"]
    assert report["network"]["endorsement_policy"] == "AND(Org1.peer, Org2.peer)"
    assert report["network"]["sqlite_synchronous"] == "FULL"
    limits = report["limits"]
    assert limits["sign_per_s"] > 0 and limits["verify_per_s"] > 0
    assert limits["grpc_unary_per_s"] > 0 and limits["sqlite_rows_per_s"] > 0
    assert set(report["fraction_of_bound"]) == {
        "signature",
        "signature_verification",
        "grpc",
        "sqlite",
    }
    for plot in ("throughput.png", "latency.png"):
        assert (reports[0].parent / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = (results / "RESULTS.md").read_text()
    assert md.startswith("# Benchmark results\n\nhistory stays.\n")
    rows = [line for line in md.splitlines() if line.startswith("| 20")]
    assert len(rows) == 1
    assert "dltmw bench --workload bank" in rows[0]
    assert f"| {c['valid'] / report['elapsed_s']:.1f} |" in rows[0]
    assert "of sig-verify bound" in md
    assert "valid tx/s" in run.stdout


FLOWS = {
    # workload -> (extra options, the nodes whose CPU and peak RSS the report must hold)
    "notary": (["--restart-check"], {"notary0"}),
    "notary-cluster": (["-p", "batch=20"], {f"notary{i}" for i in range(4)}),
    "private": ([], {"orderer0", "peer0.org1", "peer0.org2", "peer0.org3"}),
    "utxo-dvp": (["-p", "lots=2", "--restart-check"], {"notary0", "vault.org1", "vault.org2"}),
}
FLOW_TXS = 30


@pytest.mark.parametrize("workload", sorted(FLOWS))
def test_every_flow_is_a_harness_workload(tmp_path: Path, workload: str) -> None:
    """Each flow runs through the same runner and report: everything decided, every node's
    store or ledger holds it, CPU and peak RSS per node, and (where asked) the restart check."""
    extra, nodes = FLOWS[workload]
    results = tmp_path / "results"
    results.mkdir()
    (results / "RESULTS.md").write_text("# Benchmark results\n")
    dltmw = Path(sys.executable).parent / "dltmw"
    command = [str(dltmw), "bench", "--workload", workload, *extra, "--txs", str(FLOW_TXS)]
    command += ["--in-flight", "8", "--duration", "45", "--no-probe"]
    command += ["--batch-timeout-ms", "50", "--results-dir", str(results)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=150, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (path,) = list((results / "results").glob("*/report.json"))
    report = json.loads(path.read_text())
    c = report["counts"]
    assert c == {
        "submitted": FLOW_TXS,
        "committed": FLOW_TXS,
        "valid": FLOW_TXS,
        "invalid_by_code": {},
        "failed_by_reason": {},
    }
    assert report["checks"] == {"counts_add_up": True, "ledgers_agree": True}
    held = report["ledgers"]
    assert held and all(v["missing"] == 0 and v["valid"] > 0 for v in held.values())
    assert set(report["cpu_ms_per_committed_tx"]) == {*nodes, "client"}
    assert set(report["peak_rss_mb"]) == {*nodes, "client"}
    assert all(v > 0 for v in report["peak_rss_mb"].values())
    assert report["latency_ms"]["p50"] > 0
    if "--restart-check" in extra:
        restart = report["restart"]
        assert restart["node"] in nodes and restart["restart_to_serving_s"] > 0
        assert restart["ledger_height"] == restart["ledger_height_before"]
    else:
        assert report["restart"] == {}
    assert f"dltmw bench --workload {workload}" in (results / "RESULTS.md").read_text()
