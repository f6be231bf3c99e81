"""One seeded simulation run: workload, faults, heal, then the checkers' verdict.

A run submits a few dozen client requests during a fault phase (byzantine behaviour plus, in
"network" mode, drops, duplicates, delays/reordering, symmetric and one-way partitions and a
crash/restart of one replica), heals the network and restarts anything down at `HEAL_AT`, and
then requires every request decided by every honest replica within `LIVENESS_BOUND` ticks.
`python -m dltmw.sim --seed N --behaviour B` replays exactly one run and prints its trace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from dltmw.core.pbft import PbftConfig
from dltmw.sim.byzantine import BEHAVIOURS
from dltmw.sim.checkers import check_alone, check_safety, missing
from dltmw.sim.collector_byzantine import COLLECTOR_BEHAVIOURS
from dltmw.sim.keys import Keys
from dltmw.sim.world import World

HEAL_AT = 150
SUBMIT_UNTIL = 100
LIVENESS_BOUND = 900
LONE_EVERY = 4
REQUESTS = 24  # requests a run submits unless told otherwise


def sim_config(n: int) -> PbftConfig:
    """Small parameters so that one run costs milliseconds."""
    return PbftConfig(
        n=n,
        checkpoint_interval=4,
        batch_size_max=4,
        view_change_timeout_ticks=30,
        request_timeout_ticks=40,
        retransmit_ticks=12,
        probe_ticks=20,
        backoff_exponent_max=3,
        future_per_peer_max=64,
        transfer_batches_max=8,
        decided_retain=64,
    )


@dataclass(frozen=True)
class RunResult:
    """The verdict of one run."""

    seed: int
    behaviour: str
    n: int
    violations: tuple[str, ...]
    lacking: tuple[str, ...]
    ticks: int
    decided: int
    trace: tuple[str, ...]
    drops: dict[str, int]
    max_view: int
    collector: bool = False
    # The command-line arguments that make this very run (`replay_command`); empty: the ones
    # `seed`, `behaviour`, `n` and `collector` give. A runner with more settings fills it.
    args: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        """Every request decided by every honest replica after the heal."""
        return not self.lacking

    def replay_command(self) -> str:
        """The command that replays this run (`python -m dltmw.sim`: the same trace)."""
        if self.args:
            return "python -m dltmw.sim " + " ".join(self.args)
        flag = " --collector" if self.collector else ""
        return (
            f"python -m dltmw.sim --seed {self.seed} --behaviour {self.behaviour} --n {self.n}"
            + flag
        )

    def verdict(self) -> str:
        """One readable line."""
        safety = "; ".join(self.violations) or "ok"
        live = "ok" if self.live else "; ".join(self.lacking)
        return (
            f"seed={self.seed} behaviour={self.behaviour} n={self.n} ticks={self.ticks} "
            f"decided={self.decided} safety: {safety} liveness: {live}"
        )


def network_faults(world: World) -> None:
    """Schedule random network faults and one crash/restart for the fault phase."""
    rng, n, net = world.rng, world.config.n, world.net
    net.faults.drop, net.faults.duplicate = 0.1, 0.05
    net.faults.delay_min, net.faults.delay_max = 1, 6
    for _ in range(rng.randint(1, 3)):
        start = rng.randrange(1, HEAL_AT - 20)
        victim, one_way = rng.randrange(n), rng.random() < 0.5
        others = [i for i in range(n) if i != victim]

        def cut(v: int = victim, w: bool = one_way, o: list[int] = others) -> None:
            world.log(f"partition r{v} {'one-way' if w else 'symmetric'}")
            net.isolate(v, o, one_way=w)

        def mend(v: int = victim, o: list[int] = others) -> None:
            world.log(f"partition of r{v} healed")
            net.faults.blocked -= {(v, x) for x in o} | {(x, v) for x in o}

        world.at(start, cut)
        world.at(min(HEAL_AT - 1, start + rng.randint(10, 60)), mend)
    node = world.nodes[rng.randrange(len(world.nodes))]
    crash_at = rng.randrange(5, HEAL_AT - 30)
    lose = rng.random() < 0.5
    world.at(crash_at, lambda: world.crash(node, lose_sends=lose))
    world.at(crash_at + rng.randint(5, 60), lambda: world.restart(node))


def heal(world: World) -> None:
    """Remove every network fault and restart crashed replicas (the start of the healed phase)."""
    world.log("heal: network faults removed, crashed replicas restarted")
    world.net.heal()
    for node in world.nodes:
        world.restart(node)


def schedule(world: World, behaviour: str, requests: int, lone_every: int) -> None:
    """The run's script: `requests` submissions at random ticks before `SUBMIT_UNTIL` (every
    `lone_every`-th a lone one), the faults of `behaviour` ("network": random ones), the heal."""
    for counter in range(requests):
        client = counter % 2
        lone = lone_every > 0 and counter % lone_every == lone_every - 1

        def submit(c: int = client, k: int = counter, alone: bool = lone) -> None:
            world.submit(c, k, lone=alone)

        world.at(world.rng.randrange(1, SUBMIT_UNTIL), submit)
    if behaviour == "network":
        network_faults(world)
    else:
        world.net.faults.delay_max = 3
    world.at(HEAL_AT, lambda: heal(world))


def drive(world: World, done: Callable[[], bool]) -> None:
    """Tick until `done()` after the heal (checked every 5 ticks), at most `LIVENESS_BOUND`
    ticks past it."""
    while world.now < HEAL_AT + LIVENESS_BOUND:
        world.tick()
        if world.now > HEAL_AT and world.now % 5 == 0 and done():
            break


def run(
    seed: int,
    behaviour: str = "network",
    n: int = 4,
    requests: int = REQUESTS,
    trace: bool = False,
    lone_every: int = 0,
    retain: int | None = None,
    collector: bool = False,
) -> RunResult:
    """Run one seeded simulation and check it; with `lone_every` k (> 0), every k-th request is
    a lone one (ordered in a batch of its own, like a config update; `mixing-primary` always
    submits some); `retain`: decided slots kept (small: compaction within a run, and replicas
    stranded beyond it catch up by blocks, `block_catchup`); `collector`: the replicas use a
    vote collector (`core/pbft/collector.py`), needed by the behaviours of a faulty one."""
    config = replace(sim_config(n), collector=collector)
    if retain is not None:
        config = replace(config, decided_retain=retain)
    behaviours = BEHAVIOURS | COLLECTOR_BEHAVIOURS
    world = World(seed, config, behaviours[behaviour](), clients=2, trace=trace)
    if behaviour == "mixing-primary":
        lone_every = lone_every or LONE_EVERY
    schedule(world, behaviour, requests, lone_every)
    drive(world, world.all_done)
    honest = world.honest()
    violations = tuple(
        check_safety(honest, world.submitted, world.config.decided_retain)
        + check_alone(honest, Keys.lone)
    )
    lacking = tuple(missing(honest, world.submitted)) if not violations else ()
    decided = max((len(node.decided) for node in honest), default=0)
    lines = tuple(world.trace or ())
    drops: Counter[str] = Counter()
    for node in honest:
        if node.replica is not None:
            drops.update(node.replica.counters)
    max_view = max((node.replica.view for node in honest if node.replica), default=0)
    return RunResult(
        seed,
        behaviour,
        n,
        violations,
        lacking,
        world.now,
        decided,
        lines,
        dict(drops),
        max_view,
        collector,
        replay_args(
            seed, behaviour, n, requests, lone_every, retain, ["--collector"] if collector else []
        ),
    )


def replay_args(
    seed: int,
    behaviour: str,
    n: int,
    requests: int,
    lone_every: int,
    retain: int | None,
    flags: list[str],
) -> tuple[str, ...]:
    """`python -m dltmw.sim`'s arguments for a run of these settings (defaults left out)."""
    args = ["--seed", str(seed), "--behaviour", behaviour, "--n", str(n)]
    if requests != REQUESTS:
        args += ["--requests", str(requests)]
    if lone_every:
        args += ["--lone-every", str(lone_every)]
    if retain is not None:
        args += ["--retain", str(retain)]
    return tuple(args + flags)
