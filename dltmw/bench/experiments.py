"""One run with its outputs, and the paper's findings as reproducible experiments.

`run_one` runs a benchmark and writes everything a result needs: `report.json`, the PNG plots and
a row of RESULTS.md with the exact command. `run_experiment` runs the points of a named
experiment (each point a fresh network) and appends a RESULTS.md section with the plot, the
figures of every point and the command:

- `contention` — paper III.2(2): the bank mix with the account choice going from uniform to Zipf
  to one hot account; throughput and abort rate against key contention.
- `hotkey` — issue 13: ONE account, deposits and withdrawals (workload `hot`), with the paper's
  read-modify-write bank (`bank_rmw`, the before) and with bounded deltas (`bank`) in one run;
  every run checks on every peer that the balance never went below 0 and ends at the opening
  balance plus the valid deltas (`bench/hotkey.py`).
- `channels` — paper Figure 5: 1, 2, 4 channels on the same nodes, each channel fed the same
  closed-loop load (`--in-flight` and `--txs` per channel); does total throughput grow with
  channels executing in parallel, and where does the machine stop it (see CPU cores used)?
- `replicas` — the finding the paper cites from the Bank of Japan's experiment (consensus cost
  grows with the nodes taking part): the same kv workload with one solo orderer (`ordering =
  "none"`, the baseline in the same run) and PBFT-lite ordering with 4, 7, 10 and 13 replicas.
- `jetstream` — issue 17: the same kv workload ordered by one solo orderer and by two orderers
  on a NATS JetStream stream replicated over three nats-servers (their CPU counted too), in one
  run; the acceptance asks for at least 80 % of solo's valid tx/s. `jetstream-plain` is the same
  without TLS to the nats-servers: what the cluster's TLS costs, in the same run.
- `latency` — the latency-throughput curve (issue 13): kv blind writes in an open loop at rising
  rates (50 ... 1000 tx/s, about LATENCY_POINT_S seconds each) and, last, the closed loop at
  saturation (`--in-flight`, `--txs`); p50/p99 and CPU per transaction at each point. Open loop
  because a closed loop hides queueing (its clients wait instead of arriving): latency at a given
  offered load is what a user sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

import dltmw
from dltmw.bench import report
from dltmw.bench.limits import Limits, probe
from dltmw.bench.plots import experiment_plot, latency_curve_plot, run_plots
from dltmw.bench.runner import BenchConfig, BenchError, RunResult, run_bench


def default_results_dir() -> Path:
    """`benchmarks/` of the checkout: the working directory's, else the one beside the package."""
    here = Path.cwd() / "benchmarks"
    if (here / "RESULTS.md").exists():
        return here
    beside = Path(dltmw.__file__).resolve().parents[1] / "benchmarks"
    if (beside / "RESULTS.md").exists():
        return beside
    return here


def stamp(label: str) -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + (f"-{label}" if label else "")


def run_logged(
    cfg: BenchConfig,
    console: Console,
    keep: Path | None,
    limits: Limits | None,
    logs_on_failure: Path | None = None,
) -> RunResult:
    """run_bench in `keep` or a temporary directory; when it fails, the nodes' logs are copied
    to `logs_on_failure` (the temporary network is gone afterwards) and the error names them."""
    if keep is not None:
        return run_bench(cfg, keep, console, limits)
    with tempfile.TemporaryDirectory(prefix="dltmw-bench-") as tmp:
        try:
            return run_bench(cfg, Path(tmp), console, limits)
        except BenchError as exc:
            logs = Path(tmp) / "net" / "run" / "logs"
            if logs_on_failure is None or not logs.exists():
                raise
            shutil.copytree(logs, logs_on_failure, dirs_exist_ok=True)
            raise BenchError(f"{exc} (node logs: {logs_on_failure})") from exc


def run_one(
    cfg: BenchConfig,
    results_dir: Path,
    console: Console,
    command: str,
    *,
    append: bool = True,
    keep: Path | None = None,
) -> dict[str, Any]:
    """One run: print, write JSON and plots under results/<stamp>/, append to RESULTS.md."""
    outdir = results_dir / "results" / stamp(cfg.label or cfg.workload)
    result = run_logged(cfg, console, keep, None, outdir / "failed-run-logs")
    summary = report.summarise(result, command)
    report.print_summary(summary, console)
    report.write_json(summary, outdir / "report.json")
    plots = run_plots(result, outdir)
    rel = (outdir / "report.json").relative_to(results_dir).as_posix()
    if append:
        report.append_row(results_dir / "RESULTS.md", report.results_row(summary, rel))
    console.print(f"report: {outdir / 'report.json'}; plots: {', '.join(p.name for p in plots)}")
    return summary


Point = Callable[[BenchConfig], BenchConfig]


@dataclass(frozen=True)
class Experiment:
    """A named sweep: labelled points, each a change to the base configuration."""

    title: str
    xlabel: str
    points: tuple[tuple[str, Point], ...]
    base: Callable[[BenchConfig], BenchConfig]
    secondary: str = "abort"  # the plot's line: "abort" rate or "cpu" cores used
    curve: bool = False  # plot latency against throughput (`latency_curve_plot`) instead


def _bank(skew: str) -> Point:
    def point(cfg: BenchConfig) -> BenchConfig:
        label = "bank-" + skew.replace(":", "")  # file names: no colons (portable checkouts)
        return dataclasses.replace(cfg, params={**cfg.params, "skew": skew}, label=label)

    return point


def _hot(contract: str) -> Point:
    def point(cfg: BenchConfig) -> BenchConfig:
        params = {**cfg.params, "contract": contract}
        return dataclasses.replace(cfg, params=params, label=f"hot-{contract}")

    return point


def _channels(n: int) -> Point:
    """n channels, each fed like the one-channel point: --in-flight and --txs per channel.

    Splitting one fixed in-flight total instead would starve each channel's block cutter (blocks
    would wait for the batch timeout) and measure that, not parallel execution.
    """

    def point(cfg: BenchConfig) -> BenchConfig:
        shape = dataclasses.replace(cfg.shape, channels=n)
        return dataclasses.replace(
            cfg, shape=shape, in_flight=cfg.in_flight * n, txs=cfg.txs * n, label=f"channels-{n}"
        )

    return point


def _replicas(n: int) -> Point:
    def point(cfg: BenchConfig) -> BenchConfig:
        shape = dataclasses.replace(cfg.shape, orderers=n, ordering="pbft")
        return dataclasses.replace(cfg, shape=shape, label=f"replicas-{n}")

    return point


def _jetstream(tls: bool) -> Point:
    def point(cfg: BenchConfig) -> BenchConfig:
        shape = dataclasses.replace(cfg.shape, orderers=2, ordering="jetstream", nats_tls=tls)
        label = "ordering-jetstream" if tls else "ordering-jetstream-plain"
        return dataclasses.replace(cfg, shape=shape, label=label)

    return point


LATENCY_RATES = (50, 100, 200, 400, 600, 800, 1000)  # tx/s offered, open loop
LATENCY_POINT_S = 6.0  # seconds of submissions per open-loop point (at least 300 transactions)


def _open_loop(rate: int) -> Point:
    def point(cfg: BenchConfig) -> BenchConfig:
        txs = max(300, int(rate * LATENCY_POINT_S))
        return dataclasses.replace(cfg, rate=float(rate), txs=txs, label=f"latency-{rate}")

    return point


def _saturation(cfg: BenchConfig) -> BenchConfig:
    return dataclasses.replace(cfg, rate=0.0, label="latency-closed")


def _with_workload(name: str, params: dict[str, str]) -> Callable[[BenchConfig], BenchConfig]:
    def base(cfg: BenchConfig) -> BenchConfig:
        return dataclasses.replace(cfg, workload=name, params={**params, **cfg.params})

    return base


EXPERIMENTS: dict[str, Experiment] = {
    "contention": Experiment(
        "Throughput and aborts against key contention (paper III.2(2)), bank mix",
        "account choice (1000 accounts)",
        tuple((s, _bank(s)) for s in ("uniform", "zipf:1", "zipf:2", "hot")),
        _with_workload("bank", {"accounts": "1000"}),
    ),
    "hotkey": Experiment(
        "One hot account (issue 13): deposits and withdrawals, read-modify-write vs deltas",
        "contract (bank_rmw: read-modify-write; bank: bounded deltas)",
        (("bank_rmw", _hot("bank_rmw")), ("bank", _hot("bank"))),
        _with_workload("hot", {}),
    ),
    "channels": Experiment(
        "Throughput against channels on the same nodes (paper Figure 5), kv blind writes",
        "channels on the same nodes (each with --in-flight and --txs of its own)",
        tuple((str(n), _channels(n)) for n in (1, 2, 4)),
        _with_workload("kv", {}),
        secondary="cpu",
    ),
    "replicas": Experiment(
        "Throughput against consensus replicas (PBFT-lite)",
        "ordering replicas",
        (
            ("none", lambda cfg: dataclasses.replace(cfg, label="replicas-none")),
            *((f"pbft-{n}", _replicas(n)) for n in (4, 7, 10, 13)),
        ),
        _with_workload("kv", {}),
    ),
    "jetstream": Experiment(
        "Throughput of crash-tolerant ordering on NATS JetStream (issue 17) vs the solo orderer",
        "ordering (none: one solo orderer; jetstream: 2 orderers, 3 nats-servers, 3 replicas,"
        " mutual TLS; jetstream-plain: the same over plain TCP)",
        (
            ("none", lambda cfg: dataclasses.replace(cfg, label="ordering-none")),
            ("jetstream", _jetstream(True)),
            ("jetstream-plain", _jetstream(False)),
        ),
        _with_workload("kv", {}),
        secondary="cpu",
    ),
    "latency": Experiment(
        "Latency against throughput (issue 13), kv blind writes, open loop then saturation",
        "offered load, tx/s (closed: closed loop at saturation)",
        (*((str(r), _open_loop(r)) for r in LATENCY_RATES), ("closed", _saturation)),
        _with_workload("kv", {}),
        secondary="cpu",
        curve=True,
    ),
}


def run_experiment(
    name: str,
    base: BenchConfig,
    results_dir: Path,
    console: Console,
    command: str,
    *,
    append: bool = True,
    repeat: int = 1,
) -> list[dict[str, Any]]:
    """Run every point of an experiment `repeat` times, plot, and append a RESULTS.md section.

    Repeats are interleaved (round r runs every point once), so load from other work drifting
    during the experiment hits every point alike; each point reports its median run.
    """
    exp = EXPERIMENTS.get(name)
    if exp is None:
        raise BenchError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    if repeat < 1:
        raise BenchError("repeat must be at least 1")
    limits = asyncio.run(probe()) if base.probe else None
    outdir = results_dir / "results" / stamp(name)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in exp.points}
    errors: dict[str, str] = {}
    for r in range(1, repeat + 1):
        for label, point in exp.points:
            if label in errors:
                continue
            cfg = point(exp.base(base))
            console.rule(f"{name}: {label} (run {r} of {repeat})")
            logs = outdir / f"{cfg.label}-run{r}-logs"
            try:
                result = run_logged(cfg, console, None, limits, logs)
            except BenchError as exc:  # reported in the section, not hidden
                console.print(f"[red]{name} {label} run {r} failed:[/] {exc}")
                errors[label] = f"run {r}: " + str(exc).splitlines()[0][:160]
                errors[label] += f" (node logs: {logs.relative_to(results_dir).as_posix()})"
                continue
            summary = report.summarise(result, command)
            report.print_summary(summary, console)
            report.write_json(summary, outdir / f"{cfg.label}-run{r}.json")
            runs[label].append(summary)
    done = [(label, median_run(rs), rs) for label, rs in runs.items() if rs]
    if not done:
        raise BenchError(f"every point of {name!r} failed: {errors}")
    labels, summaries = [d[0] for d in done], [d[1] for d in done]
    if exp.curve:
        plot = latency_curve_plot(outdir / f"{name}.png", exp.title, labels, summaries)
    else:
        plot = experiment_plot(
            outdir / f"{name}.png", exp.title, exp.xlabel, labels, summaries, exp.secondary
        )
    if append:
        section = experiment_section(exp, done, errors, plot, results_dir, command)
        with (results_dir / "RESULTS.md").open("a") as f:
            f.write(section)
    console.print(f"plot: {plot}")
    return summaries


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median valid tx/s (the upper one of an even count)."""
    ordered = sorted(runs, key=lambda s: float(s["rates"]["valid_tx_s"]))
    return ordered[len(ordered) // 2]


def experiment_section(
    exp: Experiment,
    done: list[tuple[str, dict[str, Any], list[dict[str, Any]]]],
    errors: dict[str, str],
    plot: Path,
    results_dir: Path,
    command: str,
    level: str = "##",
) -> str:
    """Markdown: heading, command, plot, one row per point (failures and hot keys included).
    A lower `level` ("###": a flow of the suite) leaves the date, machine and command to the
    section above it."""
    first = done[0][1]
    lines = [f"\n{level} {exp.title}\n"]
    if level == "##":
        lines += [
            f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {first['run']['machine']}; "
            "the machine is shared with other work, so the figures are noisy. Each row is the "
            "point's median run; `valid tx/s, every run` shows the spread.\n",
            f"\n```\n{command}\n```\n",
        ]
    lines += [
        f"\n![{exp.title}]({plot.relative_to(results_dir).as_posix()})\n\n",
        "| point | submitted | valid tx/s | valid tx/s, every run | committed tx/s | abort rate "
        "| invalid by code | failed | p50/p99 ms | CPU cores used | valid tx per CPU-s "
        "| CPU ms per tx | tx per block | of sig-verify bound "
        "| counts add up / ledgers agree (/ invariants) |\n",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    for label, s, every in done:
        c, r, lat, ch = s["counts"], s["rates"], s["latency_ms"], s["checks"]
        frac = s["fraction_of_bound"].get("signature_verification")
        bound = f"{frac:.0%}" if frac is not None else "n/a"
        spread = ", ".join(f"{x['rates']['valid_tx_s']:.1f}" for x in every)
        agree = all(all(x["checks"].values()) for x in every)
        held = f" / {ch['invariants_hold']}" if "invariants_hold" in ch else ""
        lines.append(
            f"| {label} | {c['submitted']} | {r['valid_tx_s']:.1f} | {spread} "
            f"| {r['committed_tx_s']:.1f} | {s['abort_rate']:.0%} | {c['invalid_by_code'] or 0} "
            f"| {c['failed_by_reason'] or 0} | {lat['p50']:.0f}/{lat['p99']:.0f} "
            f"| {s['cpu_cores_used_total']:.2f} | {s['valid_tx_per_cpu_s']:.0f} "
            f"| {sum(s['cpu_ms_per_committed_tx'].values()):.2f} "
            f"| {s['blocks']['mean_tx_per_block']:.1f} | {bound} "
            f"| {ch['counts_add_up']} / {ch['ledgers_agree']}{held} (all runs: {agree}) |\n"
        )
    lines.extend(f"| {label} | failed: {err} |\n" for label, err in errors.items())
    return "".join(lines)
