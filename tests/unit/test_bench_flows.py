"""Unit tier for the harness's other flows (`dltmw/bench/flows.py`, `stores.py`, the topology
options): parameters, operation generation, the networks they ask for, what the store check
expects of each node, and the notary driver's reading of a refusal."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dltmw.bench.driver import Outcome
from dltmw.bench.flow_drivers import refusal
from dltmw.bench.flows import PrivateWorkload, UtxoDvpWorkload
from dltmw.bench.report import summarise
from dltmw.bench.restart import restart_node
from dltmw.bench.runner import BenchConfig, RunResult
from dltmw.bench.stores import expected_by_node
from dltmw.bench.topology import NetworkShape, check_ordering, topology_toml
from dltmw.bench.workloads import Op, ParamError, default_in_flight, make_workload
from dltmw.cli.main import app
from dltmw.pki.network import Topology
from dltmw.v1 import errors_pb2, notarisation_pb2


def test_notary_ops_spend_fresh_states_and_are_deterministic_per_seed() -> None:
    def ops(seed: int) -> list[Op]:
        w = make_workload("notary", {"inputs": "3"}, seed)
        return [w.op(i, "bench0") for i in range(500)]

    first = ops(5)
    assert first == ops(5) != ops(6)
    assert all(op.function == "notarise" and len(op.args) == 4 for op in first)
    inputs = [t for op in first for t in op.args[1:]]
    assert len(set(inputs)) == len(inputs), "no state is spent twice: nothing refused for us"
    assert all(len(bytes.fromhex(a)) == 32 for op in first for a in op.args)


def test_notary_and_cluster_ask_for_their_networks() -> None:
    single = make_workload("notary", {"batch": "50", "streams": "3"}, 1)
    cluster = make_workload("notary-cluster", {"members": "7"}, 1)
    assert single.driver_options() == {"batch": 50, "streams": 3}
    one = single.network(NetworkShape(orgs=3))
    assert (one.flow, one.notary_ids(), one.notary(), one.peer_ids()) == (
        "notary",
        ("notary0",),
        "notary0",
        (),
    )
    seven = cluster.network(NetworkShape())
    assert seven.notary_ids() == tuple(f"notary{i}" for i in range(7))
    assert seven.notary() == "notaries"
    assert cluster.params()["members"] == 7 and "members" not in single.params()


def test_the_cluster_window_defaults_to_its_capacity_and_the_others_to_full_blocks() -> None:
    # A notary cluster's slots fill only with ~1,000 in flight (RESULTS.md, ncl6); the CLI's
    # `--in-flight 0` (its default) takes these, an explicit window is kept.
    assert default_in_flight("notary-cluster") == 1024
    assert {default_in_flight(n) for n in ("kv", "bank", "hot", "notary", "private")} == {256}
    shown = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"}).output
    assert "notary-cluster 1024" in shown


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("notary", {"members": "4"}),  # a single notary has no members
        ("notary-cluster", {"members": "3"}),  # 3f+1 with f >= 1
        ("notary", {"batch": "0"}),
        ("private", {"recipients": "0"}),
        ("private", {"payload": "1"}),
        ("private", {"agreement": "some"}),
        ("utxo-dvp", {"lots": "x"}),
    ],
)
def test_bad_flow_parameters_are_refused(name: str, params: dict[str, str]) -> None:
    with pytest.raises(ParamError):
        make_workload(name, params, 1)


def test_private_puts_fresh_keys_to_every_other_org() -> None:
    w = PrivateWorkload({"recipients": "4", "value_bytes": "10"}, seed=3)
    assert w.network(NetworkShape()).orgs == 5
    ops = [w.op(i, "bench0") for i in range(100)]
    assert {(op.contract, op.function) for op in ops} == {("kv", "put")}
    assert len({op.args[0] for op in ops}) == 100 and all(len(op.args[1]) == 10 for op in ops)
    assert w.setup_ops(("bench0",)) == []


def test_private_agreement_parameter_reaches_the_channels() -> None:
    """`-p agreement=none` measures the path without agreements: the topology's channels say
    so (the default keeps every recipient's agreement, as `dltmw init` does)."""
    import tomllib

    from dltmw.bench.topology import topology_toml

    for params, expected in (({}, "all-recipients"), ({"agreement": "none"}, "none")):
        shape = PrivateWorkload(params, seed=1).network(NetworkShape())
        doc = tomllib.loads(topology_toml(shape, ("kv",)))
        assert [c["private_agreement"] for c in doc["channels"]] == [expected]


def test_utxo_dvps_cover_every_ordered_pair_and_the_setup_funds_each_vault() -> None:
    w = UtxoDvpWorkload({"lots": "3", "price": "7"}, seed=1)
    shape = w.network(NetworkShape(orgs=3))
    assert shape.flow == "utxo" and shape.notary_ids() == ("notary0",)
    vaults = shape.vault_ids()
    ops = [w.op(i, "bench0") for i in range(60)]
    pairs = Counter((op.channel, op.args[0]) for op in ops)
    assert set(pairs) == {(a, b) for a in vaults for b in vaults if a != b}
    assert set(pairs.values()) == {10}  # round robin
    assert {op.args[1:] for op in ops} == {("BENCH0000001", "1", "JPY", "7")}
    setup = w.setup_ops(())
    issued = Counter((op.channel, op.contract) for op in setup)
    assert issued == {(v, c): 3 for v in vaults for c in ("security", "cash")}
    assert all(op.args[0] == op.channel for op in setup), "each vault issues to itself"
    with pytest.raises(ParamError):
        w.network(NetworkShape(orgs=1))


@pytest.mark.parametrize(
    "shape",
    [
        NetworkShape(flow="notary", notaries=1),
        NetworkShape(flow="notary", notaries=4, orgs=3),
        NetworkShape(flow="utxo", notaries=1),
        NetworkShape(flow="utxo", notaries=4),
        NetworkShape(orgs=3, orderers=4, ordering="pbft"),
    ],
)
def test_flow_topologies_are_valid_for_init(tmp_path: Path, shape: NetworkShape) -> None:
    path = tmp_path / "t.toml"
    path.write_text(topology_toml(shape, ("kv",)))
    raw = Topology.load(path).raw
    nodes = {n["id"]: n["roles"] for n in raw["nodes"]}
    assert {n for n, r in nodes.items() if r == ["notary"]} == set(shape.notary_ids())
    assert {n for n, r in nodes.items() if r == ["vault"]} == set(shape.vault_ids())
    assert {n for n, r in nodes.items() if "peer" in r} == set(shape.peer_ids())
    assert bool(raw.get("channels")) == (shape.flow == "ledger")
    clusters = raw.get("notary_clusters", [])
    assert clusters == (
        [{"id": "notaries", "members": list(shape.notary_ids())}] * (shape.notaries > 1)
    )


def test_a_flow_without_notaries_is_refused() -> None:
    with pytest.raises(ValueError, match="notary"):
        topology_toml(NetworkShape(flow="utxo"), ())


def _done(tx: str, code: int | None = 1) -> Outcome:
    return Outcome(tx, code, None if code else "X", 0.0, 0.1)


def test_store_check_expects_final_transactions_at_every_notary_and_both_dvp_parties() -> None:
    records = [
        (Op("c", "notary", "notarise", ("n",)), _done("t1")),
        (Op("c", "", "", ()), _done("t2", None)),
    ]
    notary = NetworkShape(flow="notary", notaries=4)
    assert expected_by_node(notary, records) == {f"notary{i}": ["t1"] for i in range(4)}
    utxo = NetworkShape(flow="utxo", notaries=1, orgs=3)
    dvps = [
        (Op("vault.org1", "dvp", "dvp", ("vault.org2",)), _done("a")),
        (Op("vault.org3", "dvp", "dvp", ("vault.org1",)), _done("b")),
    ]
    assert expected_by_node(utxo, dvps) == {
        "vault.org1": ["a", "b"],
        "vault.org2": ["a"],
        "vault.org3": ["b"],
    }


def test_ledgers_agree_against_what_each_store_must_hold() -> None:
    r = RunResult(BenchConfig(workload="utxo-dvp"), {}, None)
    r.records = [(Op("v1", "dvp", "dvp", ("v2",)), _done(t)) for t in ("a", "b")]
    r.elapsed_s = 1.0
    r.ledgers = {
        "v1": {"found": 2, "missing": 0, "mismatched": 0, "valid": 2, "expected_valid": 2},
        "v3": {"found": 0, "missing": 0, "mismatched": 0, "valid": 0, "expected_valid": 0},
    }
    s = summarise(r, "x")
    assert s["checks"]["ledgers_agree"] is True
    assert s["fraction_of_bound"] == {} and s["blocks"]["blocks"] == 0
    r.ledgers["v3"] = {"found": 0, "missing": 1, "mismatched": 0, "valid": 0, "expected_valid": 1}
    assert summarise(r, "x")["checks"]["ledgers_agree"] is False


def test_a_notary_refusal_is_named_and_a_signature_is_not_a_refusal() -> None:
    signed = notarisation_pb2.NotarisationResult()
    signed.response.notary_signature.signature = b"sig"
    assert refusal(signed) is None
    consumed = notarisation_pb2.NotarisationResult(reason=errors_pb2.ERROR_REASON_INPUT_CONSUMED)
    assert refusal(consumed) == "ERROR_REASON_INPUT_CONSUMED"
    assert refusal(notarisation_pb2.NotarisationResult()) is not None  # no signature: refused


def test_restart_check_picks_a_peer_else_a_vault_else_a_notary() -> None:
    assert restart_node(NetworkShape()) == "peer0.org1"
    assert restart_node(NetworkShape(flow="utxo", notaries=1)) == "vault.org1"
    assert restart_node(NetworkShape(flow="notary", notaries=4)) == "notary0"


@pytest.mark.parametrize(
    ("ordering", "replicas", "ok"),
    [
        ("none", 1, True),
        ("pbft", 4, True),
        ("pbft", 13, True),
        ("none", 4, False),
        ("pbft", 3, False),
        ("raft", 4, False),
        ("pbft", 1, False),
    ],
)
def test_ordering_options(ordering: str, replicas: int, ok: bool) -> None:
    if ok:
        check_ordering(ordering, replicas)
    else:
        with pytest.raises(ValueError, match="--ordering"):
            check_ordering(ordering, replicas)


def test_the_suite_runs_every_registered_workload() -> None:
    from dltmw.bench.suite import FLOWS
    from dltmw.bench.workloads import WORKLOADS

    base = BenchConfig(txs=100, in_flight=64, params={"rmw": "1"})
    configs = {f.label: f.point(base) for f in FLOWS}
    assert {c.workload for c in configs.values()} == set(WORKLOADS)
    assert all(c.params == {} for c in configs.values()), "each flow runs its own defaults"
    pbft = configs["kv-pbft4"].shape
    assert (pbft.ordering, pbft.orderers) == ("pbft", 4)
    assert configs["notary"].txs == 500 and configs["utxo-dvp"].in_flight == 16
    assert len({c.label for c in configs.values()}) == len(FLOWS)


def test_the_pbft_flow_measures_dissemination_whatever_the_base_says() -> None:
    """`make bench-all`'s kv-pbft4 is the path `dltmw init` gives new PBFT channels, even
    when the base configuration (`--no-pbft-dissemination`) says otherwise."""
    from dataclasses import replace

    from dltmw.bench.suite import FLOWS

    flow = next(f for f in FLOWS if f.label == "kv-pbft4")
    for on in (True, False):
        base = BenchConfig(shape=replace(NetworkShape(), pbft_dissemination=on))
        assert flow.point(base).shape.pbft_dissemination
    assert NetworkShape().pbft_dissemination  # the bench's default, as `dltmw init`'s


def test_a_flow_section_has_its_plot_spread_rss_restart_and_load(tmp_path: Path) -> None:
    from dltmw.bench.suite import FLOWS, flow_section

    def summary(valid: int) -> dict[str, object]:
        r = RunResult(BenchConfig(workload="notary"), {}, None)
        r.records = [(Op("c", "notary", "notarise", ()), _done(f"t{i}")) for i in range(valid)]
        r.elapsed_s, r.peak_rss = 1.0, {"notary0": 80 * 2**20}
        r.restart = {"node": "notary0", "restart_to_serving_s": 0.5, "ledger_height": 0}
        return summarise(r, "dltmw bench --experiment flows")

    notary = next(f for f in FLOWS if f.label == "notary")
    text = flow_section(notary, [summary(3), summary(5), summary(4)], {}, tmp_path, tmp_path, "c")
    assert text.startswith("\n### Flow `notary`\n")
    assert "| notary | 4 | 4.0 | 3.0, 5.0, 4.0 |" in text  # the median run, then the spread
    assert "notary0 80" in text and "0.50, 0.50, 0.50 s" in text and "Load average" in text
    assert "```" not in text, "the command is in the suite heading, once"
    assert (tmp_path / "flow-notary.png").read_bytes()[:4] == b"\x89PNG"
    failed = flow_section(notary, [], {"notary": "run 1: boom"}, tmp_path, tmp_path, "c")
    assert "failed: run 1: boom" in failed


def test_the_suite_heading_names_the_command_and_the_load_once() -> None:
    from dltmw.bench.suite import suite_heading

    text = suite_heading(3, "1.00 0.50 0.25", "dltmw bench --experiment flows")
    assert text.startswith("\n## Every flow of `dltmw bench` (3 runs each)\n")
    assert "load average (1, 5, 15 min) 1.00 0.50 0.25 at the start" in text
    assert text.count("dltmw bench --experiment flows") == 1
