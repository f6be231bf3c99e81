"""One seeded run with dissemination on: workload, faults, heal, then the checkers' verdict.

The same shape as `runner.run` (requests submitted until `SUBMIT_UNTIL`, faults healed and
crashed replicas restarted at `HEAL_AT`, every request then decided by every honest replica
within `LIVENESS_BOUND` ticks), with `DissemWorld` cores and the dissemination behaviours
(`dissem_byzantine.py`); "network" adds the random drops, duplicates, delays, partitions and
a crash/restart of `runner.network_faults`. `enforce=False` is the negative control.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from dltmw.core.pbft.dissemination import DisseminationConfig
from dltmw.sim.checkers import check_alone, check_safety, missing
from dltmw.sim.dissem_byzantine import DISSEMINATION_BEHAVIOURS
from dltmw.sim.dissem_checks import (
    check_available,
    check_batches_once,
    check_one_batch_per_slot,
)
from dltmw.sim.dissem_world import SIM_DISSEMINATION, CarriedCrashWorld, DissemWorld
from dltmw.sim.keys import Keys
from dltmw.sim.runner import REQUESTS, RunResult, drive, replay_args, schedule
from dltmw.sim.runner import sim_config as replica_config
from dltmw.sim.slot_crash_world import SlotCrashWorld
from dltmw.sim.world import Behaviour

CRASH_WORLDS: dict[str, type[DissemWorld]] = {
    "carried": CarriedCrashWorld,  # crash right after storing the primary's carried batch
    "slot": SlotCrashWorld,  # crash right before a step that delivers slots
}
"""The worlds with crash points a run can use (`crash=`, `python -m dltmw.sim --crash`)."""


def assembled(world: DissemWorld) -> bool:
    """Every honest replica assembled every slot it decided (liveness includes fetching)."""
    return not check_available(world.honest())


def run_dissemination(
    seed: int,
    behaviour: str = "network",
    n: int = 4,
    requests: int = REQUESTS,
    trace: bool = False,
    enforce: bool = True,
    lone_every: int = 0,
    dissemination: DisseminationConfig = SIM_DISSEMINATION,
    retain: int | None = None,
    drained: bool = False,
    carried: bool = True,
    crash: str | None = None,
    slot_bound: bool = True,
) -> RunResult:
    """Run one seeded simulation with dissemination on and check it; with `lone_every` k > 0,
    every k-th request must be ordered alone (the stand-in for a config update); `carried`
    False: a group without carried batches (`PbftConfig.carried`), every batch acked; `crash`
    a name in `CRASH_WORLDS`: the world with those crash points; `slot_bound` False: the
    negative control of a behaviour that sets a bound of certificates per slot (its
    `slot_requests_max`, `SeveralCertificates`): the group runs without it."""
    world_kind = DissemWorld if crash is None else CRASH_WORLDS[crash]
    chosen = DISSEMINATION_BEHAVIOURS.get(behaviour, Behaviour)
    bound = getattr(chosen, "slot_requests_max", 0)
    config = replace(replica_config(n), carried=carried, slot_requests_max=bound * slot_bound)
    if retain is not None:  # decided slots kept: small makes compaction happen within a run
        config = replace(config, decided_retain=retain)
    world = world_kind(
        seed, config, chosen(), 2, trace, enforce, dissemination=dissemination, drained=drained
    )
    schedule(world, behaviour, requests, lone_every)
    drive(world, lambda: world.all_done() and assembled(world))
    honest = world.honest()
    violations = tuple(
        check_safety(honest, world.submitted, config.decided_retain)
        + check_available(honest)
        + check_batches_once(honest)
        + check_alone(honest, Keys.lone)
        + (check_one_batch_per_slot(honest) if bound == 1 else [])
    )
    lacking = tuple(missing(honest, world.submitted))
    decided = max((len(node.decided) for node in honest), default=0)
    drops: Counter[str] = Counter()
    for node in honest:
        if node.replica is not None:
            drops.update(node.replica.counters)
    max_view = max((node.replica.view for node in honest if node.replica), default=0)
    label = behaviour if enforce else f"{behaviour}/unchecked"
    label = label if carried else f"{label}/uncarried"
    label = label if crash is None else f"{label}/crash-{crash}"
    label = label if slot_bound or not bound else f"{label}/unbounded"
    flags = ["--dissemination"] + [
        flag
        for flag, on in (
            ("--unchecked", not enforce),
            ("--uncarried", not carried),
            ("--drained", drained),
            ("--unbounded", bool(bound) and not slot_bound),
        )
        if on
    ]
    if crash is not None:
        flags += ["--crash", crash]
    if dissemination != SIM_DISSEMINATION:  # not a command-line setting: say what to set
        flags += ["#", f"and dissemination={dissemination} (run_dissemination)"]
    return RunResult(
        seed,
        label,
        n,
        violations,
        lacking,
        world.now,
        decided,
        tuple(world.trace or ()),
        dict(drops),
        max_view,
        args=replay_args(seed, behaviour, n, requests, lone_every, retain, flags),
    )
