"""The large-ledger check: memory through a catch-up of a big ledger, and restart-to-serving.

Steps: make the bench network (two orgs' peers, a solo orderer, channel `bench0`), write a
ledger of `plan` into the orderer (`bench/bigledger.py`), start every node, and let the peers
catch up by Deliver, validating and committing every block through their commit path. Memory is
sampled every `SAMPLE_S` (current RSS) and the kernel's high-water mark (`VmHWM`) is read at the
end: the peak RSS of each node over the whole catch-up. Then each node of `restart` is stopped
and started `repeats` times and timed from process start to serving (`restart.restart_one`:
health SERVING and NodeStatus at its full height), with its peak RSS after the restart.

`dltmw bench --experiment big-ledger` (`run_experiment`, part of `make bench-all`) runs the
check with `--ledger-blocks` blocks of `--ledger-block-txs` transactions (10,000 x 1 by
default; issue 18's figure is 100,000 blocks) and appends a RESULTS.md section: the peak RSS of
every node and each restart-to-serving time. `benchmarks/big_ledger.py` is the same check with
its JSON only.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dltmw.bench.bigledger import LedgerPlan, Made, make_ledger
from dltmw.bench.interrupt import nodes_stopped_on_signal
from dltmw.bench.procstats import peak_rss_bytes
from dltmw.bench.restart import restart_one
from dltmw.bench.topology import NetworkShape, topology_toml
from dltmw.client.contracts import NodeAdmin
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network

SAMPLE_S = 1.0
CATCH_UP_DEADLINE_S = 4 * 3600.0
CHANNEL = "bench0"
MiB = 1024 * 1024


def current_rss(pid: int) -> int | None:
    """VmRSS of `pid` in bytes, or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


async def _heights(net: Path, peers: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for peer in peers:
        try:
            status = await NodeAdmin(net, peer).status()
        except Exception:
            out[peer] = -1
            continue
        out[peer] = max((int(c.height) for c in status.channels), default=0)
    return out


def catch_up(
    sup: Supervisor, net: Path, peers: Sequence[str], height: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Wait until every peer holds `height` blocks; RSS samples and peaks per node."""
    pids = {n: p.process.pid for n, p in sup.nodes.items()}
    t0 = time.perf_counter()
    samples: dict[str, int] = dict.fromkeys(pids, 0)
    last_say = 0.0
    while True:
        heights = asyncio.run(_heights(net, peers))
        for node, pid in pids.items():
            rss = current_rss(pid)
            if rss is None:
                raise RuntimeError(f"{node} (pid {pid}) exited during the catch-up")
            samples[node] = max(samples[node], rss)
        elapsed = time.perf_counter() - t0
        if all(h >= height for h in heights.values()):
            break
        if elapsed > CATCH_UP_DEADLINE_S:
            raise TimeoutError(f"peers at {heights} after {elapsed:.0f} s, want {height}")
        if elapsed - last_say >= 30:
            say(f"  catch-up {elapsed:.0f} s: heights {heights}")
            last_say = elapsed
        time.sleep(SAMPLE_S)
    return {
        "catch_up_s": time.perf_counter() - t0,
        "sampled_max_rss_mib": {n: round(v / MiB, 1) for n, v in samples.items()},
        "peak_rss_mib": {n: _mib(peak_rss_bytes(pid)) for n, pid in pids.items()},
    }


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / MiB, 1)


def restarts(
    sup: Supervisor, net: Path, nodes: Sequence[str], repeats: int
) -> dict[str, dict[str, Any]]:
    """`repeats` restarts of each node: times (median, spread) and peak RSS after each."""
    out: dict[str, dict[str, Any]] = {}
    for node in nodes:
        runs = [restart_one(sup, net, node) for _ in range(repeats)]
        times = [r["restart_to_serving_s"] for r in runs]
        out[node] = {
            "restart_to_serving_s": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "ledger_height": runs[-1]["ledger_height"],
            "peak_rss_after_restart_mib": _mib(peak_rss_bytes(sup.nodes[node].process.pid)),
        }
    return out


def run_big(
    workdir: Path,
    plan: LedgerPlan,
    restart: Sequence[str] = ("peer0.org1", "orderer0"),
    repeats: int = 3,
    say: Callable[[str], None] = print,
    synchronous: str = "FULL",
    resume: bool = False,
) -> dict[str, Any]:
    """The whole check in `workdir` (emptied first); the figures as a dict. With `resume`, the
    network of an earlier run in `workdir` is started again as it is (its ledger made; the
    peers continue their catch-up from where they stopped, as new processes)."""
    shape = NetworkShape()
    net = workdir / "net"
    if resume:
        made = Made(plan.blocks + 1, plan.txs, 0.0)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        (workdir / "topology.toml").write_text(topology_toml(shape, ("kv",)))
        init_network(workdir / "topology.toml", net, synchronous)
        say(f"writing {plan.blocks} blocks of {plan.txs_per_block} tx into orderer0 ...")
        made = make_ledger(net, CHANNEL, plan)
        say(f"  made in {made.seconds:.1f} s; starting the nodes")
    result: dict[str, Any] = {
        "blocks": plan.blocks,
        "txs_per_block": plan.txs_per_block,
        "txs": plan.txs,
        "height": made.height,
        "make_s": round(made.seconds, 1),
        "resumed": resume,
    }
    sup = Supervisor(net)
    with nodes_stopped_on_signal(sup.down):  # (interrupt.py)
        try:
            t0 = time.perf_counter()
            sup.up(timeout_s=600)
            result["up_s"] = round(time.perf_counter() - t0, 2)
            result.update(catch_up(sup, net, shape.peer_ids(), made.height, say))
            say(f"  caught up in {result['catch_up_s']:.0f} s; peaks {result['peak_rss_mib']}")
            result["restarts"] = restarts(sup, net, restart, repeats)
        finally:
            sup.down()
    return result


def run_experiment(
    plan: LedgerPlan,
    results_dir: Path,
    command: str,
    *,
    repeats: int = 3,
    append: bool = True,
    keep: Path | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The check as a `dltmw bench` experiment: in `keep` or a temporary directory; the figures
    to results/<stamp>-big-ledger/report.json and, with `append`, a section of RESULTS.md."""
    started = datetime.now(UTC)
    if keep is not None:
        result = run_big(keep, plan, repeats=repeats, say=say)
    else:
        with tempfile.TemporaryDirectory(prefix="dltmw-big-") as tmp:
            result = run_big(Path(tmp) / "big", plan, repeats=repeats, say=say)
    result["command"] = command
    result["started_utc"] = f"{started:%Y-%m-%d %H:%M}"
    result["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    result["load_average"] = round(os.getloadavg()[0], 2)  # at the end: how shared the cores were
    out = results_dir / "results" / f"{started:%Y%m%dT%H%M%SZ}-big-ledger" / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if append:
        with (results_dir / "RESULTS.md").open("a") as f:
            f.write(section(result, out.relative_to(results_dir).as_posix()))
    say(f"report: {out}")
    return result


def section(result: dict[str, Any], report: str) -> str:
    """Markdown: the ledger, the peak RSS of every node over the catch-up, each restart."""
    peaks = ", ".join(f"{n} {mb}" for n, mb in sorted(result["peak_rss_mib"].items()))
    lines = [
        f"\n## Large ledger: peak RSS through a catch-up, restart to serving (issue 18), "
        f"{result['blocks']:,} blocks\n\n",
        f"{result['started_utc']} UTC, {result['machine']}; load average (1 min) at the end "
        f"{result['load_average']}. The orderer's ledger ({result['blocks']:,} blocks of "
        f"{result['txs_per_block']} transaction{'' if result['txs_per_block'] == 1 else 's'}, "
        f"solo ordering) written in {result['make_s']} s "
        "(`bench/bigledger.py`); the peers caught up from empty by Deliver through their commit "
        f"path in {result['catch_up_s']:.0f} s. Report: `{report}`.\n",
        f"\n```\n{result['command']}\n```\n",
        f"\nPeak RSS (VmHWM) over the catch-up, MiB: {peaks}.\n\n",
        "| node | restart to serving, s (every run) | median | ledger height "
        "| peak RSS after restart, MiB |\n|---|---|---|---|---|\n",
    ]
    for node, r in result["restarts"].items():
        every = ", ".join(f"{t:.2f}" for t in r["restart_to_serving_s"])
        lines.append(
            f"| {node} | {every} | {r['median_s']:.2f} | {r['ledger_height']:,} "
            f"| {r['peak_rss_after_restart_mib']} |\n"
        )
    return "".join(lines)
