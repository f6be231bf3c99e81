"""A PBFT-lite primary that censors, or is cut off from the backups, does not halt the channel
(issue 18), on the production nodes under virtual time (tier 3).

`pbft-censor` and `pbft-cut-off` (`dltmw/sim/scenarios/censor.py`): view 0's primary, which
both gateways ask first, admits every transaction and never gets it ordered — it censors
(TEST-ONLY `CensorHook`), or it is partitioned from the three backups while the gateways still
reach it. Every transaction must be answered VALID while that lasts, after a view change, with
one chain everywhere and every acknowledged transaction on it exactly once where its client
was told. Negative control: with the gateways' ordering deadline switched off
(`ordering_deadline_s = 0`) nothing commits and no view change comes — the stall of the issue.
"""

from __future__ import annotations

import pytest

from dltmw.sim import vloop
from dltmw.sim.scenarios import censor

from .flow_runs import quiet_nodes, report, run_seeds, seeds

pytestmark = pytest.mark.soak
QUICK_SEEDS = 3


@pytest.mark.parametrize("scenario", ["pbft-censor", "pbft-cut-off"])
def test_transactions_commit_after_a_view_change_replaces_the_primary(scenario: str) -> None:
    results = run_seeds(scenario, seeds(QUICK_SEEDS))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"
    assert all(r.summary["acked"] == censor.OPS for r in results)
    assert all(r.summary["view"] >= 1 for r in results)


@pytest.mark.parametrize("mode", censor.MODES)
def test_without_the_ordering_deadline_nothing_commits(mode: str) -> None:
    with quiet_nodes():
        result = vloop.run(1, lambda: censor.run(1, mode, deadline_s=0))
    assert not result.ok
    assert result.summary["acked"] == 0 and result.summary["failed"] == censor.OPS
    assert result.summary["view"] == 0
