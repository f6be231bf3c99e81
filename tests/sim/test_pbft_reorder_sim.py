"""PBFT-lite honours `batch.reorder` in whole simulated networks (`sim/scenarios/reorder.py`).

`eov-pbft` under its faults on a channel with `reorder = true`, with dissemination (what
`dltmw init` sets) and without (the envelope path of older channels): one chain on every
replica and peer (the blocks are equal everywhere), exactly once, state == replay, and every
block in the rule's order — with deposits and the payments reading their accounts ordered into
one block in most runs (the `burst-in-one-block` mark), so the rule had something to reorder.

Negative control: the rule's calls replaced by arrival order (`Replica.propose`'s `reorder`,
`Disseminator.cut`'s `arrangement`) — `check_rule_order` catches the blocks in at least one
run; the same goes red if the calls are removed from the code.
"""

from __future__ import annotations

import pytest
from tiers import soak

import dltmw.core.pbft.dissemination
import dltmw.core.pbft.replica

from .flow_runs import exercised, report, run_seeds, seeds

pytestmark = [pytest.mark.soak, pytest.mark.timeout(None if soak() else 900)]
SCENARIOS = ("eov-pbft-reorder", "eov-pbft-envelopes-reorder")
QUICK_SEEDS = 6
MARKS = {"burst in one block": lambda r: r.counts.get("burst-in-one-block", 0) > 0}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_replica_commits_one_chain_of_blocks_in_the_rule_order(scenario: str) -> None:
    results = run_seeds(scenario, seeds(QUICK_SEEDS))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"
    shares = exercised(results, MARKS)
    assert all(share >= 0.5 for share in shares.values()), f"exercised: {shares}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_negative_control_arrival_order_is_caught(
    scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dltmw.core.pbft.replica, "reorder", list)
    monkeypatch.setattr(
        dltmw.core.pbft.dissemination, "arrangement", lambda batch: list(range(len(batch)))
    )
    results = run_seeds(scenario, seeds(QUICK_SEEDS), stop_after=1)
    caught = [r for r in results if any("reorder rule" in v for v in r.violations)]
    assert caught, "arrival order was not caught in any run"
