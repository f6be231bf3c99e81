"""Unit tier for the hot-account benchmark (issue 13): the `hot` workload and the invariants
`bench/hotkey.py` checks on every peer after a run (bound kept, violations justified, final
balance == opening balance + valid deltas)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dltmw.bench.driver import Outcome
from dltmw.bench.hotkey import invariants
from dltmw.bench.topology import NetworkShape, topology_toml
from dltmw.bench.workloads import HotAccountWorkload, Op, ParamError
from dltmw.pki.network import Topology
from dltmw.v1 import transaction_pb2

T = transaction_pb2
VALID, BOUND = T.TX_VALIDATION_CODE_VALID, T.TX_VALIDATION_CODE_DELTA_BOUND_VIOLATED
MVCC = T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT


def test_hot_workload_touches_one_account_with_a_deposit_withdraw_mix() -> None:
    w = HotAccountWorkload({"withdraw": "0.3"}, seed=4)
    ops = [w.op(i, "bench0") for i in range(2000)]
    assert {op.args[0] for op in ops} == {"hot4"}
    kinds = Counter(op.function for op in ops)
    assert set(kinds) == {"deposit", "withdraw"} and 500 < kinds["withdraw"] < 700
    assert all(1 <= int(op.args[1]) <= 100 for op in ops)
    assert w.setup_ops(("a", "b")) == [
        Op(ch, "bank", "open", ("hot4", "1000")) for ch in ("a", "b")
    ]


def test_hot_workload_deploys_the_contract_it_uses(tmp_path: Path) -> None:
    w = HotAccountWorkload({"contract": "bank_rmw"}, seed=1)
    assert {op.contract for op in [w.op(i, "c") for i in range(10)]} == {"bank_rmw"}
    path = tmp_path / "t.toml"
    path.write_text(topology_toml(NetworkShape(), w.contracts))
    topo = Topology.load(path)  # bank_rmw is a built-in: no package needed
    assert [c["name"] for c in topo.raw["channels"][0]["contracts"]] == ["bank_rmw"]


@pytest.mark.parametrize(
    "params",
    [{"contract": "kv"}, {"withdraw": "1.5"}, {"withdraw": "x"}, {"initial": "-1"}, {"x": "1"}],
)
def test_hot_workload_refuses_bad_params(params: dict[str, str]) -> None:
    with pytest.raises(ParamError):
        HotAccountWorkload(params, seed=1)


def rec(function: str, amount: int, code: int | None, block: int, index: int) -> tuple[Op, Outcome]:
    op = Op("c", "bank", function, ("hot1", str(amount)))
    return op, Outcome("t", code, None, 0.0, 0.0, block=block, index=index)


def test_invariants_replay_in_commit_order_not_completion_order() -> None:
    # Completed out of order: the withdrawal of 80 committed at (5, 0), before the deposit.
    records = [rec("deposit", 50, VALID, 5, 1), rec("withdraw", 80, VALID, 5, 0)]
    inv = invariants(100, records, {"p1": 70, "p2": 70})
    assert inv["lowest_balance"] == 20 and inv["bound_kept"] and inv["final_equal"]


@pytest.mark.parametrize(
    ("records", "balances", "broken"),
    [
        ([rec("withdraw", 101, VALID, 2, 0)], {"p": -1}, "bound_kept"),
        ([rec("withdraw", 10, BOUND, 2, 0)], {"p": 100}, "violations_justified"),
        ([rec("deposit", 10, VALID, 2, 0)], {"p": 110, "q": 100}, "final_equal"),
        ([rec("deposit", 10, VALID, 2, 0)], {"p": None}, "final_equal"),
        ([], {}, "final_equal"),
    ],
    ids=["overdraft-committed", "bound-refused-a-covered-withdrawal", "a-peer-differs",
         "a-peer-has-no-account", "no-peer-read"],
)  # fmt: skip
def test_invariants_notice(
    records: list[tuple[Op, Outcome]], balances: dict[str, int | None], broken: str
) -> None:
    inv = invariants(100, records, balances)
    assert inv[broken] is False
    assert all(inv[k] for k in ("bound_kept", "violations_justified", "final_equal") if k != broken)


def test_invariants_hold_for_a_consistent_run_with_failures_and_conflicts() -> None:
    records = [
        rec("withdraw", 60, VALID, 3, 0),
        rec("withdraw", 60, BOUND, 3, 1),  # 40 left: justified
        rec("deposit", 5, MVCC, 3, 2),  # bank_rmw: a conflict adds nothing
        rec("deposit", 7, None, -1, -1),  # failed before commit
        rec("deposit", 20, VALID, 4, 0),
    ]
    inv = invariants(100, records, {"p1": 60, "p2": 60})
    assert inv["expected_balance"] == 60 and inv["bound_violations"] == 1
    assert inv["bound_kept"] and inv["violations_justified"] and inv["final_equal"]
