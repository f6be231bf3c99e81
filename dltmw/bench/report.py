"""Turn a run's observations into figures: a summary dict, a printed table, JSON, PNG plots and a
row of `benchmarks/RESULTS.md`.

The summary is self-checking: `checks.counts_add_up` (submitted = valid + invalid by code +
failed by reason) and `checks.ledgers_agree` (every peer holds every committed transaction with
the code the client was told, so every valid transaction is on every peer). The smoke test
asserts both; a report that fails them says so in its first lines instead of hiding it.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dltmw.bench.limits import CostModel, bounds
from dltmw.bench.runner import VALID, RunResult
from dltmw.v1 import transaction_pb2

RESULTS_HEADER = (
    "| date (UTC) | workload | network | load | valid tx/s | committed tx/s | invalid | failed "
    "| p50/p90/p99 ms | CPU cores used | valid tx per CPU-s | of sig-verify bound | report "
    "| command |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def code_name(code: int) -> str:
    """`TX_VALIDATION_CODE_MVCC_READ_CONFLICT` -> `MVCC_READ_CONFLICT`."""
    try:
        name = transaction_pb2.TxValidationCode.Name(
            transaction_pb2.TxValidationCode.ValueType(code)
        )
        return name.removeprefix("TX_VALIDATION_CODE_")
    except ValueError:
        return f"CODE_{code}"


def _writes_per_tx(result: RunResult) -> float:
    """Mean state writes per measured transaction, from the operations (for the sqlite bound)."""
    per_fn = {"put": 1, "incr": 1, "delete": 1, "deposit": 1, "withdraw": 1, "payment": 2}
    ops = [op for op, _ in result.records]
    return sum(per_fn.get(op.function, 1) for op in ops) / max(1, len(ops))


def _counts(result: RunResult) -> dict[str, Any]:
    outcomes = [out for _, out in result.records]
    invalid = Counter(code_name(o.code) for o in outcomes if o.code is not None and o.code != VALID)
    failed = Counter(o.failure or "UNKNOWN" for o in outcomes if o.code is None)
    valid = sum(1 for o in outcomes if o.code == VALID)
    return {
        "submitted": len(outcomes),
        "committed": valid + sum(invalid.values()),
        "valid": valid,
        "invalid_by_code": dict(sorted(invalid.items())),
        "failed_by_reason": dict(sorted(failed.items())),
    }


def _failure_examples(result: RunResult) -> dict[str, str]:
    """The first server message seen for each failure reason (to tell what went wrong)."""
    examples: dict[str, str] = {}
    for _, out in result.records:
        if out.code is None:
            examples.setdefault(out.failure or "UNKNOWN", out.detail)
    return examples


def _blocks(result: RunResult) -> dict[str, float]:
    sizes = Counter(  # flows without blocks (notaries, vaults) report block -1: none
        (op.channel, out.block)
        for op, out in result.records
        if out.code is not None and out.block >= 0
    )
    values = list(sizes.values())
    return {
        "blocks": len(values),
        "mean_tx_per_block": sum(values) / len(values) if values else 0.0,
        "max_tx_per_block": max(values, default=0),
    }


#: The workloads the cost model (`limits.CostModel`: endorse, order, validate) describes; the
#: other flows report no bound rather than a wrong one.
MODELLED = frozenset({"kv", "bank", "hot"})


def _bounds(result: RunResult, valid_tx_s: float) -> tuple[dict[str, Any], dict[str, float]]:
    shape = result.config.shape
    if result.config.workload not in MODELLED:
        return {"model": None}, {}
    endorsers = shape.orgs if shape.policy == "AND" else 1
    pipelined = os.environ.get("DLTMW_CLIENT_PIPELINE", "1") != "0"  # the SDK's own switch
    model = CostModel(
        endorsers=endorsers, peers=shape.orgs, writes=_writes_per_tx(result), pipelined=pipelined
    )
    if result.limits is None:
        return {"model": asdict(model)}, {}
    b = bounds(result.limits, model)
    fractions = {k: valid_tx_s / v for k, v in b.items() if v > 0}
    described = {
        "model": asdict(model),
        "signs_per_tx": model.signs(),
        "verifies_per_tx": model.verifies(),
        "unary_calls_per_tx": model.unary_calls(),
        "sqlite_rows_per_tx": model.sqlite_rows(),
        "tx_per_s": b,
    }
    return described, fractions


def _run_info(result: RunResult, command: str) -> dict[str, Any]:
    cfg = result.config
    return {
        "command": command,
        "label": cfg.label,
        "started_utc": result.started_utc,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "mode": f"open-loop {cfg.rate:g} tx/s" if cfg.rate else "closed-loop",
        "in_flight": cfg.in_flight,
        "txs": cfg.txs,
        "duration_cap_s": cfg.duration_s,
        "seed": cfg.seed,
        "open_loop_late_sends": result.late,
        "load_average": round(os.getloadavg()[0], 2),  # at the end: how shared the cores were
    }


def summarise(result: RunResult, command: str) -> dict[str, Any]:
    """Every figure of a run, JSON-ready."""
    cfg = result.config
    counts = _counts(result)
    elapsed = max(result.elapsed_s, 1e-9)
    lat = sorted(o.latency_s * 1000 for _, o in result.records if o.code is not None)
    rates = {
        "submitted_tx_s": counts["submitted"] / elapsed,
        "committed_tx_s": counts["committed"] / elapsed,
        "valid_tx_s": counts["valid"] / elapsed,
    }
    bound_info, fractions = _bounds(result, rates["valid_tx_s"])
    committed = max(1, counts["committed"])
    failed_n = sum(counts["failed_by_reason"].values())
    invalid_n = sum(counts["invalid_by_code"].values())
    ledgers = result.ledgers
    return {
        "run": _run_info(result, command),
        "network": {
            **asdict(cfg.shape),
            "endorsement_policy": cfg.shape.endorsement_policy(),
            "mutual_tls": True,
            "sqlite_synchronous": cfg.synchronous,
            "peer_state": "postgresql" if cfg.postgresql_dsn else "sqlite",
        },
        "workload": {"name": cfg.workload, "params": result.workload_params},
        "counts": counts,
        "failure_examples": _failure_examples(result),
        "setup_txs": result.setup_txs,
        "elapsed_s": result.elapsed_s,
        "rates": rates,
        "abort_rate": 1 - counts["valid"] / max(1, counts["submitted"]),
        "latency_ms": {
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "max": lat[-1] if lat else 0.0,
        },
        "cpu_ms_per_committed_tx": {k: v * 1000 / committed for k, v in result.cpu_s.items()},
        "cpu_cores_used": {k: v / elapsed for k, v in result.cpu_s.items()},
        "cpu_cores_used_total": sum(result.cpu_s.values()) / elapsed,
        # Efficiency, robust on a shared machine: how much CPU one valid transaction costs,
        # whatever share of the cores other work left to this run.
        "valid_tx_per_cpu_s": counts["valid"] / max(sum(result.cpu_s.values()), 1e-9),
        # Little's law: a closed loop cannot beat in_flight / mean latency; when valid tx/s sits
        # at this figure with cores to spare, the run is latency-bound (batch timeout, hops).
        "closed_loop_ceiling_tx_s": (
            cfg.in_flight / (sum(lat) / len(lat) / 1000) if lat and not cfg.rate else None
        ),
        "peak_rss_mb": {k: v / 2**20 for k, v in result.peak_rss.items()},
        "blocks": _blocks(result),
        "limits": result.limits.as_dict() if result.limits else None,
        "bounds": bound_info,
        "fraction_of_bound": fractions,
        "ledgers": ledgers,
        "restart": result.restart,
        "invariants": result.invariants,
        "client_signing": result.client_signing,
        "checks": {
            "counts_add_up": counts["submitted"] == counts["valid"] + invalid_n + failed_n,
            "ledgers_agree": bool(ledgers)
            and all(v["missing"] == 0 and v["mismatched"] == 0 for v in ledgers.values())
            and all(
                v["valid"] == v.get("expected_valid", counts["valid"]) for v in ledgers.values()
            ),
            **({"invariants_hold": bool(result.invariants["hold"])} if result.invariants else {}),
        },
    }


def print_summary(s: dict[str, Any], console: Console) -> None:
    """A readable table of the figures that matter, with the bound ratios."""
    c, r, lat = s["counts"], s["rates"], s["latency_ms"]
    table = Table(title=f"dltmw bench — {s['workload']['name']} {s['workload']['params']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row(
        "submitted / committed / valid", f"{c['submitted']} / {c['committed']} / {c['valid']}"
    )
    table.add_row("invalid by code", str(c["invalid_by_code"] or "none"))
    table.add_row("failed before commit", str(c["failed_by_reason"] or "none"))
    for reason, detail in s["failure_examples"].items():
        table.add_row(f"  e.g. {reason}", detail[:120])
    table.add_row(
        "tx/s submitted / committed / valid",
        f"{r['submitted_tx_s']:.1f} / {r['committed_tx_s']:.1f} / {r['valid_tx_s']:.1f}",
    )
    table.add_row("abort rate", f"{s['abort_rate']:.1%}")
    table.add_row(
        "latency p50 / p90 / p99 ms", f"{lat['p50']:.0f} / {lat['p90']:.0f} / {lat['p99']:.0f}"
    )
    for name, ms in s["cpu_ms_per_committed_tx"].items():
        rss = s["peak_rss_mb"].get(name, 0.0)
        table.add_row(f"CPU ms/tx, peak RSS: {name}", f"{ms:.2f} ms, {rss:.0f} MB")
    ceiling = s["closed_loop_ceiling_tx_s"]
    table.add_row(
        "CPU cores used (all processes)",
        f"{s['cpu_cores_used_total']:.2f} of {s['limits']['cores'] if s['limits'] else '?'}",
    )
    table.add_row("valid tx per CPU-second (all processes)", f"{s['valid_tx_per_cpu_s']:.0f}")
    if ceiling is not None:
        table.add_row("closed-loop ceiling (in flight / mean latency)", f"{ceiling:.1f} tx/s")
    b, n = s["blocks"], s["network"]
    if n.get("flow", "ledger") == "ledger":  # notaries and vaults cut no blocks
        table.add_row(
            "blocks: count, mean / max tx",
            f"{b['blocks']}, {b['mean_tx_per_block']:.1f} / {b['max_tx_per_block']}",
        )
        table.add_row(
            "batch settings",
            f"max {n['batch_max_tx']} tx / {n['batch_max_bytes']} B / {n['batch_timeout_ms']} ms"
            + (", by limits only" if n.get("cut_by_limits_only") else ", adaptive"),
        )
    for name, frac in s["fraction_of_bound"].items():
        bound = s["bounds"]["tx_per_s"][name]
        table.add_row(f"of the {name} bound", f"{frac:.1%} of {bound:,.0f} tx/s")
    r = s.get("restart") or {}
    if r:
        table.add_row(
            f"restart to serving: {r['node']}",
            f"{r['restart_to_serving_s']:.2f} s (ledger height {r['ledger_height']})",
        )
    checks = s["checks"]
    table.add_row(
        "counts add up / ledgers agree", f"{checks['counts_add_up']} / {checks['ledgers_agree']}"
    )
    for channel, inv in s.get("invariants", {}).items():
        if channel != "hold":
            table.add_row(
                f"hot account on {channel}: >= 0 / final == initial + valid deltas (every peer)",
                f"{inv['bound_kept']} (lowest {inv['lowest_balance']}) / {inv['final_equal']} "
                f"({inv['expected_balance']}); {inv['bound_violations']} bound violations, "
                f"justified {inv['violations_justified']}",
            )
    console.print(table)
    console.print(f"machine: {s['run']['machine']} (shared; figures under contention are noisy)")
    console.print(f"command: {s['run']['command']}")


def write_json(s: dict[str, Any], path: Path) -> None:
    """The full summary as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")


def results_row(s: dict[str, Any], report_rel: str) -> str:
    """One RESULTS.md table row."""
    c, r, lat, n = s["counts"], s["rates"], s["latency_ms"], s["network"]
    params = ",".join(f"{k}={v}" for k, v in s["workload"]["params"].items())
    frac = s["fraction_of_bound"].get("signature_verification")
    invalid = ", ".join(f"{k} {v}" for k, v in c["invalid_by_code"].items()) or "0"
    failed = ", ".join(f"{k} {v}" for k, v in c["failed_by_reason"].items()) or "0"
    cells = [
        s["run"]["started_utc"][:16].replace("T", " "),
        f"{s['workload']['name']} {params}",
        f"{n['orgs']} orgs, {n['channels']} ch, {n['endorsement_policy']}, batch "
        f"{n['batch_max_tx']}/{n['batch_timeout_ms']} ms"
        + (" by limits only" if n.get("cut_by_limits_only") else " adaptive"),
        f"{s['run']['mode']}, {s['run']['in_flight']} in flight, {c['submitted']} tx",
        f"{r['valid_tx_s']:.1f}",
        f"{r['committed_tx_s']:.1f}",
        invalid,
        failed,
        f"{lat['p50']:.0f}/{lat['p90']:.0f}/{lat['p99']:.0f}",
        f"{s['cpu_cores_used_total']:.2f}",
        f"{s['valid_tx_per_cpu_s']:.0f}",
        f"{frac:.0%}" if frac is not None else "n/a",
        f"[json]({report_rel})",
        f"`{s['run']['command']}`",
    ]
    return "| " + " | ".join(cells) + " |\n"


def append_row(results_md: Path, row: str) -> None:
    """Append a row, starting a new table when the file does not end with one of ours."""
    text = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
    lines = text.rstrip("\n").splitlines()
    columns = RESULTS_HEADER.split("\n", maxsplit=1)[0].count("|")
    ours = bool(lines) and lines[-1].startswith("| ") and lines[-1].count("|") == columns
    prefix = "" if ours else "\n## `dltmw bench` runs\n\n" + RESULTS_HEADER
    with results_md.open("a") as f:
        if not results_md.stat().st_size:
            f.write(text)
        elif not text.endswith("\n"):
            f.write("\n")
        f.write(prefix + row)
