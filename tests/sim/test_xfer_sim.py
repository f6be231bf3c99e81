"""The cross-channel transfer scenario (`dltmw/sim/scenarios/xfer.py`): DvPs between two
channels running the real `xfer` contract, under coordinator crashes at every step, lost and
replayed submissions, a stalled orderer and a byzantine relayer; plus its negative control."""

from __future__ import annotations

import functools
import json
import random

import pytest

from dltmw.core.rwset import Version
from dltmw.sim.scenarios import run_scenario
from dltmw.sim.scenarios.xfer import (
    SIDES,
    TRANSFERS,
    World,
    make_transfer,
    plan,
    simulate,
    violations_of,
)
from dltmw.sim.xfer_relayer import KINDS
from dltmw.sim.xfer_world import SimChannel

SEEDS = range(60)
FAULTS = (
    "submissions_lost",
    "submissions_replayed",
    "reads_lost",
    "proof_fetches_lost",
    "stalled_steps",
    "coordinator_restarts",
    "committed_invalid",  # MVCC: a late lock against an abort, a resubmitted lock, a replay
    *(f"crash_after_{f}" for f in ("lock", "claim", "abort", "refund")),
    "relayed_to_settled",
    *(f"relayed_{k}" for k in KINDS),
)


_simulate = functools.lru_cache(maxsize=None)(simulate)  # each seed runs once for both tests


@pytest.mark.parametrize("seed", SEEDS)
def test_every_transfer_settles_atomically_and_conserves(seed: int) -> None:
    result = _simulate(seed)
    assert result.ok, f"{result.verdict()}\nreplay: {result.replay_command()}"
    assert result.summary["claimed"] + result.summary["refunded"] <= TRANSFERS


def test_the_faults_were_exercised_and_both_outcomes_reached() -> None:
    totals: dict[str, int] = {}
    claimed = refunded = 0
    for seed in SEEDS:
        result = _simulate(seed)
        claimed += result.summary["claimed"]
        refunded += result.summary["refunded"]
        for what, n in result.counts.items():
            totals[what] = totals.get(what, 0) + n
    assert all(totals.get(f, 0) > 0 for f in FAULTS), totals
    assert claimed > 0 and refunded > 0


def test_a_seed_replays_exactly_and_runs_as_a_scenario() -> None:
    assert simulate(7) == simulate(7)
    assert run_scenario("xfer", 7).summary == simulate(7).summary


def test_negative_control_a_contract_believing_any_proof_is_caught() -> None:
    runs = [simulate(seed, unchecked=True) for seed in range(10)]
    split = [r for r in runs if any(v.startswith("split") for v in r.violations)]
    assert split, "the atomicity checker missed a contract that accepts forged proofs"


def _world_with(sa: str, sb: str) -> World:
    channels = {"trading": SimChannel("trading", 4), "cash": SimChannel("cash", 1)}
    t = make_transfer(0, 0)
    world = World(random.Random(0), 0, channels, transfers=[t])
    v = Version(1, 0)
    for channel, state in zip(SIDES, (sa, sb), strict=True):
        ch = world.channels[channel]
        ch.state[("xfer", "a/seller")] = (b"1000" if channel == "trading" else b"0", v)
        ch.state[("xfer", "a/buyer")] = (b"0" if channel == "trading" else b"10000", v)
        if state != "absent":
            ch.state[("xfer", "t/" + t.transfer_id)] = (json.dumps({"state": state}).encode(), v)
    return world


@pytest.mark.parametrize(
    ("sa", "sb", "final", "expected"),
    [
        pytest.param("claimed", "aborted", False, "split", id="claimed-aborted"),
        pytest.param("refunded", "locked", False, "split", id="refunded-locked"),
        pytest.param("claimed", "absent", False, "split", id="claimed-absent"),
        pytest.param("locked", "absent", True, "no outcome", id="stuck"),
        pytest.param("aborted", "refunded", True, None, id="refunded-ok"),
    ],
)
def test_checkers_notice_each_violation(
    sa: str, sb: str, final: bool, expected: str | None
) -> None:
    world = _world_with(sa, sb)
    found = [v for v in violations_of(world, final) if not v.startswith("conservation")]
    if expected is None:
        assert found == []
    else:
        assert any(v.startswith(expected) for v in found), found


def test_conservation_checker_counts_escrow() -> None:
    world = _world_with("locked", "absent")
    assert any(v.startswith("conservation: trading") for v in violations_of(world, False))
    world.channels["trading"].state[("xfer", "a/seller")] = (b"990", Version(2, 0))
    assert violations_of(world, False) == []


def test_plan_follows_run_transfer() -> None:
    locked = {"state": "locked", "locked_tx": "L"}
    assert plan({"state": "absent"}, {"state": "absent"}, 1, 2) == [
        ("trading", "lock", ""),
        ("cash", "lock", ""),
    ]
    assert plan(locked, {"state": "claimed", "locked_tx": "M"}, 9, 2) == [("trading", "claim", "M")]
    assert plan(locked, {"state": "absent"}, 3, 2) == [("cash", "abort", "")]
    aborted = {"state": "aborted", "aborted_tx": "A"}
    assert plan(locked, aborted, 3, 2) == [("trading", "refund", "A")]
