"""Crash points right before a step that delivers slots (tier 3, `sim/slot_crash_world.py`).

Honest replicas crash before such a step's writes (its records, slots and sends lost together)
and restart from their records: safe, live, every batch available and in the chain once — and
red when a restart forgets the records of the steps that delivered slots. The runs found an
honest replica refusing for good a batch its next slot needed, below the per-origin floor of a
faulty origin that formed its batches out of order (seed 5, carried-equivocation, red without
the fix): `Disseminator.on_batch` lets a needed batch pass the floor now.
"""

from __future__ import annotations

import pytest

from dltmw.sim.dissem_runner import run_dissemination
from dltmw.sim.slot_crash_world import SlotCrashWorld

from .recorded_worlds import recording


def _worlds(monkeypatch: pytest.MonkeyPatch, forget: bool = False) -> list[SlotCrashWorld]:
    return recording(monkeypatch, SlotCrashWorld, forget_slot_steps=forget)


@pytest.mark.parametrize("behaviour", ["honest", "network", "carried-equivocation"])
@pytest.mark.parametrize("seed", range(6))
def test_a_replica_crashing_before_a_step_that_delivers_slots_loses_nothing(
    seed: int, behaviour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _worlds(monkeypatch)
    result = run_dissemination(seed, behaviour, retain=8, crash="slot")
    assert not result.violations and result.live, result.verdict()
    assert made[-1].crashes > 0


def test_negative_control_a_restart_that_forgets_those_steps_records_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break recovery: a restart without the records of the steps that delivered slots. The
    checkers see it."""
    _worlds(monkeypatch, forget=True)
    caught = [run_dissemination(seed, "honest", retain=8, crash="slot") for seed in (2, 3, 4)]
    assert all(r.violations for r in caught), [r.verdict() for r in caught]
