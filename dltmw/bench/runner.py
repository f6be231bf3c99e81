"""One benchmark run: probe the machine, start the network, run the workload, check the ledgers.

Sequence (each step bounded by a deadline): the limits probe (before any node runs, so the nodes
do not disturb it); `init_network` of the benchmark topology into a work directory; every node as
its own process (Supervisor); the workload's setup operations, which must all commit VALID; the
measured phase — closed-loop (`in_flight` workers, each submitting its next transaction when the
previous one has its commit status) or open-loop (a fixed rate, `in_flight` ignored, outstanding
transactions capped); CPU snapshots around the measured phase only; peak RSS; then, with the
nodes still running, a check that every peer's ledger holds every committed transaction with the
same validation code the client was told (in the notary and UTXO flows: that every notary or
vault store holds every final transaction, `stores.py`); with `restart_check`, the restart time
of one node (`restart.py`). The nodes are stopped by PID in every case.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sqlite3
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dltmw.bench import procstats
from dltmw.bench.driver import Driver, Outcome
from dltmw.bench.flow_drivers import make_driver
from dltmw.bench.hotkey import check_hot_account
from dltmw.bench.interrupt import nodes_stopped_on_signal
from dltmw.bench.limits import Limits, probe
from dltmw.bench.restart import restart_to_serving
from dltmw.bench.stores import check_stores
from dltmw.bench.topology import NetworkShape, topology_toml
from dltmw.bench.workloads import (
    IN_FLIGHT_DEFAULT,
    HotAccountWorkload,
    Op,
    Workload,
    make_workload,
)
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.runtime.gc_tuning import frozen_heap

VALID = 1
MAX_OUTSTANDING = 4096  # open-loop cap on transactions in flight
LATE_S = 0.1  # an open-loop send this much behind schedule counts as late
LEDGER_DEADLINE_S = 60.0
PROGRESS_EVERY = 256  # outcomes between two updates of the live progress line (`Tally`)
PROGRESS_REFRESH_HZ = 4  # redraws of that line per second (rich's default: 10)


class BenchError(RuntimeError):
    """The run could not produce a trustworthy result (setup failed, nodes did not start...)."""


@dataclass(frozen=True)
class BenchConfig:
    """Everything that defines a run (reported with its results)."""

    workload: str = "kv"
    params: Mapping[str, str] = field(default_factory=dict)
    shape: NetworkShape = field(default_factory=NetworkShape)
    # Enough to fill 100-tx blocks: with fewer in flight than a block holds, every block waits
    # for the batch timeout and the run measures that timeout, not the system.
    in_flight: int = IN_FLIGHT_DEFAULT
    rate: float = 0.0
    txs: int = 5000
    duration_s: float = 120.0
    seed: int = 1
    synchronous: str = "FULL"
    postgresql_dsn: str = ""  # peers' ledgers in a fresh database of this server (pgstate.py)
    probe: bool = True
    label: str = ""
    restart_check: bool = False  # after the run: restart one node, time until it serves


@dataclass
class RunResult:
    """Raw observations of one run; `report.summarise` turns them into figures."""

    config: BenchConfig
    workload_params: dict[str, object]
    limits: Limits | None
    records: list[tuple[Op, Outcome]] = field(default_factory=list)
    elapsed_s: float = 0.0
    setup_txs: int = 0
    late: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    ledgers: dict[str, dict[str, int]] = field(default_factory=dict)
    invariants: dict[str, Any] = field(default_factory=dict)  # the workload's own, if any
    pids: dict[str, int] = field(default_factory=dict)
    restart: dict[str, Any] = field(default_factory=dict)  # restart.restart_to_serving
    # signatures the clients made over several items (client/creator_signing.py) in the window
    client_signing: dict[str, float] = field(default_factory=dict)
    started_utc: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )


def run_bench(
    cfg: BenchConfig, workdir: Path, console: Console, limits: Limits | None = None
) -> RunResult:
    """Run one benchmark in `workdir` (must be empty or absent); raises BenchError.

    `limits` reuses an earlier probe (an experiment probes once for all its points).
    """
    if cfg.txs < 1 or cfg.in_flight < 1 or cfg.duration_s <= 0 or cfg.rate < 0:
        raise BenchError("txs, in_flight and duration must be positive, rate non-negative")
    workload = make_workload(cfg.workload, cfg.params, cfg.seed)
    cfg = dataclasses.replace(cfg, shape=workload.network(cfg.shape))
    if cfg.probe and limits is None:
        console.print("[bold]limits probe[/] (about 3 s) ...")
        limits = asyncio.run(probe())
    workdir.mkdir(parents=True, exist_ok=True)
    topo = workdir / "topology.toml"
    topo.write_text(topology_toml(cfg.shape, workload.contracts))
    net = workdir / "net"
    init_network(topo, net, cfg.synchronous)
    with ExitStack() as cleanup:
        if cfg.postgresql_dsn:
            from dltmw.bench.pgstate import run_database, use_postgresql

            use_postgresql(
                net, cfg.shape.peer_ids(), cleanup.enter_context(run_database(cfg.postgresql_dsn))
            )
        return _run_network(cfg, workload, net, RunResult(cfg, workload.params(), limits), console)


def _run_network(
    cfg: BenchConfig, workload: Workload, net: Path, result: RunResult, console: Console
) -> RunResult:
    sup = Supervisor(net)
    with nodes_stopped_on_signal(sup.down):  # (interrupt.py)
        return _run_supervised(cfg, workload, net, result, console, sup)


def _run_supervised(
    cfg: BenchConfig,
    workload: Workload,
    net: Path,
    result: RunResult,
    console: Console,
    sup: Supervisor,
) -> RunResult:
    try:
        console.print(f"starting {len(sup.node_ids())} node processes ...")
        try:
            sup.up(timeout_s=120)
        except RuntimeError as exc:
            raise BenchError(f"network did not start: {exc}") from exc
        result.pids = {n: p.process.pid for n, p in sup.nodes.items()}
        if sup.nats is not None:  # jetstream ordering: its nats-servers' CPU counts too
            for i, member in enumerate(sup.nats.plan.members):
                pid = sup.nats.pid(i)
                if pid is not None:
                    result.pids[f"nats.{member.name}"] = pid
        asyncio.run(_session(cfg, workload, net, result, console))
        if cfg.restart_check:
            console.print("restart check: stopping and starting one node ...")
            try:
                result.restart = restart_to_serving(sup, net, cfg.shape)
            except (RuntimeError, TimeoutError) as exc:
                raise BenchError(f"restart check failed: {exc}") from exc
    finally:
        sup.down()
    return result


async def _session(
    cfg: BenchConfig, workload: Workload, net: Path, result: RunResult, console: Console
) -> None:
    options = workload.driver_options()
    driver = await make_driver(workload.driver_kind, net, cfg.shape, options)
    try:
        channels = cfg.shape.channel_ids()
        setup = await _setup(driver, workload.setup_ops(channels), cfg.in_flight)
        await _setup_barrier(net, cfg.shape, setup)
        result.setup_txs = len(setup)
        pids = {**result.pids, "client": procstats.own_pid()}
        with frozen_heap():  # the client's loop out of full collections (gc_tuning.py)
            before = procstats.snapshot(pids)
            signed_before = _client_batches(driver)
            await _measure(cfg, workload, driver, channels, result, console)
            result.cpu_s = procstats.cpu_delta(before, procstats.snapshot(pids))
        after = _client_batches(driver)
        batches, items = after[0] - signed_before[0], after[1] - signed_before[1]
        result.client_signing = {
            "batches": batches,
            "items": items,
            "mean_items_per_batch": round(items / batches, 2) if batches else 0.0,
        }
        result.peak_rss = procstats.peak_rss(pids)
    finally:
        await driver.close()
    console.print("checking every node's ledger or store ...")
    result.ledgers = await check_held(net, cfg.shape, result.records)
    if isinstance(workload, HotAccountWorkload):
        console.print("checking the hot account on every peer ...")
        result.invariants = await check_hot_account(
            lambda peer, ch: ledger_path(net, peer, ch), cfg.shape, workload, result.records
        )


def _client_batches(driver: Driver) -> tuple[int, int]:
    """(signatures over several items, items they cover) of a Gateway driver's clients, or of
    the clients a driver names in `signers` (a private driver's)."""
    clients = getattr(driver, "clients", [])
    signing = getattr(driver, "signers", None) or [
        c.signing for c in clients if hasattr(c, "signing")
    ]
    return sum(s.batches for s in signing), sum(s.batched_items for s in signing)


async def _setup(driver: Driver, ops: Sequence[Op], in_flight: int) -> list[tuple[Op, Outcome]]:
    """Commit the workload's setup operations; every one must be VALID."""
    if not ops:
        return []
    sem = asyncio.Semaphore(in_flight)

    async def one(op: Op) -> Outcome:
        async with sem:
            return await driver.execute(op)

    outcomes = await asyncio.gather(*(one(op) for op in ops))
    bad = [o for o in outcomes if o.code != VALID]
    if bad:
        first = bad[0]
        raise BenchError(
            f"{len(bad)} of {len(ops)} setup transactions did not commit VALID "
            f"(first: code={first.code} failure={first.failure} {first.detail})"
        )
    return list(zip(ops, outcomes, strict=True))


async def _setup_barrier(
    net: Path, shape: NetworkShape, setup: Sequence[tuple[Op, Outcome]]
) -> None:
    """Wait until EVERY peer holds the setup, not only the gateways that answered.

    Without it the first measured transactions can reach an endorser that has not committed the
    last setup block yet (an account "does not exist" there) and fail for the harness's sake.
    """
    if not setup:
        return
    held = await check_held(net, shape, setup)
    behind = {peer: v["missing"] for peer, v in held.items() if v["missing"] or v["mismatched"]}
    if behind:
        raise BenchError(f"peers did not all commit the setup transactions: {behind}")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]measuring[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[figures]}"),
        TimeElapsedColumn(),
        console=console,
        refresh_per_second=PROGRESS_REFRESH_HZ,
    )


class Tally:
    """The measured phase's outcomes: every one kept in `records` (latency per item, from
    submit to answer, is the Outcome's own), counted, and shown on the live progress line only
    every `every` outcomes and at `flush`.

    At saturation `Progress.update` per outcome (a lock, a field dict, a rate computed) and a
    10 Hz refresh thread were ~10 % of the bench client's samples (RESULTS 2026-12-04, ncl6):
    CPU the client took from the nodes it measures, in every workload.
    """

    def __init__(
        self,
        records: list[tuple[Op, Outcome]],
        show: Callable[[int, str], None],
        every: int = PROGRESS_EVERY,
    ) -> None:
        self.records = records
        self.show = show  # (outcomes so far, figures) -> the progress line
        self.every = every
        self.counts = {"valid": 0, "invalid": 0, "failed": 0}
        self.t0 = time.perf_counter()
        self._shown = 0

    def record(self, op: Op, out: Outcome) -> None:
        """Keep `out`; refresh the line every `every` outcomes."""
        self.records.append((op, out))
        key = "failed" if out.code is None else "valid" if out.code == VALID else "invalid"
        self.counts[key] += 1
        if len(self.records) - self._shown >= self.every:
            self.flush()

    def flush(self) -> None:
        """Show the counts and the valid rate so far."""
        counts, done = self.counts, len(self.records)
        rate = counts["valid"] / max(time.perf_counter() - self.t0, 1e-9)
        figures = f"valid {counts['valid']} invalid {counts['invalid']} "
        figures += f"failed {counts['failed']}  {rate:,.0f} valid tx/s"
        self._shown = done
        self.show(done, figures)


async def _measure(
    cfg: BenchConfig,
    workload: Workload,
    driver: Driver,
    channels: tuple[str, ...],
    result: RunResult,
    console: Console,
) -> None:
    with _progress(console) as progress:
        task = progress.add_task("run", total=cfg.txs, figures="")

        def show(done: int, figures: str) -> None:
            progress.update(task, completed=done, figures=figures)

        tally = Tally(result.records, show)
        t0 = tally.t0
        deadline = t0 + cfg.duration_s
        if cfg.rate > 0:
            result.late = await _open_loop(cfg, workload, driver, channels, deadline, tally.record)
        else:
            await _closed_loop(cfg, workload, driver, channels, deadline, tally.record)
        result.elapsed_s = time.perf_counter() - t0
        tally.flush()


Recorder = Callable[[Op, Outcome], None]


async def _closed_loop(
    cfg: BenchConfig,
    workload: Workload,
    driver: Driver,
    channels: tuple[str, ...],
    deadline: float,
    record: Recorder,
) -> None:
    """`in_flight` workers; worker w uses channel w mod N; stop at `txs` or the deadline."""
    seq = itertools.count()

    async def worker(w: int) -> None:
        channel = channels[w % len(channels)]
        for i in seq:
            if i >= cfg.txs or time.perf_counter() >= deadline:
                return
            op = workload.op(i, channel)
            record(op, await driver.execute(op))

    await asyncio.gather(*(worker(w) for w in range(cfg.in_flight)))


async def _open_loop(
    cfg: BenchConfig,
    workload: Workload,
    driver: Driver,
    channels: tuple[str, ...],
    deadline: float,
    record: Recorder,
) -> int:
    """Send at `rate` tx/s regardless of completions; returns how many sends were late."""
    sem = asyncio.Semaphore(MAX_OUTSTANDING)
    tasks: set[asyncio.Task[None]] = set()
    start, late = time.perf_counter(), 0

    async def one(op: Op) -> None:
        try:
            record(op, await driver.execute(op))
        finally:
            sem.release()

    for i in range(cfg.txs):
        due = start + i / cfg.rate
        if due >= deadline:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await sem.acquire()
        late += time.perf_counter() - due > LATE_S
        task = asyncio.create_task(one(workload.op(i, channels[i % len(channels)])))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return late


async def check_held(
    net: Path, shape: NetworkShape, records: Sequence[tuple[Op, Outcome]]
) -> dict[str, dict[str, int]]:
    """`check_ledgers` of the peers, or `stores.check_stores` of the notaries or vaults."""
    if shape.flow == "ledger":
        return await check_ledgers(net, shape, records)
    return await check_stores(net, shape, records)


def ledger_path(net: Path, peer: str, channel: str) -> Path:
    """Where a peer keeps a channel's ledger (see `dltmw.runtime.node`)."""
    return net / "nodes" / peer / "data" / f"{channel}.peer.sqlite"


def read_codes(path: Path, tx_ids: Sequence[str]) -> dict[str, int]:
    """tx_id -> validation code for those of `tx_ids` on a ledger, read-only."""
    if not path.exists():
        raise BenchError(f"no ledger at {path}: the peer does not serve this channel")
    out: dict[str, int] = {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for i in range(0, len(tx_ids), 500):
            chunk = list(tx_ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT tx_id, code FROM txs WHERE tx_id IN ({marks})", chunk)
            out.update((str(t), int(c)) for t, c in rows)
    finally:
        conn.close()
    return out


async def check_ledgers(
    net: Path, shape: NetworkShape, records: Sequence[tuple[Op, Outcome]]
) -> dict[str, dict[str, int]]:
    """Per peer: how many committed transactions it holds, is missing, or holds with another code.

    Peers other than the gateway may be a block behind when the last status arrives, so each is
    polled until it holds them all or the deadline passes (then `missing` says how many).
    """
    expected: dict[str, dict[str, int]] = {ch: {} for ch in shape.channel_ids()}
    for op, out in records:
        if out.code is not None:
            expected[op.channel][out.tx_id] = out.code
    report: dict[str, dict[str, int]] = {}
    for peer in shape.peer_ids():
        found = missing = mismatched = valid = 0
        for channel, codes in expected.items():
            got = await _poll_codes(net, peer, channel, codes)
            found += len(got)
            missing += len(codes) - len(got)
            mismatched += sum(1 for t, c in got.items() if codes[t] != c)
            valid += sum(1 for c in got.values() if c == VALID)
        report[peer] = {
            "found": found,
            "missing": missing,
            "mismatched": mismatched,
            "valid": valid,
        }
    return report


def ledger_codes(net: Path, peer: str, channel: str, tx_ids: Sequence[str]) -> dict[str, int]:
    """`read_codes` of the peer's ledger wherever its node.toml keeps it (sqlite, the default,
    or PostgreSQL)."""
    toml = net / "nodes" / peer / "node.toml"
    ledger = tomllib.loads(toml.read_text()).get("ledger", {}) if toml.exists() else {}
    if ledger.get("state") == "postgresql":
        from dltmw.bench.pgstate import read_codes as read_pg_codes

        return read_pg_codes(ledger["postgresql_dsn"], peer, channel, tx_ids)
    return read_codes(ledger_path(net, peer, channel), tx_ids)


async def _poll_codes(
    net: Path, peer: str, channel: str, codes: Mapping[str, int]
) -> dict[str, int]:
    tx_ids = list(codes)
    deadline = time.monotonic() + LEDGER_DEADLINE_S
    got: dict[str, int] = {}
    while True:
        got = await asyncio.to_thread(ledger_codes, net, peer, channel, tx_ids)
        if len(got) == len(tx_ids) or time.monotonic() >= deadline:
            return got
        await asyncio.sleep(0.2)
