"""PNG plots of a run and of an experiment (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use(): the backend must be chosen first

from dltmw.bench.runner import VALID, RunResult


def run_plots(result: RunResult, outdir: Path) -> list[Path]:
    """throughput.png (valid / invalid / failed per second) and latency.png (histogram + CDF)."""
    outdir.mkdir(parents=True, exist_ok=True)
    outcomes = [out for _, out in result.records]
    if not outcomes:
        return []
    t0 = min(o.started for o in outcomes)
    seconds = int(max(o.finished for o in outcomes) - t0) + 1
    series = {"valid": [0] * seconds, "invalid": [0] * seconds, "failed": [0] * seconds}
    for o in outcomes:
        kind = "failed" if o.code is None else "valid" if o.code == VALID else "invalid"
        series[kind][int(o.finished - t0)] += 1
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for kind, values in series.items():
        if any(values):
            ax.plot(range(seconds), values, label=kind, marker=".")
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("transactions / s (by completion)")
    ax.set_title(f"{result.config.workload}: throughput over time")
    ax.legend()
    ax.grid(alpha=0.3)
    paths = [outdir / "throughput.png", outdir / "latency.png"]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    lat = sorted(o.latency_s * 1000 for o in outcomes if o.code is not None)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if lat:
        ax.hist(lat, bins=40, alpha=0.6, label="histogram")
        twin = ax.twinx()
        twin.plot(lat, [(i + 1) / len(lat) for i in range(len(lat))], color="C1", label="CDF")
        twin.set_ylabel("fraction ≤ x")
    ax.set_xlabel("submit → commit status, ms")
    ax.set_ylabel("transactions")
    ax.set_title(f"{result.config.workload}: latency")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def experiment_plot(
    path: Path,
    title: str,
    xlabel: str,
    labels: Sequence[str],
    summaries: Sequence[dict[str, Any]],
    secondary: str = "abort",
) -> Path:
    """Valid and committed tx/s as bars per point; on a second axis the abort rate (%) or, with
    `secondary="cpu"`, the CPU cores all processes used (what stops parallel channels)."""
    x = list(range(len(labels)))
    valid = [s["rates"]["valid_tx_s"] for s in summaries]
    committed = [s["rates"]["committed_tx_s"] for s in summaries]
    if secondary == "cpu":
        line = [s["cpu_cores_used_total"] for s in summaries]
        line_label, axis_label = "CPU cores used", "CPU cores used (all processes)"
        top = float(max([*line, summaries[0]["limits"]["cores"] if summaries[0]["limits"] else 1]))
    else:
        line = [100 * s["abort_rate"] for s in summaries]
        line_label, axis_label, top = "abort rate %", "abort rate (1 - valid / submitted), %", 100.0
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([i - 0.2 for i in x], committed, width=0.4, label="committed tx/s", color="C0")
    ax.bar([i + 0.2 for i in x], valid, width=0.4, label="valid tx/s", color="C2")
    ax.set_xticks(x, labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("transactions / s")
    twin = ax.twinx()
    twin.plot(x, line, color="C3", marker="o", label=line_label)
    twin.set_ylabel(axis_label)
    twin.set_ylim(0, top * 1.05)
    return _finish(fig, ax, twin, title, path)


def latency_curve_plot(
    path: Path, title: str, labels: Sequence[str], summaries: Sequence[dict[str, Any]]
) -> Path:
    """p50 and p99 latency (log scale) against the valid tx/s each point reached, each point
    labelled with its offered load; on a second axis the CPU milliseconds per transaction (all
    processes), which shows what small blocks at low load cost."""
    x = [s["rates"]["valid_tx_s"] for s in summaries]
    p50 = [s["latency_ms"]["p50"] for s in summaries]
    p99 = [s["latency_ms"]["p99"] for s in summaries]
    cpu = [sum(s["cpu_ms_per_committed_tx"].values()) for s in summaries]
    fig, ax = plt.subplots(figsize=(7, 4))
    # Lines join the open-loop points only (rising offered load); a closed-loop point is a
    # marker of its own.
    line = [i for i, s in enumerate(summaries) if s["run"]["mode"] != "closed-loop"]
    for ys, marker, color, name in ((p50, "o", "C0", "p50 ms"), (p99, "s", "C1", "p99 ms")):
        ax.plot([x[i] for i in line], [ys[i] for i in line], marker=marker, color=color, label=name)
        rest = [i for i in range(len(x)) if i not in line]
        ax.plot([x[i] for i in rest], [ys[i] for i in rest], marker=marker, color=color, ls="")
    for xi, yi, label in zip(x, p99, labels, strict=True):
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(0, 6), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("valid tx/s reached (labels: offered tx/s)")
    ax.set_ylabel("submit -> commit status, ms")
    ax.grid(alpha=0.3, which="both")
    twin = ax.twinx()
    twin.plot(x, cpu, color="C3", marker="^", linestyle=":", label="CPU ms per tx")
    twin.set_ylabel("CPU ms per transaction (all processes)")
    twin.set_ylim(0, max(cpu) * 1.1 if cpu else 1)
    return _finish(fig, ax, twin, title, path)


def _finish(fig: Any, ax: Any, twin: Any, title: str, path: Path) -> Path:
    """One legend for both axes below the plot, the title, and the PNG written to `path`."""
    handles = ax.get_legend_handles_labels()
    twin_handles = twin.get_legend_handles_labels()
    fig.legend(
        handles[0] + twin_handles[0], handles[1] + twin_handles[1], loc="lower center", ncol=3
    )
    ax.set_title(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
