"""Where a lone transaction's latency goes, hop by hop, from the nodes' own OpenTelemetry spans.

Why: issue 13 asks p50 ≤ 10 ms at 100 tx/s on real processes, and `dltmw bench` gives only the
end-to-end figure. Every node already records a span per transaction stage (docs/operations.md
"Tracing": `endorse` on each endorsing peer, `order` on the orderer, `commit` on each peer), in
the trace named by the tx id, all stamped by this one machine's clock. This script starts the
benchmark's two-organisation network (kv, `AND`, solo orderer, sqlite FULL) with tracing on,
runs an open loop of kv puts at `--rate` tx/s through one SDK client on its pipelined Transact
stream (as `dltmw bench` does; the client stamps each transaction's send and commit status),
collects the spans in an OTLP collector of its own (127.0.0.1), and prints per segment the
median and p90 over the transactions whose trace is complete:

    to endorser   client send → the first peer starts simulating (SDK, gateway, link)
    endorse       the slower peer's `endorse` span (simulation and signing)
    to orderer    the last endorsement → the orderer takes the envelope (back through the
                  gateway to the client, the client signs, Transact, the gateway's checks,
                  Broadcast)
    order         the orderer's `order` span (intake until durably accepted)
    to commit     accepted → the gateway peer starts committing its block (cut, Deliver)
    commit        the gateway peer's `commit` span (validation + sqlite commit)
    notify        its commit ends → the client has the commit status
    total         send → commit status (medians of segments do not add up to it)

Tracing costs CPU on every node (a span per stage per transaction), so the total here is a
little above `dltmw bench --rate` without tracing; read the split, not the sum.

    .venv/bin/python benchmarks/latency_trace.py --rate 100 --txs 600
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from dltmw.bench.topology import NetworkShape, topology_toml
from dltmw.bench.workloads import Workload, make_workload
from dltmw.client import GatewayClient
from dltmw.client.files import ClientFiles
from dltmw.ops.supervisor import Supervisor
from dltmw.ops.trace_sink import Seen, TraceSink, trace_sink
from dltmw.pki.network import init_network

FLUSH_S = 3.0  # after the last transaction: every exporter sends what it holds
EXPORT_DELAY_MS = 200


def segments(
    spans: list[Seen], sent_ns: int, done_ns: int, gateway: str
) -> dict[str, float] | None:
    """The transaction's segments in ms (client stamps `sent_ns`, `done_ns` and the nodes'
    spans); None when a stage's span is missing."""
    endorse = [s for s in spans if s.name == "endorse"]
    order = [s for s in spans if s.name == "order"]
    commit = [s for s in spans if s.name == "commit" and s.service == gateway]
    if not endorse or not order or not commit:
        return None
    first = min(s.start_ns for s in endorse)
    last = max(s.end_ns for s in endorse)
    o, c = order[0], commit[0]
    ms = 1e-6
    return {
        "to endorser": (first - sent_ns) * ms,
        "endorse": max(s.end_ns - s.start_ns for s in endorse) * ms,
        "to orderer": (o.start_ns - last) * ms,
        "order": (o.end_ns - o.start_ns) * ms,
        "to commit": (c.start_ns - o.end_ns) * ms,
        "commit": (c.end_ns - c.start_ns) * ms,
        "notify": (done_ns - c.end_ns) * ms,
        "total": (done_ns - sent_ns) * ms,
    }


def with_tracing(net: Path, endpoint: str) -> None:
    """Turn tracing on in every node.toml of `net`."""
    for toml in sorted((net / "nodes").glob("*/node.toml")):
        text = toml.read_text()
        if "[tracing]" in text:
            raise SystemExit(f"{toml} already has a [tracing] table")
        toml.write_text(
            f'{text}\n[tracing]\notlp_endpoint = "{endpoint}"\n'
            f"export_delay_ms = {EXPORT_DELAY_MS}\n"
        )


async def run(args: argparse.Namespace, work: Path) -> None:
    async with trace_sink() as (collector, endpoint):
        await _run_with(args, work, collector, endpoint)


async def _run_with(
    args: argparse.Namespace, work: Path, collector: TraceSink, endpoint: str
) -> None:
    workload = make_workload("kv", {}, 1)
    shape = workload.network(NetworkShape())
    topo = work / "topology.toml"
    topo.write_text(topology_toml(shape, workload.contracts))
    net = work / "net"
    init_network(topo, net, "FULL")
    with_tracing(net, endpoint)
    sup = Supervisor(net)
    client_id = shape.client_ids()[0]
    try:
        await asyncio.to_thread(sup.up, 120)
        stamps = await _drive(args, net, client_id, workload, shape.channel_ids())
        await asyncio.sleep(FLUSH_S)
    finally:
        await asyncio.to_thread(sup.down)
    gateway = _gateway_of(net, client_id)
    rows = [
        segments(collector.traces.get(bytes.fromhex(tx_id[:32]), []), sent, done, gateway)
        for tx_id, sent, done in sorted(stamps, key=lambda t: t[1])
    ]
    if args.debug:
        kinds: dict[tuple[str, str], int] = defaultdict(int)
        for spans in collector.traces.values():
            for s in spans:
                kinds[(s.service, s.name)] += 1
        print(f"{len(collector.traces)} traces; spans by (service, name): {dict(kinds)}")
    _report(args, [r for r in rows if r is not None])


async def _drive(
    args: argparse.Namespace,
    net: Path,
    client_id: str,
    workload: Workload,
    channels: tuple[str, ...],
) -> list[tuple[str, int, int]]:
    """The setup, then the open loop; (tx id, sent ns, commit status ns) per transaction."""
    stamps: list[tuple[str, int, int]] = []
    client = await GatewayClient.connect(net, client_id)
    try:
        for op in workload.setup_ops(channels):
            await client.submit_transaction(op.channel, op.contract, op.function, *op.args)

        async def one(i: int) -> None:
            op = workload.op(i, channels[0])
            sent = time.time_ns()
            done = await client.submit_transaction(op.channel, op.contract, op.function, *op.args)
            stamps.append((done.tx_id, sent, time.time_ns()))

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for i in range(args.txs):
            await asyncio.sleep(max(0.0, start + i / args.rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    finally:
        await client.close()
    return stamps


def _report(args: argparse.Namespace, complete: list[dict[str, float]]) -> None:
    skip = args.warmup
    complete = complete[skip:] if len(complete) > skip else complete
    print(
        f"rate {args.rate} tx/s, {args.txs} txs, {len(complete)} complete traces "
        f"(warm-up {skip} left out), load average {os.getloadavg()}"
    )
    print(f"{'segment':<12} {'p50 ms':>8} {'p90 ms':>8}")
    for key in complete[0] if complete else ():
        values = sorted(r[key] for r in complete)
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        print(f"{key:<12} {statistics.median(values):8.2f} {p90:8.2f}")


def _gateway_of(net: Path, client_id: str) -> str:
    """The node id of the gateway `client_id` connects to (its files name it)."""
    gateway = ClientFiles.load(net, client_id).gateway
    if gateway is None:
        raise SystemExit(f"client {client_id} names no gateway")
    return gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--txs", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=50, help="first traces left out")
    parser.add_argument("--debug", action="store_true", help="print the spans collected")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latency-trace-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
