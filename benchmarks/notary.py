"""`python -m benchmarks.notary`: single-notary throughput (not a test).

A real notary process on 127.0.0.1 (mutual TLS, sqlite spent-set with synchronous=FULL) and
`--clients` client identities of two organisations in this process. Every transaction spends 2
fresh inputs (so every request must be signed: the run also checks that none was refused), and
the requests are built and signed before the clock starts. Each client keeps `--streams`
NotariseStream calls busy, sending batches of `--batch` requests; the notary verifies each
batch's request signatures on its thread pool in chunks, decides everything queued at that
moment in ONE sqlite transaction, signs the Merkle root of what it notarised once, commits, and
only then answers.

Reported: notarisations/s over the measured phase, batch latency p50/p99, the notary process's
CPU ms per notarisation, and a check of the spent-set afterwards (2 rows per notarisation, no
state twice). Prints the machine, the command and the figures; the lead records them in
RESULTS.md. The harness runs the same flow as a workload (`dltmw bench --workload notary`,
`notary-cluster`: same report as every flow); this script stays for what the harness does not
report: notarisations per notary signature, and the cluster's relay / parallel-pair modes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import cryptography

from dltmw.client.utxo import NotaryClient, PartyFiles, signed_batch
from dltmw.core.identity import SigningIdentity
from dltmw.core.utxo.build import TxSpec, build_transaction, notarisation_payload, sign_request
from dltmw.core.utxo.model import Command, Ref, read_transaction
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.v1 import notarisation_pb2
from dltmw.v1.notary_service_pb2 import NotariseStreamRequest

INPUTS_PER_TX = 2


def topology(clients: int) -> str:
    out = ['name = "notary-bench"']
    out += [f'[[orgs]]\nid = "{o}"' for o in ("Org1", "Org2", "NotaryOrg")]
    out.append('[[nodes]]\nid = "notary0"\norg = "NotaryOrg"\nroles = ["notary"]')
    for i in range(clients):
        org = "Org1" if i % 2 == 0 else "Org2"
        out.append(f'[[clients]]\nid = "c{i}"\norg = "{org}"')
    return "\n\n".join(out) + "\n"


Message = Sequence[notarisation_pb2.NotarisationRequest] | NotariseStreamRequest


def make_requests(party: PartyFiles, n: int) -> list[notarisation_pb2.NotarisationRequest]:
    """n signed requests, each spending INPUTS_PER_TX fresh states."""
    me = party.signer.identity_bytes
    out = []
    for _ in range(n):
        inputs = [Ref(secrets.token_hex(32), 0) for _ in range(INPUTS_PER_TX)]
        raw = build_transaction(
            TxSpec(
                notary="notary0",
                nonce=secrets.token_bytes(32),
                inputs=inputs,
                commands=[Command("cash", "move", (me,))],
            )
        )
        payload = notarisation_payload(read_transaction(raw), me)
        out.append(sign_request(payload, party.signer))
    return out


def messages(
    requests: Sequence[notarisation_pb2.NotarisationRequest],
    batch: int,
    signer: SigningIdentity | None,
) -> list[Message]:
    """The stream messages of `requests`, `batch` per message; with `signer` (--batch-sign)
    each message carries only the payloads and one requester batch signature."""
    pieces = [requests[i : i + batch] for i in range(0, len(requests), batch)]
    if signer is None:
        return list(pieces)
    return [signed_batch([r.payload for r in piece], signer) for piece in pieces]


def size(message: Message) -> int:
    """Requests in a stream message."""
    return len(message.requests) if isinstance(message, NotariseStreamRequest) else len(message)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_stream(
    client: NotaryClient,
    batches_of: Sequence[Message],
    latencies: list[float],
    signatures: set[bytes] | None = None,
) -> tuple[int, int]:
    """Send the prepared batches on one stream; returns (signed, refused)."""
    sent: asyncio.Queue[float] = asyncio.Queue()

    async def batches() -> AsyncIterator[Message]:
        for message in batches_of:
            await sent.put(time.perf_counter())
            yield message

    signed = refused = 0
    async for results in client.notarise_batches(batches()):
        latencies.append(time.perf_counter() - sent.get_nowait())
        for r in results:
            if r.reason == 0 and r.response.notary_signature.signature:
                signed += 1
                if signatures is not None:
                    signatures.add(r.response.notary_signature.signature)
            else:
                refused += 1
    return signed, refused


async def bench(net: Path, pid: int, args: argparse.Namespace) -> None:
    parties = [PartyFiles.load(net, f"c{i}") for i in range(args.clients)]
    per_stream = args.txs // (args.clients * args.streams)
    t0 = time.perf_counter()
    work = [
        [
            messages(
                make_requests(p, per_stream), args.batch, p.signer if args.batch_sign else None
            )
            for _ in range(args.streams)
        ]
        for p in parties
    ]
    how = "one requester signature per batch" if args.batch_sign else "one per request"
    print(f"built and signed {args.txs} requests ({how}) in {time.perf_counter() - t0:.1f} s")
    clients = [await NotaryClient.connect(p, "notary0") for p in parties]
    latencies: list[float] = []
    signatures: set[bytes] = set()
    try:
        signer = parties[0].signer if args.batch_sign else None
        warm = messages(make_requests(parties[0], args.batch), args.batch, signer)
        await run_stream(clients[0], warm, [])
        cpu0, me0, t0 = cpu_s(pid), time.process_time(), time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                run_stream(c, reqs, latencies, signatures)
                for c, streams in zip(clients, work, strict=True)
                for reqs in streams
            )
        )
        elapsed, cpu = time.perf_counter() - t0, cpu_s(pid) - cpu0
        client_cpu = time.process_time() - me0
    finally:
        for c in clients:
            await c.close()
    signed = sum(s for s, _ in outcomes)
    refused = sum(r for _, r in outcomes)
    lat = sorted(latencies)
    print(
        f"notarised {signed} txs ({INPUTS_PER_TX} inputs each), refused {refused}, "
        f"in {elapsed:.2f} s: {signed / elapsed:,.0f} notarisations/s"
    )
    print(
        f"batch of {args.batch}: latency p50 {statistics.median(lat) * 1000:.0f} ms, "
        f"p99 {lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000:.0f} ms; "
        f"notary CPU {cpu * 1000 / max(signed, 1):.3f} ms per notarisation "
        f"({cpu / elapsed * 100:.0f}% of one core); clients (this process) "
        f"{client_cpu * 1000 / max(signed, 1):.3f} ms per notarisation; "
        f"{len(signatures)} notary signatures ({signed / max(len(signatures), 1):.0f} "
        "notarisations per signature: batch signing)"
    )
    db = net / "nodes" / "notary0" / "data" / "notary.sqlite"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT ref) FROM spent").fetchone()
        txs = conn.execute("SELECT count(*) FROM notarised").fetchone()[0]
    expected = (signed + args.batch) * INPUTS_PER_TX
    ok = rows[0] == rows[1] == expected and txs == signed + args.batch and refused == 0
    print(f"spent-set check: {rows[0]} spent rows, {txs} notarised: " + ("ok" if ok else "WRONG"))


def set_notary_table(net: Path, settings: Sequence[str]) -> None:
    """Append a `[notary]` table with `settings` (KEY=VALUE, TOML values) to the node.toml of
    every node hosting a notary (init writes none: the defaults apply otherwise)."""
    table = "\n[notary]\n" + "".join(
        f"{s.split('=', 1)[0]} = {s.split('=', 1)[1]}\n" for s in settings
    )
    for config in sorted((net / "nodes").glob("*/node.toml")):
        if '"notary"' in config.read_text():
            config.write_text(config.read_text() + table)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notary")
    parser.add_argument("--txs", type=int, default=40_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=2, help="streams per client")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--batch-sign",
        action="store_true",
        help="one requester signature per stream message instead of one per request",
    )
    parser.add_argument(
        "--cluster", action="store_true", help="4-replica PBFT notary cluster (notary_cluster.py)"
    )
    parser.add_argument(
        "--parallel-pair",
        action="store_true",
        help="cluster: send each batch to both members at once (default: one, then the other)",
    )
    parser.add_argument(
        "--notary-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a `[notary]` key of the notary nodes' node.toml (runtime/interpreter.py), "
        "e.g. switch_interval_ms=0.5; repeatable",
    )
    args = parser.parse_args()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"machine: {os.cpu_count()} cores, {model}; Python {platform.python_version()}; "
        f"cryptography {cryptography.__version__}; "
        + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    )
    print("command: python -m benchmarks.notary " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="dltmw-notary-bench-") as tmp:
        topo = Path(tmp) / "topology.toml"
        topo.write_text(cluster_topology(args.clients) if args.cluster else topology(args.clients))
        net = Path(tmp) / "net"
        init_network(topo, net)
        if args.notary_setting:
            set_notary_table(net, args.notary_setting)
        sup = Supervisor(net)
        try:
            sup.up(timeout_s=60)
            if args.cluster:
                pids = [sup.nodes[m].process.pid for m in CLUSTER_MEMBERS]
                asyncio.run(bench_cluster(net, pids, args))
            else:
                asyncio.run(bench(net, sup.nodes["notary0"].process.pid, args))
        finally:
            codes = {n: sup.stop(n) for n in list(sup.nodes)}
            print(f"stopped: {codes}")


if __name__ == "__main__":
    from benchmarks.notary_cluster import MEMBERS as CLUSTER_MEMBERS
    from benchmarks.notary_cluster import bench_cluster
    from benchmarks.notary_cluster import topology as cluster_topology

    main()
