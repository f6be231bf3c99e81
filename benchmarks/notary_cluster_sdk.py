"""The SDK's notary-cluster client against a running cluster: throughput and members' CPU per
notarisation, by client mode, alternated (an analysis tool, not a test).

    dltmw bench --workload notary-cluster --txs 300 --keep DIR   # makes the network, once
    dltmw up DIR/net
    PYTHONPATH=. .venv/bin/python -m benchmarks.notary_cluster_sdk DIR/net [calls] [concurrent]
    dltmw down DIR/net

Each round notarises `calls` fresh issue transactions through `ClusterNotaryClient` with
`concurrent` callers, in each mode (attest, batched) — (True, True): the SDK's default, batches
on NotariseStream; (True, False): one unary call per request; (False, False): unary and every
asked member orders — and prints notarisations/s and the members' CPU (from /proc) per
notarisation. Rounds alternate the order of the modes. Members are found by their node
directory under the network given, so other networks on the machine are not counted.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from dltmw.client.notary_cluster import ClusterNotaryClient
from dltmw.client.utxo import PartyFiles
from dltmw.core.utxo.build import (
    TxSpec,
    build_transaction,
    cash_output,
    notarisation_payload,
    sign_request,
)
from dltmw.core.utxo.model import Command, read_transaction
from dltmw.v1 import notarisation_pb2

MODES = [(True, True), (True, False), (False, False)]


def member_pids(net: Path, members: tuple[str, ...]) -> dict[str, int]:
    """PIDs of the node processes (not their keepers) of `members` in network `net`."""
    command = ["pgrep", "-af", "dltmw.runtime"]
    out = subprocess.run(command, check=False, capture_output=True, text=True)
    pids = {}
    for line in out.stdout.splitlines():
        pid, cmd = line.split(" ", 1)
        for m in members:
            if f"{net}/nodes/{m}/" in cmd:
                pids[m] = int(pid)
    return pids


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def issue_request(party: PartyFiles, cluster: str) -> notarisation_pb2.NotarisationRequest:
    me = party.signer.identity_bytes
    spec = TxSpec(
        notary=cluster,
        nonce=secrets.token_bytes(32),
        inputs=[],
        outputs=[cash_output(me, me, "JPY", 100)],
        commands=[Command("cash", "issue", (me,))],
    )
    wire = read_transaction(build_transaction(spec))
    return sign_request(notarisation_payload(wire, me), party.signer)


async def one_round(
    net: Path, mode: tuple[bool, bool], calls: int, concurrent: int, cluster: str = "notaries"
) -> None:
    attest, batched = mode
    party = PartyFiles.load(net, "user1.org1")
    requests = [issue_request(party, cluster) for _ in range(calls)]
    client = ClusterNotaryClient(party, cluster, attest=attest, batched=batched)
    pids = member_pids(net, client.members)
    before = {m: cpu_s(p) for m, p in pids.items()}
    async with client:
        started = time.perf_counter()

        async def caller() -> None:
            while requests:
                assert (await client.notarise(requests.pop())).signed

        await asyncio.gather(*(caller() for _ in range(concurrent)))
        elapsed = time.perf_counter() - started
    used = sum(cpu_s(p) - before[m] for m, p in pids.items())
    print(
        f"attest={attest} batched={batched}: {calls / elapsed:.0f}/s, members' CPU "
        f"{used / calls * 1e3:.2f} ms per notarisation, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


async def main(net: Path, calls: int, concurrent: int, rounds: int = 3) -> None:
    for i in range(rounds):
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            await one_round(net, mode, calls, concurrent)


if __name__ == "__main__":
    asyncio.run(
        main(
            Path(sys.argv[1]).resolve(),
            int(sys.argv[2]) if len(sys.argv) > 2 else 600,
            int(sys.argv[3]) if len(sys.argv) > 3 else 32,
        )
    )
