"""`dltmw bench --experiment flows` (`make bench-all`): every flow of the harness, `repeat`
runs each, and ONE RESULTS.md section per flow (its plot, its median run, every run's valid
tx/s as the spread, peak RSS per node, the restart check when asked, the load average).

The flows: kv blind writes with the solo orderer and with PBFT-lite over 4 replicas (with
dissemination, what `dltmw init` gives a new PBFT channel, whatever `--no-pbft-dissemination`
says: the flow's figure always means the same path), the bank mix, the hot account, a single
notary, a 4-member notary cluster, private transactions to 2 recipients, and UTXO DvPs. Runs
are interleaved (round r runs every flow once), as `experiments.run_experiment` does, so load
from other work drifting during the suite hits every flow alike. A flow whose run fails is
reported as failed in its section, not hidden.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from dltmw.bench import report
from dltmw.bench.experiments import (
    Experiment,
    experiment_section,
    median_run,
    run_logged,
    stamp,
)
from dltmw.bench.limits import probe
from dltmw.bench.plots import experiment_plot
from dltmw.bench.runner import BenchConfig, BenchError


@dataclass(frozen=True)
class Flow:
    """One flow of the suite: a label, a title, and its configuration from the base one."""

    label: str
    title: str
    point: Callable[[BenchConfig], BenchConfig]


def _flow(label: str, workload: str, scale: int = 1, in_flight: int = 0, **shape: Any) -> Flow:
    """`workload` with its default parameters; `scale` multiplies --txs (the notaries decide
    thousands per second: the cap must not end their run in a second), `in_flight` > 0 caps
    the workers (DvPs queue per pair of vaults: hundreds of workers would only wait)."""

    def point(cfg: BenchConfig) -> BenchConfig:
        return dataclasses.replace(
            cfg,
            workload=workload,
            params={},
            label=f"flow-{label}",
            txs=cfg.txs * scale,
            in_flight=in_flight or cfg.in_flight,
            shape=dataclasses.replace(cfg.shape, **shape),
        )

    return Flow(label, f"Flow `{label}`", point)


FLOWS: tuple[Flow, ...] = (
    _flow("kv", "kv"),
    _flow("kv-pbft4", "kv", orderers=4, ordering="pbft", pbft_dissemination=True),
    _flow("bank", "bank"),
    _flow("hot", "hot"),
    _flow("notary", "notary", scale=5),
    _flow("notary-cluster", "notary-cluster", scale=2),
    _flow("private", "private"),
    _flow("utxo-dvp", "utxo-dvp", in_flight=16),
)


def run_suite(
    base: BenchConfig,
    results_dir: Path,
    console: Console,
    command: str,
    *,
    repeat: int = 3,
    append: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Run every flow `repeat` times (interleaved); append one section per flow."""
    if repeat < 1:
        raise BenchError("repeat must be at least 1")
    limits = asyncio.run(probe()) if base.probe else None
    outdir = results_dir / "results" / stamp("flows")
    started = _load()
    runs: dict[str, list[dict[str, Any]]] = {f.label: [] for f in FLOWS}
    errors: dict[str, str] = {}
    for r in range(1, repeat + 1):
        for flow in FLOWS:
            cfg = flow.point(base)
            console.rule(f"flows: {flow.label} (run {r} of {repeat})")
            logs = outdir / f"{cfg.label}-run{r}-logs"
            try:
                result = run_logged(cfg, console, None, limits, logs)
            except BenchError as exc:
                console.print(f"[red]{flow.label} run {r} failed:[/] {exc}")
                errors.setdefault(flow.label, f"run {r}: " + str(exc).splitlines()[0][:200])
                continue
            summary = report.summarise(result, command)
            report.print_summary(summary, console)
            report.write_json(summary, outdir / f"{cfg.label}-run{r}.json")
            runs[flow.label].append(summary)
    if append:
        with (results_dir / "RESULTS.md").open("a") as f:
            f.write(suite_heading(repeat, started, command))
            for flow in FLOWS:
                f.write(flow_section(flow, runs[flow.label], errors, outdir, results_dir, command))
    return runs


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def suite_heading(repeat: int, load_at_start: str, command: str) -> str:
    """The suite's section: when, where, how loaded, the command."""
    return (
        f"\n## Every flow of `dltmw bench` ({repeat} runs each)\n\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average (1, 5, 15 min) {load_at_start} at "
        f"the start, {_load()} at the end: the machine is shared with other work, so the figures "
        "are noisy. Each flow: its plot (every run), its median run (by valid tx/s) and every "
        "run's valid tx/s (the spread), peak RSS per process, the restart check.\n"
        f"\n```\n{command}\n```\n"
    )


def flow_section(
    flow: Flow,
    runs: list[dict[str, Any]],
    errors: dict[str, str],
    outdir: Path,
    results_dir: Path,
    command: str,
) -> str:
    """The flow's heading, plot and table (median run, every run's figure), then its peak RSS
    per process, restart check and each run's load average; or why it has no figures."""
    if not runs:
        return f"\n### {flow.title}\n\nfailed: {errors.get(flow.label, 'no run')}\n"
    labels = [f"run {i + 1}" for i in range(len(runs))]
    plot = experiment_plot(
        outdir / f"flow-{flow.label}.png", flow.title, "run", labels, runs, "cpu"
    )
    exp = Experiment(flow.title, "run", (), lambda cfg: cfg)
    median = median_run(runs)
    failed = {flow.label: errors[flow.label]} if flow.label in errors else {}
    done = [(flow.label, median, runs)]
    text = experiment_section(exp, done, failed, plot, results_dir, command, level="###")
    rss = ", ".join(f"{n} {mb:.0f}" for n, mb in sorted(median["peak_rss_mb"].items()))
    lines = [f"\nPeak RSS per process, MB (median run): {rss}.\n"]
    restarts = [s["restart"] for s in runs if s.get("restart")]
    if restarts:
        every = ", ".join(f"{x['restart_to_serving_s']:.2f}" for x in restarts)
        lines.append(
            f"Restart to serving of {restarts[0]['node']}: {every} s (every run; ledger "
            f"height {', '.join(str(x['ledger_height']) for x in restarts)}).\n"
        )
    loads = ", ".join(str(s["run"].get("load_average", "?")) for s in runs)
    lines.append(f"Load average (1 min) at the end of each run: {loads}.\n")
    return text + "".join(lines)
