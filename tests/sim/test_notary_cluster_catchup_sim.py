"""Deterministic simulation (tier 3): a notary-cluster member that lags far beyond what its peers
keep in memory catches up from their durable records.

Members keep only the last `decided_kept` decided batches in memory (issue 18: ~20 MiB per member
at 1,024); the `decided_retain` window stays in their records. One member is down while the
cluster decides many more batches than that, then restarts: its catch-up asks for batches its
peers no longer hold in memory, which they read back from their records (`DecidedFromStore`,
answered in `World.read_decided`). Every run must end with the laggard having decided and
applied every spend, like the others. Negative control: with the durable path disabled
(`store_reads_off`) the laggard never catches up — the test of the mechanism can fail.
"""

from __future__ import annotations

from dataclasses import replace

from dltmw.sim import runner
from dltmw.sim.byzantine import BEHAVIOURS
from dltmw.sim.checkers import check_safety, missing
from dltmw.sim.notary_cluster import NotaryWorld, check_uniqueness

SEEDS = 20
REQUESTS = 40
LAGGARD = 3
CONFIG = replace(runner.sim_config(4), batch_size_max=1, decided_kept=2)


def _run(seed: int, store_reads_off: bool = False) -> tuple[NotaryWorld, list[str]]:
    """Member r3 down from tick 1 to HEAL_AT while 40 spends are decided one per batch."""
    world = NotaryWorld(seed, CONFIG, BEHAVIOURS["network"]())
    world.store_reads_off = store_reads_off
    world.net.faults.delay_max = 3
    laggard = world.nodes[LAGGARD]
    world.at(1, lambda: world.crash(laggard))
    for counter in range(REQUESTS):

        def submit(c: int = counter % 2, k: int = counter) -> None:
            world.submit(c, k, replica=k % LAGGARD)  # to the live members

        world.at(world.rng.randrange(2, runner.SUBMIT_UNTIL), submit)
    world.at(runner.HEAL_AT, lambda: world.restart(laggard))
    world.run_until_done()
    honest = world.honest()
    problems = check_safety(honest, world.submitted, CONFIG.decided_retain)
    problems += check_uniqueness(world)
    problems += missing(honest, world.submitted)
    return world, problems


def test_a_member_behind_the_memory_window_catches_up_from_the_records() -> None:
    for seed in range(SEEDS):
        world, problems = _run(seed)
        assert not problems, f"seed {seed}: {problems}"
        laggard, peer = world.nodes[LAGGARD], world.nodes[0]
        assert laggard.replica is not None and peer.replica is not None
        # the peers held far fewer batches in memory than the laggard needed ...
        assert len(peer.replica.decided) <= CONFIG.decided_kept + CONFIG.checkpoint_interval
        assert laggard.decided[0].sequence == 1, f"seed {seed}: the laggard skipped batches"
        assert laggard.replica.next_exec > 4 * CONFIG.decided_kept
        # ... and served the rest from their records; the laggard applied every batch
        assert world.store_reads > 0
        applied = {world.notary[n.name].applied for n in world.honest()}
        assert len(applied) == 1, f"seed {seed}: spent-sets at {applied}"


def test_negative_control_without_the_records_the_laggard_stays_behind() -> None:
    for seed in range(5):
        world, problems = _run(seed, store_reads_off=True)
        assert world.store_reads == 0
        assert any(f"r{LAGGARD}" in p for p in problems), f"seed {seed}: {problems}"
