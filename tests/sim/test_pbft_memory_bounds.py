"""A disseminating replica's memory is bounded by its windows, not by the chain (issue 18 item 4).

A PBFT-lite orderer runs for good: whatever its core keeps per slot, per batch or per envelope
must be forgotten at a window edge the core decides (`recent.Recent` for de-duplication,
`decided_retain` slots of used batches, `expiry` slots of unordered and shadowed batches, a few
assembled slots), or a long-running orderer dies of memory. A simulated run of many windows
(`RETAIN` = 16 slots, runs of ~70 slots) samples every correct replica's core every few ticks
and checks each such structure against its cap. Honest runs, and runs with an equivocating
origin: before `Disseminator.shadowed`, the other digest of every equivocated batch key stayed
in every correct replica's store for good (this test: stored batches neither own, counted,
shadowed nor in a retained slot).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from dltmw.core.pbft import disseminating
from dltmw.core.pbft.availability import CACHE_GENERATION, BatchKey, expiry_slots
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.sim import dissem_runner
from dltmw.sim.dissem_runner import run_dissemination
from dltmw.sim.dissem_world import SIM_DISSEMINATION, DissemWorld

RETAIN = 16
SAMPLE_EVERY = 5  # ticks


@dataclass
class Sampled:
    """What the samples saw: the largest size of each structure, and the stray stored batches."""

    largest: dict[str, int] = field(default_factory=dict)
    stray: list[tuple[int, int, BatchKey]] = field(default_factory=list)
    samples: int = 0

    def note(self, name: str, size: int) -> None:
        self.largest[name] = max(self.largest.get(name, 0), size)


def _sample(core: DisseminatingReplica, tick: int, seen: Sampled) -> None:
    d, r = core.disseminator, core.replica
    seen.samples += 1
    seen.note("executed_ids sequences", len(r.executed_ids._by_seq))
    seen.note("delivered_ids sequences", len(core.resolver.delivered_ids._by_seq))
    seen.note("included sequences", len(core.resolver.included._by_seq))
    seen.note("used slots", len(core._used))
    seen.note("assembled slots", len(core._assembled))
    seen.note("decided batches", len(r.decided))
    seen.note("slots", len(r.slots))
    seen.note("prepared", len(r.prepared))
    seen.note("state_at", len(r.state_at))
    seen.note("checkpoints", len(r.checkpoints))
    seen.note("commit_certificates", len(r.commit_certificates))
    seen.note("certificate verdicts", len(core.rule))
    seen.note("unordered per origin", max(d.per_origin.values(), default=0))
    seen.note("shadowed", sum(len(v) for v in d.shadowed.values()))
    # Every stored batch is accounted for by one bounded structure.
    used = {kd for batches in core._used.values() for kd in batches}
    counted = {(k, g) for k, digests in d.unordered.items() for g in digests}
    shadowed = {(k, g) for k, digests in d.shadowed.items() for g in digests}
    for key, digest in d.stored:
        own = key.origin == core.me and key.batch_sequence in d.own
        if not own and (key, digest) not in used | counted | shadowed:
            seen.stray.append((tick, core.me, key))


@pytest.fixture
def sampled(monkeypatch: pytest.MonkeyPatch) -> Sampled:
    """Every run's correct cores sampled every `SAMPLE_EVERY` ticks."""
    seen = Sampled()

    class Sampling(DissemWorld):
        ticks = 0

        def tick(self) -> None:
            super().tick()
            self.ticks += 1
            if self.ticks % SAMPLE_EVERY:
                return
            faulty = self.behaviour.faulty
            for index in range(len(self.nodes)):
                core = self.core(index)
                if core is not None and index not in faulty:
                    _sample(core, self.ticks, seen)

    monkeypatch.setattr(dissem_runner, "DissemWorld", Sampling)
    return seen


@pytest.mark.parametrize(
    ("seed", "behaviour"),
    [(0, "honest"), (1, "honest"), (0, "equivocating-batch"), (1, "carried-equivocation")],
)
def test_a_replicas_memory_stays_within_its_windows_over_a_long_run(
    sampled: Sampled, seed: int, behaviour: str
) -> None:
    result = run_dissemination(seed, behaviour, requests=300, retain=RETAIN)
    assert not result.violations and result.live, result.verdict()
    assert result.decided > 3 * RETAIN  # the windows turned over several times
    assert sampled.samples > 50
    assert not sampled.stray, f"stored batches nothing bounds: {sampled.stray[:5]}"
    config = dissem_runner.replica_config(4)
    expiry = expiry_slots(RETAIN)
    caps = {
        "executed_ids sequences": RETAIN,
        "delivered_ids sequences": RETAIN,
        "included sequences": expiry,
        "used slots": RETAIN,
        "assembled slots": disseminating.ASSEMBLED_KEPT + 1,
        "decided batches": RETAIN + config.window,  # pruned at stable checkpoints
        "slots": config.window,
        "prepared": config.window,
        "state_at": config.window + 1,
        "checkpoints": config.window // config.checkpoint_interval + 1,
        "commit_certificates": config.window,
        "certificate verdicts": 2 * CACHE_GENERATION,
        "unordered per origin": SIM_DISSEMINATION.stored_per_origin_max,
        # an equivocating origin's other digests, each for at most `expiry` slots
        "shadowed": expiry * config.batch_size_max * 4,
    }
    over = {k: (sampled.largest[k], cap) for k, cap in caps.items() if sampled.largest[k] > cap}
    assert not over, f"over their caps (largest seen, cap): {over}"
