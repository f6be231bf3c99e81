"""Unit tier for the benchmark harness: workloads, the report's arithmetic, RESULTS.md rows."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dltmw.bench.driver import Outcome
from dltmw.bench.limits import CostModel, Limits, bounds
from dltmw.bench.report import append_row, percentile, results_row, summarise
from dltmw.bench.runner import BenchConfig, RunResult
from dltmw.bench.topology import NetworkShape, topology_toml
from dltmw.bench.workloads import BankWorkload, KvWorkload, Op, ParamError, make_workload
from dltmw.pki.network import Topology


def _accounts(ops: list[Op]) -> Counter[str]:
    return Counter(a for op in ops for a in op.args if a.startswith("acct"))


def test_bank_skews_go_from_spread_to_one_hot_account() -> None:
    def ops(skew: str) -> list[Op]:
        w = BankWorkload({"accounts": "50", "skew": skew}, seed=7)
        return [w.op(i, "bench0") for i in range(3000)]

    uniform, zipf, hot = _accounts(ops("uniform")), _accounts(ops("zipf:1.5")), ops("hot")
    assert len(uniform) == 50 and max(uniform.values()) < 3 * min(uniform.values())
    assert zipf.most_common(1)[0][0] == "acct7-0"
    assert zipf.most_common(1)[0][1] > 0.3 * sum(zipf.values())
    assert all("acct7-0" in op.args for op in hot), "every hot transaction touches account 0"
    kinds = Counter(op.function for op in ops("uniform"))
    assert set(kinds) == {"deposit", "withdraw", "payment"}
    assert min(kinds.values()) > 800  # the 1:1:1 mix of Figure 8
    assert all(op.args[0] != op.args[1] for op in hot if op.function == "payment")


def test_bank_setup_opens_every_account_on_every_channel() -> None:
    w = BankWorkload({"accounts": "3"}, seed=1)
    setup = w.setup_ops(("a", "b"))
    assert [(op.channel, op.function, op.args[0]) for op in setup] == [
        (ch, "open", f"acct1-{i}") for ch in "ab" for i in range(3)
    ]


def test_workloads_are_deterministic_per_seed() -> None:
    def run(seed: int) -> list[Op]:
        w = make_workload("kv", {"rmw": "0.5", "keys": "10", "skew": "zipf:1"}, seed)
        return [w.op(i, "c") for i in range(200)]

    assert run(3) == run(3) != run(4)


def test_kv_modes() -> None:
    blind = KvWorkload({}, seed=1)
    assert {blind.op(i, "c").function for i in range(50)} == {"put"}
    assert len({blind.op(i, "c").args[0] for i in range(50)}) == 50  # distinct keys
    rmw = KvWorkload({"rmw": "1", "keys": "2"}, seed=1)
    ops = [rmw.op(i, "c") for i in range(50)]
    assert {op.function for op in ops} == {"incr"}
    assert {op.args[0] for op in ops} == {"pool0", "pool1"}


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("nope", {}),
        ("kv", {"rmw": "2"}),
        ("kv", {"colour": "red"}),
        ("bank", {"skew": "zipf:-1"}),
        ("bank", {"skew": "pareto"}),
        ("bank", {"accounts": "1"}),
        ("bank", {"mix": "1,1"}),
    ],
)
def test_bad_parameters_are_refused_with_a_reason(name: str, params: dict[str, str]) -> None:
    with pytest.raises(ParamError):
        make_workload(name, params, 1)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (
        50.0,
        90.0,
        99.0,
    )
    assert percentile([], 50) == 0.0
    assert percentile([7.0], 99) == 7.0


def test_cost_model_counts_the_and_policy_path() -> None:
    m = CostModel(endorsers=2, peers=2, writes=1)
    counts = (m.signs(), m.verifies(), m.unary_calls(), m.stream_items(), m.sqlite_rows())
    assert counts == (4, 7, 0, 10, 6)  # 3 verifies on each peer, 1 on the orderer
    unary = CostModel(endorsers=2, peers=2, writes=1, pipelined=False)
    assert (unary.signs(), unary.verifies(), unary.unary_calls(), unary.stream_items()) == (
        5,
        8,
        3,
        6,
    )
    assert CostModel(endorsers=1, peers=3, writes=1).verifies() == 1 * 2 + 2 * 2 + 1
    limits = Limits(2, 50_000, 22_000, 7_000, 8_000, 100, 100_000, 1.0)
    b = bounds(limits, m)
    assert b["signature_verification"] == pytest.approx(2 * 22_000 / 7)
    assert b["grpc"] == pytest.approx(2 / (10 / 800_000))
    assert bounds(limits, unary)["grpc"] < b["grpc"]  # unary calls cost more than stream items
    assert b["signature"] < b["signature_verification"]  # signing costs something too


def _result() -> RunResult:
    ops = [Op("bench0", "bank", "deposit", ("a", "1"))] * 6
    outs = [
        Outcome("t1", 1, None, 0.0, 0.10, block=5),
        Outcome("t2", 1, None, 0.0, 0.20, block=5),
        Outcome("t3", 2, None, 0.0, 0.30, block=6),
        Outcome("t4", 2, None, 0.0, 0.40, block=6),
        Outcome("t5", 3, None, 0.0, 0.50, block=6),
        Outcome("", None, "ENDORSEMENT_MISMATCH", 0.0, 0.6, detail="heights differ"),
    ]
    r = RunResult(BenchConfig(workload="bank"), {"accounts": 2}, None)
    r.records = list(zip(ops, outs, strict=True))
    r.elapsed_s = 2.0
    r.cpu_s = {"peer0.org1": 0.5, "client": 0.1}
    r.ledgers = {p: {"found": 5, "missing": 0, "mismatched": 0, "valid": 2} for p in ("a", "b")}
    return r


def test_summary_accounts_for_every_transaction() -> None:
    s = summarise(_result(), "dltmw bench x")
    assert s["counts"] == {
        "submitted": 6,
        "committed": 5,
        "valid": 2,
        "invalid_by_code": {"MVCC_READ_CONFLICT": 2, "PHANTOM_READ_CONFLICT": 1},
        "failed_by_reason": {"ENDORSEMENT_MISMATCH": 1},
    }
    assert s["failure_examples"] == {"ENDORSEMENT_MISMATCH": "heights differ"}
    assert s["rates"] == {"submitted_tx_s": 3.0, "committed_tx_s": 2.5, "valid_tx_s": 1.0}
    assert s["abort_rate"] == pytest.approx(4 / 6)
    assert s["latency_ms"]["p50"] == pytest.approx(300.0)
    assert s["cpu_ms_per_committed_tx"] == {"peer0.org1": 100.0, "client": 20.0}
    assert s["blocks"] == {"blocks": 2, "mean_tx_per_block": 2.5, "max_tx_per_block": 3}
    assert s["checks"] == {"counts_add_up": True, "ledgers_agree": True}
    assert s["cpu_cores_used_total"] == pytest.approx(0.3)
    assert s["valid_tx_per_cpu_s"] == pytest.approx(2 / 0.6)
    assert s["closed_loop_ceiling_tx_s"] == pytest.approx(256 / 0.3)  # Little's law


def test_a_peer_missing_a_transaction_fails_the_ledger_check() -> None:
    r = _result()
    r.ledgers["b"] = {"found": 4, "missing": 1, "mismatched": 0, "valid": 1}
    assert summarise(r, "x")["checks"]["ledgers_agree"] is False


def test_results_rows_append_under_one_header(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\nprose history.\n")
    row = results_row(summarise(_result(), "dltmw bench --txs 6"), "results/x/report.json")
    append_row(md, row)
    append_row(md, row)
    text = md.read_text()
    assert text.startswith("# Benchmark results\n\nprose history.\n")
    assert text.count("| date (UTC) |") == 1
    assert text.count("`dltmw bench --txs 6`") == 2
    with md.open("a") as f:
        f.write("\nmore prose\n")
    append_row(md, row)
    assert md.read_text().count("| date (UTC) |") == 2  # a new table after the prose


def test_topology_is_valid_for_init(tmp_path: Path) -> None:
    shape = NetworkShape(channels=3, policy="AND")
    path = tmp_path / "t.toml"
    path.write_text(topology_toml(shape, ("kv",)))
    topo = Topology.load(path)
    channels = topo.raw["channels"]
    assert [c["id"] for c in channels] == ["bench0", "bench1", "bench2"]
    assert {c["endorsement_policy"] for c in channels} == {"AND(Org1.peer, Org2.peer)"}
    assert channels[0]["batch"] == {
        "max_tx_count": 100,
        "max_bytes": 1048576,
        "timeout_ms": 200,
        "cut_by_limits_only": False,
        "reorder": False,
        "pbft_dissemination": True,  # the topology's default: on for new channels
        "pbft_collector": True,
        "pbft_carried_batches": True,  # the topology's default: on for new channels
    }


def test_kv_blind_values_stay_readable_as_counters() -> None:
    """A pool key written by `put` and then `incr`ed must not make the contract fail."""
    w = KvWorkload({"rmw": "0.5", "keys": "3", "value_bytes": "16"}, seed=2)
    puts = [op for op in (w.op(i, "c") for i in range(100)) if op.function == "put"]
    assert puts and all(len(op.args[1]) == 16 and int(op.args[1]) >= 0 for op in puts)


def test_experiment_section_reports_failed_points(tmp_path: Path) -> None:
    from dltmw.bench.experiments import EXPERIMENTS, experiment_section, median_run

    s = summarise(_result(), "dltmw bench --experiment contention")
    slow = summarise(_result(), "x")
    slow["rates"]["valid_tx_s"] = 0.5
    assert median_run([s, slow, s]) is s and median_run([slow, s, slow]) is slow
    text = experiment_section(
        EXPERIMENTS["contention"],
        [("hot", s, [slow, s])],
        {"zipf:2": "network did not start"},
        tmp_path / "results" / "x" / "contention.png",
        tmp_path,
        "dltmw bench --experiment contention",
    )
    assert "![" in text and "(results/x/contention.png)" in text
    assert "| hot | 6 | 1.0 | 0.5, 1.0 | 2.5 | 67% |" in text
    assert "(all runs: True)" in text
    assert "| zipf:2 | failed: network did not start |" in text
    assert "```\ndltmw bench --experiment contention\n```" in text


def test_replicas_extension_point_builds_a_pbft_topology(tmp_path: Path) -> None:
    from dltmw.bench.experiments import EXPERIMENTS

    exp = EXPERIMENTS["replicas"]
    cfg = exp.points[1][1](exp.base(BenchConfig()))
    path = tmp_path / "t.toml"
    path.write_text(topology_toml(cfg.shape, ("kv",)))
    channel = Topology.load(path).raw["channels"][0]
    assert channel["ordering"] == "pbft"
    assert channel["orderers"] == ["orderer0", "orderer1", "orderer2", "orderer3"]


async def test_ledger_check_finds_missing_and_mismatched_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from dltmw.bench import runner

    monkeypatch.setattr(runner, "LEDGER_DEADLINE_S", 0.3)
    rows = {"peer0.org1": [("t1", 1), ("t2", 2)], "peer0.org2": [("t1", 2)]}
    for peer, txs in rows.items():
        path = runner.ledger_path(tmp_path, peer, "bench0")
        path.parent.mkdir(parents=True)
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE txs (tx_id TEXT PRIMARY KEY, code INTEGER)")
        conn.executemany("INSERT INTO txs VALUES (?, ?)", txs)
        conn.commit()
        conn.close()
    op = Op("bench0", "kv", "put", ("k", "v"))
    records = [
        (op, Outcome("t1", 1, None, 0, 1)),
        (op, Outcome("t2", 2, None, 0, 1)),
        (op, Outcome("", None, "ABORTED", 0, 1)),
    ]
    report = await runner.check_ledgers(tmp_path, NetworkShape(), records)
    assert report == {
        "peer0.org1": {"found": 2, "missing": 0, "mismatched": 0, "valid": 1},
        "peer0.org2": {"found": 1, "missing": 1, "mismatched": 1, "valid": 0},
    }


@pytest.mark.parametrize("secondary", ["abort", "cpu"])
def test_experiment_plot_writes_a_png(tmp_path: Path, secondary: str) -> None:
    from dltmw.bench.plots import experiment_plot

    s = summarise(_result(), "x")
    path = experiment_plot(tmp_path / "e.png", "t", "x", ["a", "b"], [s, s], secondary)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_run_keeps_the_node_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from dltmw.bench import experiments
    from dltmw.bench.runner import BenchError

    def failing(cfg: BenchConfig, workdir: Path, console: Console, limits: object) -> RunResult:
        logs = workdir / "net" / "run" / "logs"
        logs.mkdir(parents=True)
        (logs / "peer0.org1.log").write_text("stuck\n")
        raise BenchError("setup failed")

    monkeypatch.setattr(experiments, "run_bench", failing)
    kept = tmp_path / "kept"
    with pytest.raises(BenchError, match=r"setup failed \(node logs: .*kept\)"):
        experiments.run_logged(BenchConfig(), Console(), None, None, kept)
    assert (kept / "peer0.org1.log").read_text() == "stuck\n"


def test_latency_experiment_is_an_open_loop_sweep_then_saturation(tmp_path: Path) -> None:
    from dltmw.bench.experiments import EXPERIMENTS, LATENCY_RATES, experiment_section
    from dltmw.bench.plots import latency_curve_plot

    exp = EXPERIMENTS["latency"]
    configs = [point(exp.base(BenchConfig(txs=3000))) for _, point in exp.points]
    assert [c.rate for c in configs] == [*map(float, LATENCY_RATES), 0.0]
    assert all(c.workload == "kv" for c in configs)
    assert configs[0].txs == 300 and configs[-2].txs == 6000 and configs[-1].txs == 3000
    s = summarise(_result(), "dltmw bench --experiment latency")
    plot = latency_curve_plot(tmp_path / "latency.png", exp.title, ["100", "closed"], [s, s])
    assert plot.stat().st_size > 0
    text = experiment_section(exp, [("100", s, [s])], {}, plot, tmp_path, "x")
    cpu_ms = sum(s["cpu_ms_per_committed_tx"].values())
    assert f"| {cpu_ms:.2f} | {s['blocks']['mean_tx_per_block']:.1f} |" in text
