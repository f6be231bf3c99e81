"""`python -m benchmarks.notary --cluster`: notary-CLUSTER throughput (not a test).

Four notary processes (n = 3f+1 = 4, one organisation each) on 127.0.0.1 run PBFT-lite over mTLS;
each keeps its own sqlite spent-set and record log (synchronous=FULL). A transaction spends 2
fresh inputs and counts as notarised only when f+1 = 2 distinct members returned their signature
for it — what a cluster client accepts — so every batch is sent on NotariseStream calls to two
different members (pairs rotate over the members). Requests are built and signed
before the clock starts. Reported: notarisations/s, batch latency (slower of the two members)
p50/p99, the CPU of all four notary processes per notarisation, and an audit that the four
spent-sets are identical (2 rows per notarisation).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from benchmarks.notary import Message, cpu_s, messages, size
from dltmw.client.utxo import NotaryClient, PartyFiles
from dltmw.core.utxo.build import TxSpec, build_transaction, notarisation_payload, sign_request
from dltmw.core.utxo.model import Command, Ref, read_transaction
from dltmw.v1 import notarisation_pb2

CLUSTER = "notaries"
MEMBERS = [f"notary{i}" for i in range(4)]
INPUTS_PER_TX = 2


def topology(clients: int) -> str:
    """Two client organisations and four notary organisations forming one cluster."""
    out = ['name = "notary-cluster-bench"']
    out += [f'[[orgs]]\nid = "{o}"' for o in ("Org1", "Org2", "N0", "N1", "N2", "N3")]
    out += [
        f'[[nodes]]\nid = "{m}"\norg = "N{i}"\nroles = ["notary"]' for i, m in enumerate(MEMBERS)
    ]
    for i in range(clients):
        out.append(f'[[clients]]\nid = "c{i}"\norg = "{"Org1" if i % 2 == 0 else "Org2"}"')
    members = ", ".join(f'"{m}"' for m in MEMBERS)
    out.append(f'[[notary_clusters]]\nid = "{CLUSTER}"\nmembers = [{members}]')
    return "\n\n".join(out) + "\n"


def make_requests(party: PartyFiles, n: int) -> list[notarisation_pb2.NotarisationRequest]:
    """n signed requests for the cluster, each spending INPUTS_PER_TX fresh states."""
    me = party.signer.identity_bytes
    out = []
    for _ in range(n):
        spec = TxSpec(
            notary=CLUSTER,
            nonce=secrets.token_bytes(32),
            inputs=[Ref(secrets.token_hex(32), 0) for _ in range(INPUTS_PER_TX)],
            commands=[Command("cash", "move", (me,))],
        )
        payload = notarisation_payload(read_transaction(build_transaction(spec)), me)
        out.append(sign_request(payload, party.signer))
    return out


async def one_stream(
    client: NotaryClient, requests: Sequence[Message]
) -> tuple[list[bool], list[float]]:
    """Per request: did this member sign it; per batch: its latency."""
    sent: list[float] = []
    signer = b""

    async def batches() -> AsyncIterator[Message]:
        for message in requests:
            sent.append(time.perf_counter())
            yield message

    signed: list[bool] = []
    latencies: list[float] = []
    async for results in client.notarise_batches(batches()):
        latencies.append(time.perf_counter() - sent[len(latencies)])
        for r in results:
            signer = signer or r.response.notary_signature.signer
            ok = r.reason == 0 and r.response.notary_signature.signer == signer
            signed.append(ok and bool(r.response.notary_signature.signature))
    return signed, latencies


async def pair(
    a: NotaryClient, b: NotaryClient, requests: Sequence[Message]
) -> tuple[int, int, list[float]]:
    """The same batches to two members at once: (notarised by both, not, batch latencies)."""
    (sa, la), (sb, lb) = await asyncio.gather(one_stream(a, requests), one_stream(b, requests))
    both = sum(1 for x, y in zip(sa, sb, strict=True) if x and y)
    return both, sum(map(size, requests)) - both, [max(x, y) for x, y in zip(la, lb, strict=True)]


def ok(result: notarisation_pb2.NotarisationResult) -> bool:
    """Signed (with a signature) rather than refused."""
    return result.reason == 0 and bool(result.response.notary_signature.signature)


async def relay(
    a: NotaryClient, b: NotaryClient, requests: Sequence[Message]
) -> tuple[int, int, list[float]]:
    """Each batch to member `a`; once `a` answered it, the same batch to member `b` (which
    usually has the tx_ids signed already and answers from its store): pipelined streams."""
    handed: asyncio.Queue[tuple[float, Message] | None]
    handed = asyncio.Queue()
    sent: list[float] = []
    signed_a: list[bool] = []

    async def first() -> AsyncIterator[Message]:
        for message in requests:
            sent.append(time.perf_counter())
            yield message

    async def feed_a() -> None:
        k = 0
        async for results in a.notarise_batches(first()):
            signed_a.extend(
                r.reason == 0 and bool(r.response.notary_signature.signature) for r in results
            )
            await handed.put((sent[k], requests[k]))
            k += 1
        await handed.put(None)

    started: list[float] = []

    async def second() -> AsyncIterator[Message]:
        while (item := await handed.get()) is not None:
            started.append(item[0])
            yield item[1]

    signed_b: list[bool] = []
    latencies: list[float] = []

    async def feed_b() -> None:
        async for results in b.notarise_batches(second()):
            latencies.append(time.perf_counter() - started[len(latencies)])
            signed_b.extend(
                r.reason == 0 and bool(r.response.notary_signature.signature) for r in results
            )

    await asyncio.gather(feed_a(), feed_b())
    both = sum(1 for x, y in zip(signed_a, signed_b, strict=True) if x and y)
    return both, sum(map(size, requests)) - both, latencies


def audit(net: Path) -> tuple[int, bool]:
    """Spent rows of member 0 and whether all four spent-sets are identical."""
    sets = []
    for m in MEMBERS:
        with sqlite3.connect(net / "nodes" / m / "data" / "notary.sqlite") as conn:
            sets.append(set(conn.execute("SELECT ref, tx_id FROM spent")))
    return len(sets[0]), all(s == sets[0] for s in sets)


async def bench_cluster(net: Path, pids: list[int], args: argparse.Namespace) -> None:
    """Run the measured phase and print the figures."""
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
    conns = [[await NotaryClient.connect(p, m) for m in MEMBERS] for p in parties]
    try:
        signer = parties[0].signer if args.batch_sign else None
        warm = messages(make_requests(parties[0], args.batch), args.batch, signer)
        await pair(conns[0][0], conns[0][1], warm)
        cpu0, t0 = sum(cpu_s(p) for p in pids), time.perf_counter()
        jobs = []
        for c, streams in enumerate(work):
            for s, reqs in enumerate(streams):
                k = (c * args.streams + s) % len(MEMBERS)
                a, b = conns[c][k], conns[c][(k + 1) % len(MEMBERS)]
                jobs.append((pair if args.parallel_pair else relay)(a, b, reqs))
        outcomes = await asyncio.gather(*jobs)
        elapsed, used = time.perf_counter() - t0, sum(cpu_s(p) for p in pids) - cpu0
    finally:
        for row in conns:
            for conn in row:
                await conn.close()
    signed = sum(o[0] for o in outcomes)
    refused = sum(o[1] for o in outcomes)
    lat = sorted(x for o in outcomes for x in o[2])
    print(
        f"cluster of {len(MEMBERS)}: notarised {signed} txs (f+1 = 2 member signatures each, "
        f"{INPUTS_PER_TX} inputs), not notarised {refused}, in {elapsed:.2f} s: "
        f"{signed / elapsed:,.0f} notarisations/s"
    )
    print(
        f"batch of {args.batch}: latency p50 {statistics.median(lat) * 1000:.0f} ms, "
        f"p99 {lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000:.0f} ms; "
        f"4 notary processes together {used * 1000 / max(signed, 1):.3f} CPU ms per "
        f"notarisation ({used / elapsed * 100:.0f}% of one core)"
    )
    deadline = time.monotonic() + 60
    rows, same = audit(net)
    while not same and time.monotonic() < deadline:  # a member may still be applying
        await asyncio.sleep(0.2)
        rows, same = audit(net)
    # Nothing here conflicts, so a request not notarised was only answered too late; the
    # members may still have decided it (its spends are then in every member's set).
    exact = rows == (signed + args.batch) * INPUTS_PER_TX and refused == 0
    late_decided = refused > 0 and rows == (signed + refused + args.batch) * INPUTS_PER_TX
    verdict = "ok" if same and exact else "WRONG"
    if same and late_decided:
        verdict = f"ok (the {refused} answered too late were decided too)"
    print(f"spent-set audit: {rows} rows, identical at all members: {same}: {verdict}")
