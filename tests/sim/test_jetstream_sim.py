"""The jetstream scenario (`dltmw/sim/scenarios/jetstream.py`): the real cutter on a modelled
stream with delays, duplicates, lost acknowledgements and markers, crashes and restarts."""

from __future__ import annotations

import random

import pytest

from dltmw.core.block import block_hash, make_block
from dltmw.core.handlers.jetstream import CutBlock
from dltmw.core.hashing import ZERO_HASH
from dltmw.sim.scenarios import run_scenario
from dltmw.sim.scenarios.jetstream import CHANNEL, Orderer, World, simulate, violations_of

SEEDS = range(30)
FAULTS = (
    "acks_lost",
    "markers_lost",
    "markers_published",
    "crashes",
    "restarts",
    "duplicate_publishes",
    "duplicates_dropped",
)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_orderer_cuts_the_same_chain_and_loses_nothing(seed: int) -> None:
    result = simulate(seed)
    assert result.ok, f"{result.verdict()}\nreplay: {result.replay_command()}"


def test_the_faults_were_exercised() -> None:
    totals: dict[str, int] = {}
    for seed in SEEDS:
        for what, n in simulate(seed).counts.items():
            totals[what] = totals.get(what, 0) + n
    assert all(totals.get(f, 0) > 0 for f in FAULTS), totals


def test_a_seed_replays_exactly_and_runs_as_a_scenario() -> None:
    assert simulate(7) == simulate(7)
    assert run_scenario("jetstream", 7).summary == simulate(7).summary


def test_negative_control_cutting_on_a_local_clock_is_caught() -> None:
    caught = [s for s in range(5) if not simulate(s, local_clock=True).ok]
    assert caught, "the agreement checker missed orderers cutting on their own clocks"
    assert any("agreement" in v for v in simulate(caught[0], local_clock=True).violations)


def _world(*chains: list[list[bytes]]) -> World:
    world = World(random.Random(0), local_clock=False)
    for i, batches in enumerate(chains):
        orderer = Orderer(f"o{i}")
        previous = ZERO_HASH
        for n, batch in enumerate(batches):
            block = make_block(CHANNEL, n, previous, batch)
            previous = block_hash(block)
            orderer.chain.append(CutBlock(block, n + 1))
        world.orderers.append(orderer)
    return world


@pytest.mark.parametrize(
    ("chains", "acked", "final", "expected"),
    [
        pytest.param(([[b"a"]], [[b"a"], [b"b"]]), set(), False, None, id="prefix-agrees"),
        pytest.param(([[b"a"]], [[b"b"]]), set(), False, "agreement", id="divergence"),
        pytest.param(([[b"a"], [b"a"]],), set(), False, "duplicate", id="envelope-twice"),
        pytest.param(([[b"a"]],), {b"a", b"z"}, True, "lost", id="acked-envelope-missing"),
        pytest.param(([[b"a"]], [[b"a"], [b"b"]]), set(), True, "after the heal", id="unequal"),
    ],
)
def test_checkers_notice_each_violation(
    chains: tuple[list[list[bytes]], ...], acked: set[bytes], final: bool, expected: str | None
) -> None:
    world = _world(*chains)
    world.acked = acked
    found = violations_of(world, final)
    if expected is None:
        assert found == []
    else:
        assert any(expected in v for v in found), found
