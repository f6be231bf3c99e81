"""Deterministic simulation of PBFT-lite (tier 3): seeded runs per byzantine behaviour.

Every run submits a few dozen requests during a fault phase, heals, and is then checked:
agreement, validity, no duplicates (safety) and every request decided by every honest replica
within the liveness bound. A failure names the exact command that replays it. The seed count
per behaviour is 500 (override with DLTMW_SIM_SEEDS for a quicker local loop).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from dltmw.sim import world as world_module
from dltmw.sim.byzantine import BEHAVIOURS
from dltmw.sim.runner import RunResult, run

SEEDS = int(os.environ.get("DLTMW_SIM_SEEDS", "500"))
TOLERATED = sorted(b for b in BEHAVIOURS if b != "colluding")

# Proof that each behaviour really happened: what honest replicas must have seen in (nearly)
# every run. Without it a broken fault injector would pass as "no violation".
EXERCISED: dict[str, Callable[[RunResult], bool]] = {
    "network": lambda r: sum(r.drops.values()) > 0,
    "silent-primary": lambda r: r.max_view > 0,
    "equivocating-primary": lambda r: r.max_view > 0,
    "forged-signatures": lambda r: r.drops.get("bad-signature-or-malformed", 0) > 0,
    "wrong-view-or-sequence": lambda r: sum(r.drops.values()) > 0,
    "replay-old-view": lambda r: r.drops.get("old-view", 0) > 0 and r.max_view > 0,
    "double-vote": lambda r: r.drops.get("double-vote", 0) > 0,
    "twins": lambda r: r.drops.get("equivocating-primary", 0) > 0 or r.max_view > 0,
    "mixing-primary": lambda r: r.drops.get("batch-mixes-a-lone-request", 0) > 0 and r.max_view > 0,
    "lost-checkpoint-votes": lambda r: r.drops.get("checkpoint-vote-resent", 0) > 0,
    "junk-primary": lambda r: (
        r.drops.get("batch-with-inadmissible-request", 0) > 0
        and r.drops.get("inadmissible-request", 0) > 0
        and r.max_view > 0
    ),
}


def _report(results: list[RunResult]) -> str:
    return "\n".join(f"{r.verdict()}\n    replay: {r.replay_command()}" for r in results)


@pytest.mark.parametrize("behaviour", TOLERATED)
def test_no_violation_and_progress_after_heal(behaviour: str) -> None:
    failures: list[RunResult] = []
    decided = exercised = view_changes = 0
    for seed in range(SEEDS):
        result = run(seed, behaviour)
        decided += result.decided
        exercised += EXERCISED[behaviour](result)
        view_changes += result.max_view > 0
        if result.violations or not result.live:
            failures.append(result)
            if len(failures) >= 5:
                break
    assert not failures, f"{len(failures)}+ failing runs:\n{_report(failures)}"
    assert decided > 0
    assert exercised >= 0.9 * SEEDS, f"{behaviour} visible in only {exercised}/{SEEDS} runs"
    if behaviour == "network":
        assert view_changes >= SEEDS // 4, "network faults never forced a view change"


def test_seven_replicas_tolerate_network_faults() -> None:
    failures = [r for r in (run(seed, "network", n=7) for seed in range(40)) if not r.live]
    failures += [r for r in (run(seed, "silent-primary", n=7) for seed in range(40)) if not r.live]
    assert not failures, _report(failures[:5])


def test_negative_control_two_colluding_replicas_are_caught() -> None:
    """With f+1 = 2 faulty replicas in n = 4 the guarantees may break: the checkers must see it."""
    seeds = 60
    caught = [
        r for r in (run(seed, "colluding") for seed in range(seeds)) if r.violations or not r.live
    ]
    assert len(caught) >= seeds // 2, f"only {len(caught)}/{seeds} colluding runs flagged"
    assert any(v.startswith("agreement") for r in caught for v in r.violations)


def test_a_run_replays_exactly() -> None:
    first, second = run(7, "network", trace=True), run(7, "network", trace=True)
    assert first.trace == second.trace and first.trace
    assert "--seed 7 --behaviour network --n 4" in first.replay_command()


@pytest.mark.parametrize("seed", [43, 97, 147])
def test_a_replica_stranded_beyond_the_retention_catches_up_by_blocks(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 8 decided slots retained, these seeds' crashed replica comes back further behind
    than any peer retains: it jumps over blocks fetched from a peer (`sim/block_catchup.py`,
    `core/pbft/jump.py`) and the run stays safe and live (seeds 0-139 checked: all safe and
    live; 30, 97, 102 and 117 jump — re-chosen when votes younger than a retransmission pass
    stopped being resent, which changed the schedule of 3 and 11). Without the catch-up
    model they are not live. Re-chosen again when the periodic probe was left to replicas
    that stalled (`Checkpoints.probe_if_stalled`): of 0-139 (all safe and live) 50, 82 and
    97 jump. Re-chosen again when stalled replicas started to send their checkpoint votes
    again (branch probe60, `Checkpoints.resend_checkpoints`; 50 and 82 no longer jump): a
    bounded scan of 0-299, every seed safe and live, 43, 97, 147 and 181 jump."""
    result = run(seed, "network", requests=150, retain=8)
    assert not result.violations and result.live, result.verdict()
    assert result.drops.get("jumped", 0) > 0
    monkeypatch.setattr(world_module, "catch_up", lambda _world: None)
    assert not run(seed, "network", requests=150, retain=8).live
