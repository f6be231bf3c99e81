"""Deterministic simulation of PBFT-lite with a vote collector (`core/pbft/collector.py`).

Every behaviour of `test_pbft_sim.py` (but the all-to-all negative control) runs again with the
collector on, and so do the faulty collectors of `sim/collector_byzantine.py`: safety always,
every request decided by every honest replica after the heal. `collector-broken-check` is the
negative control: with the certificate check broken, a spoiling collector must be caught.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from dltmw.sim.byzantine import BEHAVIOURS
from dltmw.sim.collector_byzantine import COLLECTOR_BEHAVIOURS
from dltmw.sim.runner import RunResult, run

SEEDS = int(os.environ.get("DLTMW_SIM_SEEDS", "150"))
CONTROL = "collector-broken-check"
TOLERATED = sorted(b for b in BEHAVIOURS | COLLECTOR_BEHAVIOURS if b not in ("colluding", CONTROL))


def _refused(r: RunResult) -> bool:
    return r.drops.get("bad-prepared-certificate", 0) > 0 and r.max_view > 0


# Proof that a faulty collector's behaviour happened (what honest replicas saw).
EXERCISED: dict[str, Callable[[RunResult], bool]] = {
    "collector-withholds-prepared": lambda r: r.max_view > 0,
    "collector-too-few-votes": _refused,
    "collector-duplicated-votes": _refused,
    "collector-wrong-digest": _refused,
    "collector-equivocates": lambda r: r.max_view > 0,
    "collector-splits-committed": lambda r: r.drops.get("bad-commit-certificate", 0) > 0,
}


def _report(results: list[RunResult]) -> str:
    return "\n".join(f"{r.verdict()}\n    replay: {r.replay_command()}" for r in results)


@pytest.mark.parametrize("behaviour", TOLERATED)
def test_no_violation_and_progress_after_heal_with_a_collector(behaviour: str) -> None:
    results = [run(seed, behaviour, collector=True) for seed in range(SEEDS)]
    failures = [r for r in results if r.violations or not r.live]
    assert not failures, f"{len(failures)} failing runs:\n{_report(failures[:5])}"
    assert sum(r.decided for r in results) > 0
    exercised = sum(EXERCISED.get(behaviour, lambda _r: True)(r) for r in results)
    assert exercised >= 0.9 * SEEDS, f"{behaviour} visible in only {exercised}/{SEEDS} runs"


def test_seven_replicas_with_a_collector_tolerate_faults() -> None:
    behaviours = ("network", "silent-primary", "collector-wrong-digest")
    runs = [run(seed, b, n=7, collector=True) for b in behaviours for seed in range(30)]
    failures = [r for r in runs if r.violations or not r.live]
    assert not failures, _report(failures[:5])


def test_negative_control_a_broken_certificate_check_is_caught() -> None:
    """Backups that take a certificate's votes unverified decide what a faulty collector says."""
    seeds = 40
    caught = [r for r in (run(seed, CONTROL, collector=True) for seed in range(seeds))]
    caught = [r for r in caught if r.violations]
    assert len(caught) >= seeds // 2, f"only {len(caught)}/{seeds} runs flagged"
    assert any(v.startswith("agreement") for r in caught for v in r.violations)
