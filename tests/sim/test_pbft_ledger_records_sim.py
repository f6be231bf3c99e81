"""Crash points at an orderer's records written with its block (tier 3).

A step's records are written in the transaction of the block it commits (`ledger/pbft_store.py`);
`LedgerRecordsWorld` crashes honest replicas right before such a write (records, slots and sends
lost together) and restarts them from their records. Safe, live, every batch available and in
the chain once — and red when a restart forgets the records written with a block. The runs found
an honest replica refusing for good a batch its next slot needed, below the per-origin floor
of a faulty origin that formed its batches out of order (seed 5, carried-equivocation):
`Disseminator.on_batch` lets a needed batch pass the floor now.
"""

from __future__ import annotations

import pytest

from dltmw.sim import dissem_runner
from dltmw.sim.dissem_runner import run_dissemination
from dltmw.sim.ledger_records_world import LedgerRecordsWorld


def _worlds(monkeypatch: pytest.MonkeyPatch, forget: bool = False) -> list[LedgerRecordsWorld]:
    made: list[LedgerRecordsWorld] = []

    class Recording(LedgerRecordsWorld):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.forget_with_block = forget
            made.append(self)

    monkeypatch.setattr(dissem_runner, "DissemWorld", Recording)
    return made


@pytest.mark.parametrize("behaviour", ["honest", "network", "carried-equivocation"])
@pytest.mark.parametrize("seed", range(6))
def test_a_replica_crashing_between_its_record_file_and_its_block_loses_nothing(
    seed: int, behaviour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _worlds(monkeypatch)
    result = run_dissemination(seed, behaviour, retain=8)
    assert not result.violations and result.live, result.verdict()
    assert made[-1].crashes > 0


def test_negative_control_a_restart_that_forgets_the_ledgers_records_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Break recovery: a restart reads the record file only. The checkers see it."""
    _worlds(monkeypatch, forget=True)
    caught = [run_dissemination(seed, "honest", retain=8) for seed in (2, 3, 4)]
    assert all(r.violations for r in caught), [r.verdict() for r in caught]
