"""Shared by the whole-network simulation tests: run seeds of a scenario, report, prove faults.

`run_seeds` runs a scenario over a seed range on the production nodes (`dltmw/sim/scenarios`),
stops after 5 failing runs, and returns the results; `exercised` counts the runs in which a
fault really happened (TigerBeetle's coverage marks: without them a broken fault injector
would pass as "no violation"). Counts come from `tiers.count`: the quick tier in `make test`,
ten times more in `make soak`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import grpc
from tiers import count, record

from dltmw.rpc.status import reason_of
from dltmw.sim import vloop
from dltmw.sim.deployment import Deployment
from dltmw.sim.scenarios import run_scenario
from dltmw.sim.scenarios.eov import topology
from dltmw.sim.scenarios.result import ScenarioResult

Mark = Callable[[ScenarioResult], bool]


@contextmanager
def quiet_nodes() -> Iterator[None]:
    """Node code logs every injected fault as a warning; a run is judged by its checkers."""
    root = logging.getLogger("dltmw")
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(level)


def run_seeds(scenario: str, seeds: range, stop_after: int = 5) -> list[ScenarioResult]:
    """Run `scenario` for each seed (until `stop_after` runs failed)."""
    results, failed = [], 0
    started = time.monotonic()
    with quiet_nodes():
        for seed in seeds:
            result = run_scenario(scenario, seed)
            results.append(result)
            failed += not result.ok
            if failed >= stop_after:
                break
    record(
        "sim-flow",
        scenario=scenario,
        runs=len(results),
        failed=failed,
        seconds=round(time.monotonic() - started, 1),
    )
    return results


def report(results: list[ScenarioResult]) -> str:
    """The failing runs, each with the command that replays it."""
    return "\n".join(
        f"{r.verdict()}\n    replay: {r.replay_command()}" for r in results if not r.ok
    )


def exercised(results: list[ScenarioResult], marks: dict[str, Mark]) -> dict[str, float]:
    """Share of runs in which each mark's fault really happened."""
    return {name: sum(mark(r) for r in results) / len(results) for name, mark in marks.items()}


def seeds(quick: int, soak: int | None = None) -> range:
    """The seed range of a scenario in this tier (`soak`, default 10x, in `make soak`)."""
    return range(count(quick, 10 * quick if soak is None else soak))


def outcome_on_eov_solo(body: Callable[[Deployment], Awaitable[str]], seed: int = 1) -> str:
    """`body`'s outcome on a fresh eov-solo deployment (two organisations, a solo orderer),
    a gRPC error as CODE/REASON; the deployment is stopped and removed either way."""

    async def main() -> str:
        dep = Deployment(topology("solo"))
        try:
            await dep.start()
            try:
                return await body(dep)
            except grpc.aio.AioRpcError as exc:
                return f"{exc.code().name}/{reason_of(exc)}"
        finally:
            await dep.stop()
            dep.remove()

    with quiet_nodes():
        return vloop.run(seed, main)
