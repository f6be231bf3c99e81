"""The verdict of one scenario run, and how to replay it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dltmw.sim.deployment import Deployment


@dataclass(frozen=True)
class ScenarioResult:
    """What one seeded run of a scenario showed.

    `violations` are checker findings (safety, liveness after the heal, bugs such as a servicer
    raising); `counts` are the faults that really happened (the EXERCISED marks of the tests);
    `summary` is a few numbers for the reader.
    """

    scenario: str
    seed: int
    violations: tuple[str, ...]
    counts: dict[str, int]
    summary: dict[str, int] = field(default_factory=dict)
    trace: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No checker found anything."""
        return not self.violations

    def replay_command(self) -> str:
        """The command that replays exactly this run, with its trace."""
        return f"python -m dltmw.sim --seed {self.seed} --scenario {self.scenario}"

    def verdict(self) -> str:
        """One readable line."""
        found = "; ".join(self.violations[:5]) or "ok"
        numbers = " ".join(f"{k}={v}" for k, v in sorted(self.summary.items()))
        return f"scenario={self.scenario} seed={self.seed} {numbers} verdict: {found}"


def conclude(
    dep: Deployment,
    scenario: str,
    seed: int,
    lacking: list[str],
    check: Callable[[], list[str]],
    summary: dict[str, int],
) -> ScenarioResult:
    """The verdict of a stopped run: liveness findings, the checkers' (`check()`, reading the
    nodes' files before they are removed), nodes that failed for good, servicers that raised."""
    try:
        violations = lacking + check() + dep.fatal() + dep.net.unexpected
    finally:
        dep.remove()
    trace = tuple(dep.trace or ())
    return ScenarioResult(scenario, seed, tuple(violations), dict(dep.net.counts), summary, trace)
