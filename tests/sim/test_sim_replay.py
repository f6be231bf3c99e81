"""A failing simulation prints the command that replays it (`RunResult.replay_command`): that
command must make the very same run — same trace — for the plain replicas and for every setting
of the dissemination runs, or a developer chasing a red seed debugs another run."""

from __future__ import annotations

import contextlib
import io
import shlex

import pytest

from dltmw.sim.__main__ import main, trace_digest
from dltmw.sim.dissem_runner import run_dissemination
from dltmw.sim.runner import RunResult, run
from dltmw.sim.scenarios import run_scenario
from dltmw.sim.scenarios.result import ScenarioResult

from .flow_runs import quiet_nodes


def _replayed_digest(result: RunResult | ScenarioResult) -> str:
    command = shlex.split(result.replay_command(), comments=True)
    assert command[:3] == ["python", "-m", "dltmw.sim"], command
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main([*command[3:], "--digest"])  # exit status: the run's verdict, not compared here
    return out.getvalue().splitlines()[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: run(3, "network", requests=16, trace=True, retain=8),
        lambda: run(5, "silent-primary", trace=True, lone_every=3, collector=True),
        lambda: run_dissemination(4, "withheld-carried", requests=16, trace=True, carried=False),
        lambda: run_dissemination(2, "network", requests=16, trace=True, retain=8, drained=True),
        lambda: run_dissemination(6, "withheld-batch", requests=12, trace=True, enforce=False),
        lambda: run_dissemination(3, "network", requests=16, trace=True, retain=8, crash="slot"),
        lambda: run_dissemination(
            1, "carried-equivocation", requests=16, trace=True, crash="carried"
        ),
    ],
    ids=[
        "plain-retain",
        "plain-lone-collector",
        "dissem-uncarried",
        "dissem-retain-drained",
        "dissem-unchecked",
        "dissem-slot-crashes",
        "dissem-carried-crashes",
    ],
)
def test_the_printed_command_replays_the_same_run(make) -> None:  # type: ignore[no-untyped-def]
    result = make()
    assert result.trace, "the run must record a trace to compare"
    assert _replayed_digest(result) == trace_digest(result.trace), result.replay_command()


def test_the_printed_command_replays_a_private_run() -> None:
    """A whole network's run (scenario `private`: stores, kills mid store job, a lost store)
    replays from its printed command too (seed 189: the one that failed once under load)."""
    with quiet_nodes():
        result = run_scenario("private", 189, trace=True)
    assert len(result.trace) > 10
    assert _replayed_digest(result) == trace_digest(result.trace), result.replay_command()


def test_a_setting_the_command_line_lacks_is_named() -> None:
    from dataclasses import replace

    from dltmw.sim.dissem_world import SIM_DISSEMINATION

    other = replace(SIM_DISSEMINATION, batch_count_max=SIM_DISSEMINATION.batch_count_max + 1)
    result = run_dissemination(1, "honest", requests=4, dissemination=other)
    assert "# and dissemination=" in result.replay_command()


def test_a_crash_world_run_is_told_apart_from_a_plain_one() -> None:
    """The crash points change the run (else the replay tests above prove nothing for them)."""
    plain = run_dissemination(3, "network", requests=16, trace=True, retain=8)
    crashed = run_dissemination(3, "network", requests=16, trace=True, retain=8, crash="slot")
    assert "--crash" in crashed.replay_command() and "--crash" not in plain.replay_command()
    assert trace_digest(crashed.trace) != trace_digest(plain.trace)
