"""Deterministic simulation of the notary cluster (tier 3): no double spend under byzantine faults.

Each seeded run submits 16 spends of a pool of 6 states (most conflict) to a 4-replica PBFT-lite
cluster whose replicas apply every decided batch with the real cluster decision, under one
byzantine behaviour (or network faults with a crash/restart), heals, and is checked: PBFT
agreement/validity, every spend decided by every honest replica, and uniqueness — no state has
two consumers that a client would accept (f+1 signatures, faulty replicas signing everything),
and honest spent-sets agree. Two negative controls prove the checker can fail. 300 seeds per
behaviour (DLTMW_SIM_SEEDS overrides); a failure prints the command that replays it. The same
runs with the real cluster's slot shape (a checkpoint every slot, a window of two slots of four
wraps), a third of the seeds.
"""

from __future__ import annotations

import os

import pytest

from dltmw.sim.byzantine import BEHAVIOURS
from dltmw.sim.notary_cluster import NotaryRunResult, run_notary

SEEDS = int(os.environ.get("DLTMW_SIM_SEEDS", "300"))
TOLERATED = sorted(b for b in BEHAVIOURS if b != "colluding")


def _report(results: list[NotaryRunResult]) -> str:
    return "\n".join(f"{r.verdict()}\n    replay: {r.replay_command()}" for r in results)


def _uniqueness(result: NotaryRunResult) -> list[str]:
    return [v for v in result.violations if v.startswith(("double spend", "disagreement"))]


@pytest.mark.parametrize("shape", ["sim", "cluster"])
@pytest.mark.parametrize("behaviour", TOLERATED)
def test_never_two_notarised_spends_of_one_state(behaviour: str, shape: str) -> None:
    failures: list[NotaryRunResult] = []
    signed = conflicts = recovered = 0
    seeds = SEEDS if shape == "sim" else max(1, SEEDS // 3)
    for seed in range(seeds):
        result = run_notary(seed, behaviour, cluster_shape=shape == "cluster")
        signed += result.signed
        conflicts += result.conflicts
        recovered += result.recovered
        if result.violations or result.lacking:
            failures.append(result)
            if len(failures) >= 5:
                break
    assert not failures, f"{len(failures)}+ failing runs:\n{_report(failures)}"
    # the workload really races: both outcomes happen in (nearly) every run
    assert signed >= 3 * seeds and conflicts >= 3 * seeds, (signed, conflicts)
    if behaviour == "network" and seeds >= 100:  # crashes between the records and the apply
        assert recovered > 0, "no run recovered a batch at restart"


@pytest.mark.parametrize("shape", ["sim", "cluster"])
def test_negative_control_two_colluding_replicas_break_uniqueness(shape: str) -> None:
    """f+1 = 2 faulty in n = 4 show honest replicas different orders: conflicting spends get
    signed by different honest replicas, and the uniqueness checker must say so."""
    seeds, wide = 40, shape == "cluster"
    runs = (run_notary(s, "colluding", cluster_shape=wide) for s in range(seeds))
    caught = [r for r in runs if _uniqueness(r)]
    assert len(caught) >= seeds // 2, f"only {len(caught)}/{seeds} colluding runs flagged"
    assert any(v.startswith("double spend") for r in caught for v in r.violations)


def test_negative_control_a_decision_that_forgets_the_spent_set_is_caught() -> None:
    seeds = 20
    caught = [
        r
        for r in (run_notary(s, "network", broken=True) for s in range(seeds))
        if any(v.startswith("double spend") for v in r.violations)
    ]
    assert len(caught) == seeds, _report([r for r in caught][:3])


def test_a_notary_run_replays_exactly() -> None:
    first = run_notary(11, "network", trace=True)
    second = run_notary(11, "network", trace=True)
    assert first.trace == second.trace and any(" signs " in line for line in first.trace)
    assert "--seed 11 --behaviour network" in first.replay_command()
