"""A replica restarted behind a busy cluster catches up without a view change of its own (tier 3).

The story of the notary cluster's kill -9 cycles (`tests/integration/test_crash_cycles.py`): one
backup is down while the others keep deciding, restarts far behind, and at once receives client
requests (clients ask several members; backups relay what they admit to every replica). It
forwards them to the primary, which orders them at sequences the restarted replica reaches only
by state transfer, a few batches per round trip, while the cluster keeps moving. Its request
timer must not blame the primary for its own lag: if it did, it would ask alone for view 1, no
other replica would follow (f+1 are needed), and it would climb views alone and refuse every
view-0 message from then on — out of the cluster, though nothing is wrong with the primary.

Parameters are those of the notary cluster (`runtime/roles/notary/cluster.cluster_config`:
two slots of four wraps) and its earlier ones (four slots of two); one message takes 2-3 ticks
(a round trip about 100-150 ms at its 50 ms tick).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from dltmw.core.pbft import PbftConfig
from dltmw.sim.checkers import check_safety, missing
from dltmw.sim.world import World

CONFIG = PbftConfig(
    n=4,
    checkpoint_interval=1,
    batch_size_max=4,
    view_change_timeout_ticks=40,
    request_timeout_ticks=40,
    retransmit_ticks=10,
    probe_ticks=20,
    transfer_batches_max=4,
    decided_retain=1024,
)
CONFIGS = {"2x4": CONFIG, "4x2": replace(CONFIG, checkpoint_interval=2, batch_size_max=2)}
CRASH_AT, RESTART_AT, LOAD_UNTIL, END = 10, 250, 450, 900
VICTIM = 1


def run_restart_under_load(seed: int, config: PbftConfig = CONFIG) -> tuple[World, int]:
    """One request every other tick (half what the cluster can order) to the primary and the
    other backups, one in four to the victim once it is back; the victim is down from CRASH_AT
    to RESTART_AT; the load stops at LOAD_UNTIL and the run settles until END. Returns the
    world and how many batches the victim was behind the furthest replica at its restart."""
    world = World(seed, config, trace=True)
    world.net.faults.delay_min, world.net.faults.delay_max = 2, 3
    victim = world.nodes[VICTIM]
    world.at(CRASH_AT, lambda: world.crash(victim))
    lag: list[int] = []

    def restart() -> None:
        world.restart(victim)
        ahead = max(n.replica.next_exec for n in world.nodes if n.replica is not None)
        lag.append(ahead - victim.replica.next_exec if victim.replica is not None else 0)

    world.at(RESTART_AT, restart)
    counter = 0
    while world.now < END:
        if world.now < LOAD_UNTIL and world.now % 2 == 0:
            up = victim.replica is not None
            target = world.rng.choice([0, 2, 3, VICTIM] if up else [0, 2, 3])
            world.submit(counter % 2, counter, target)
            counter += 1
        world.tick()
        if world.now > LOAD_UNTIL and world.all_done():
            break
    return world, lag[0]


@pytest.mark.parametrize("shape", sorted(CONFIGS))
@pytest.mark.parametrize("seed", range(5))
def test_a_replica_restarted_behind_a_busy_cluster_stays_in_its_view(seed: int, shape: str) -> None:
    config = CONFIGS[shape]
    world, lag = run_restart_under_load(seed, config)
    honest = world.honest()
    assert not check_safety(honest, world.submitted)
    victim = world.nodes[VICTIM]
    assert victim.replica is not None
    trace = "\n".join(line for line in world.trace or () if " view " in line)
    views = {n.name: n.replica.view for n in honest if n.replica is not None}
    assert views == {"r0": 0, "r1": 0, "r2": 0, "r3": 0}, f"views {views}:\n{trace}"
    # the story happened: the victim came back far behind and could not vote until caught up
    assert lag >= 16 * config.window, lag
    assert victim.replica.counters["outside-watermarks"] > 0
    assert not missing(honest, world.submitted), "not every request decided everywhere"
