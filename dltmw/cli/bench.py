"""`dltmw bench`: a benchmark of real node processes, or one of the paper's experiments.

The logic is in `dltmw.bench` (installed with the package, so this command works from a checkout
and from a wheel); this module only maps options to a `BenchConfig`. Its heavy imports happen
inside the command, so matplotlib and psutil (the `bench` extra) are needed only to benchmark.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dltmw.bench.topology import NetworkShape, check_ordering
from dltmw.bench.workloads import WORKLOADS, ParamError, default_in_flight, parse_params
from dltmw.core.creator_batch import CREATOR_BATCHES

console = Console()


def bench(
    workload: Annotated[str, typer.Option(help=f"one of {sorted(WORKLOADS)}")] = "kv",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="workload parameter key=value (repeatable)"),
    ] = None,
    in_flight: Annotated[
        int,
        typer.Option(
            help="closed loop: transactions in flight (0: the workload's default, 256 to fill "
            "100-tx blocks, notary-cluster 1024 to fill its PBFT slots)"
        ),
    ] = 0,
    rate: Annotated[float, typer.Option(help="open loop at this many tx/s (0 = closed)")] = 0.0,
    txs: Annotated[int, typer.Option(help="transactions to submit (upper bound)")] = 5000,
    duration: Annotated[float, typer.Option(help="stop submitting after this many s")] = 120.0,
    channels: Annotated[int, typer.Option(help="channels on the same nodes")] = 1,
    orgs: Annotated[int, typer.Option(help="organisations, one peer each")] = 2,
    policy: Annotated[str, typer.Option(help="AND or OR of the orgs' peers")] = "AND",
    ordering: Annotated[
        str, typer.Option(help="ordering of the ledger flows: none (solo) or pbft (PBFT-lite)")
    ] = "none",
    replicas: Annotated[
        int, typer.Option(help="ordering replicas (orderer nodes); pbft needs at least 4")
    ] = 1,
    restart_check: Annotated[
        bool,
        typer.Option(help="after the run: restart one node, time until it serves a query"),
    ] = False,
    batch_size: Annotated[int, typer.Option(help="block cutter: max tx per block")] = 100,
    batch_timeout_ms: Annotated[int, typer.Option(help="block cutter: timeout")] = 200,
    cut_by_limits_only: Annotated[
        bool,
        typer.Option(
            help="block cutter: by the limits only (Fabric's), not when the intake drains"
        ),
    ] = False,
    reorder: Annotated[
        bool, typer.Option(help="block cutter: readers before writers in each block (Fabric++)")
    ] = False,
    pbft_dissemination: Annotated[
        bool,
        typer.Option(
            help="PBFT-lite: order batch certificates, not envelopes (issue 18; the default"
            " of new channels); --no-pbft-dissemination: pre-prepares carry the envelopes"
        ),
    ] = True,
    pbft_collector: Annotated[
        bool,
        typer.Option(help="PBFT-lite: votes to the primary, certificates back (issue 18)"),
    ] = True,
    creator_batches: Annotated[
        bool,
        typer.Option(help="clients sign one root per request's proposals and envelopes"),
    ] = CREATOR_BATCHES,
    endorsement_batches: Annotated[
        bool,
        typer.Option(help="endorsers sign one root per batch of endorsements (issue 13)"),
    ] = True,
    synchronous: Annotated[str, typer.Option(help="sqlite synchronous mode")] = "FULL",
    postgresql_dsn: Annotated[
        str,
        typer.Option(
            help="peers' ledgers in PostgreSQL: a fresh database per run on this server "
            "(docs/postgresql.md)"
        ),
    ] = "",
    seed: Annotated[int, typer.Option(help="workload random seed")] = 1,
    experiment: Annotated[
        str | None,
        typer.Option(
            help="run an experiment: contention, hotkey, channels, replicas, jetstream, latency,"
            " bus, big-ledger (peak RSS and restart of a large ledger), or flows (every flow:"
            " make bench-all)"
        ),
    ] = None,
    ledger_blocks: Annotated[
        int,
        typer.Option(
            help="experiment big-ledger: blocks of the ledger (issue 18's figure: 100000)"
        ),
    ] = 10_000,
    ledger_block_txs: Annotated[
        int, typer.Option(help="experiment big-ledger: transactions per block")
    ] = 1,
    repeat: Annotated[
        int, typer.Option(help="experiment: runs per point, interleaved; reports the median")
    ] = 1,
    probe: Annotated[bool, typer.Option(help="run the limits probe first")] = True,
    results_dir: Annotated[
        Path | None, typer.Option(help="where RESULTS.md and results/ are (default benchmarks/)")
    ] = None,
    append: Annotated[bool, typer.Option(help="append the result to RESULTS.md")] = True,
    keep: Annotated[Path | None, typer.Option(help="keep the network in this directory")] = None,
    transport: Annotated[
        str | None,
        typer.Option(help="experiment bus: how the embedded nodes talk (inproc or grpc)"),
    ] = None,
) -> None:
    """Benchmark a network of real node processes on 127.0.0.1 and report the figures."""
    # Imported here: matplotlib and psutil (the `bench` extra) load only when benchmarking.
    from dltmw.bench.experiments import default_results_dir, run_experiment, run_one
    from dltmw.bench.runner import BenchConfig, BenchError

    if policy not in {"AND", "OR"}:
        console.print("[red]--policy must be AND or OR[/]")
        raise typer.Exit(2)
    try:
        check_ordering(ordering, replicas)
        shape = NetworkShape(
            orgs=orgs,
            channels=channels,
            policy=policy,
            orderers=replicas,
            ordering=ordering,
            batch_max_tx=batch_size,
            batch_timeout_ms=batch_timeout_ms,
            cut_by_limits_only=cut_by_limits_only,
            reorder=reorder,
            pbft_dissemination=pbft_dissemination,
            pbft_collector=pbft_collector,
            creator_batches=creator_batches,
            endorsement_batches=endorsement_batches,
        )
        cfg = BenchConfig(
            workload=workload,
            params=parse_params(param or []),
            shape=shape,
            in_flight=in_flight or default_in_flight(workload),
            rate=rate,
            txs=txs,
            duration_s=duration,
            seed=seed,
            synchronous=synchronous,
            postgresql_dsn=postgresql_dsn,
            probe=probe,
            restart_check=restart_check,
        )
        out = results_dir or default_results_dir()
        command = "dltmw " + shlex.join(sys.argv[1:])
        if experiment == "bus":  # the embedded message bus: its own in-process network
            _bus(command, duration, repeat, synchronous, transport)
        elif experiment == "big-ledger":  # a large ledger's memory and restart: bigrun.py
            from dltmw.bench.bigledger import LedgerPlan
            from dltmw.bench.bigrun import run_experiment as run_big_ledger

            run_big_ledger(
                LedgerPlan(ledger_blocks, ledger_block_txs),
                out,
                command,
                repeats=max(repeat, 3),
                append=append,
                keep=keep,
                say=console.print,
            )
        elif experiment == "flows":  # every flow (make bench-all): dltmw/bench/suite.py
            from dltmw.bench.suite import run_suite

            run_suite(cfg, out, console, command, repeat=repeat, append=append)
        elif experiment:
            run_experiment(experiment, cfg, out, console, command, append=append, repeat=repeat)
        else:
            run_one(cfg, out, console, command, append=append, keep=keep)
    except (ParamError, BenchError, ValueError) as exc:
        console.print(f"[red]bench failed:[/] {exc}")
        raise typer.Exit(1) from exc


def _bus(
    command: str, duration_s: float, repeat: int, synchronous: str, transport: str | None
) -> None:
    """`--experiment bus` (dltmw/bench/bus.py): --duration is the seconds of each throughput
    round (default 10 when left at 120), --repeat the rounds (at least 3), --transport the
    embedded network's (default: `dltmw.open`'s)."""
    import asyncio
    from dataclasses import replace

    from dltmw.bench.bus import BusBenchConfig, report, run

    seconds = 10.0 if duration_s == 120.0 else duration_s
    cfg = BusBenchConfig(seconds=seconds, synchronous=synchronous)
    if transport is not None:
        cfg = replace(cfg, transport=transport)  # type: ignore[arg-type]  # open() checks it
    result = asyncio.run(run(cfg, rounds=max(3, repeat)))
    console.print(report(result, command))
