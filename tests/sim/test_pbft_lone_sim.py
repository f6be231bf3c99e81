"""Lone requests (the stand-in for config updates) under every tolerated behaviour (tier 3).

Every fourth request of a run is lone (`Keys.lone`): the replicas' `alone` rule must decide it
in a batch of its own and order nothing after it before it executed, whatever the network and
the faulty replica do — including `mixing-primary`, a primary that slips another request into
the lone one's batch. Checked by `check_alone` next to agreement, validity, no duplicates and
liveness after the heal. Negative control: backups that do not refuse a mixed batch let the
mixing primary's batches through, and the checker sees them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from dltmw.core.pbft.certs import Checker
from dltmw.sim.byzantine import BEHAVIOURS
from dltmw.sim.runner import RunResult, run

SEEDS = 30
TOLERATED = sorted(b for b in BEHAVIOURS if b != "colluding")


def _report(results: Sequence[RunResult]) -> str:
    return "\n".join(f"{r.verdict()}\n    replay: {r.replay_command()}" for r in results)


@pytest.mark.parametrize("behaviour", TOLERATED)
def test_lone_requests_are_decided_alone_and_everything_stays_live(behaviour: str) -> None:
    failures = []
    for seed in range(SEEDS):
        result = run(seed, behaviour, lone_every=4)
        if result.violations or not result.live:
            failures.append(result)
    assert not failures, _report(failures)


def test_negative_control_backups_that_accept_a_mixed_batch_are_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Checker.batch_error

    def lenient(self: Checker, digest: bytes, requests: Sequence[bytes]) -> str | None:
        return original(dataclasses.replace(self, alone=lambda _r: False), digest, requests)

    monkeypatch.setattr(Checker, "batch_error", lenient)
    results = [run(seed, "mixing-primary") for seed in range(10)]
    caught = [r for r in results if any(v.startswith("alone:") for v in r.violations)]
    assert len(caught) >= 8, _report(results)
