"""A peer whose Deliver source withholds blocks follows another orderer; forged headers make it
switch nowhere (tier 3, production nodes under virtual time; `dltmw/sim/scenarios/withhold.py`).

`pbft-withhold`: orderer.a, which both peers follow, orders correctly but its Deliver streams
send no block past block 0; nothing asks the peers for a newer block. Every transaction must be
answered VALID and both peers must catch up within the censorship timeout plus a bound, each by
leaving orderer.a (`CensorWatch.switches`). Negative control: with the monitor off
(`censorship_timeout_s = 0`) the peers stay at block 0 and no transaction is answered — the
stale peer of the issue. `pbft-forged-headers`: orderer.b, the orderer the monitors watch, shows
forged headers far ahead: no peer switches, each counts the forgery, everything commits.
"""

from __future__ import annotations

import pytest

from dltmw.runtime.config_file import CENSORSHIP_TIMEOUT_S
from dltmw.sim import vloop
from dltmw.sim.scenarios import withhold

from .flow_runs import quiet_nodes, report, run_seeds, seeds

pytestmark = pytest.mark.soak
QUICK_SEEDS = 3


def test_peers_leave_a_withholding_orderer_and_catch_up() -> None:
    results = run_seeds("pbft-withhold", seeds(QUICK_SEEDS))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"
    bound_ms = 1000 * (withhold.OPS_UNTIL_S + CENSORSHIP_TIMEOUT_S + withhold.CATCH_UP_BOUND_S)
    for r in results:
        assert r.summary["acked"] == withhold.OPS and r.summary["switches"] >= 2
        assert 0 < r.summary["caught_up_ms"] <= bound_ms


def test_negative_control_without_the_monitor_the_peers_stay_stale() -> None:
    with quiet_nodes():
        result = vloop.run(1, lambda: withhold.run(1, "withhold", monitor=False))
    assert not result.ok
    assert result.summary["acked"] == 0 and result.summary["failed"] == withhold.OPS
    assert result.summary["switches"] == 0 and result.summary["caught_up_ms"] < 0


def test_forged_headers_switch_nothing() -> None:
    results = run_seeds("pbft-forged-headers", seeds(QUICK_SEEDS))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"
    for r in results:
        assert r.summary["switches"] == 0 and r.summary["forged"] >= 2
        assert r.summary["acked"] == withhold.OPS
