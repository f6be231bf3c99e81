"""Lost checkpoint votes in the simulator ("lost-checkpoint-votes", `sim/byzantine.py`).

Replica 3 is silent and the first copy of every checkpoint vote between replica 0 and replicas
1 and 2 is lost: no replica holds 2f+1 matching votes of a checkpoint unless a vote is sent
again. Before votes were resent (`Checkpoints.resend_checkpoints`) every run stopped at the top
of the first window (sequence 8 with the simulator's interval 4), view change after view change
(none carries a proof: nobody has one). Now every seed of 0-39 is safe and live, with and
without dissemination; the negative control (the resend off) is not live in any seed of 0-9.
"""

from __future__ import annotations

import pytest

from dltmw.core.pbft.checkpoints import Checkpoints
from dltmw.sim.dissem_runner import run_dissemination
from dltmw.sim.runner import RunResult, run

BEHAVIOUR = "lost-checkpoint-votes"


def _report(results: list[RunResult]) -> str:
    return "\n".join(f"{r.verdict()}\n    replay: {r.replay_command()}" for r in results)


@pytest.mark.parametrize("dissemination", [False, True])
def test_lost_checkpoint_votes_are_sent_again_and_every_seed_is_safe_and_live(
    dissemination: bool,
) -> None:
    results = [
        run_dissemination(seed, BEHAVIOUR) if dissemination else run(seed, BEHAVIOUR)
        for seed in range(40)
    ]
    failures = [r for r in results if r.violations or not r.live]
    assert not failures, _report(failures[:5])
    assert all(r.drops.get("checkpoint-vote-resent", 0) > 0 for r in results)
    assert all(r.decided > 8 for r in results)  # past the first window's top


@pytest.mark.parametrize("dissemination", [False, True])
def test_negative_control_without_the_resend_every_run_stops_at_the_window_top(
    dissemination: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Checkpoints, "resend_checkpoints", lambda _self: None)
    for seed in range(10):
        result = run_dissemination(seed, BEHAVIOUR) if dissemination else run(seed, BEHAVIOUR)
        assert not result.violations, result.verdict()
        assert not result.live and result.decided == 8, result.verdict()
