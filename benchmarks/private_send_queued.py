"""Send latency with queued delivery: a channel whose agreement policy is an expression (an
outbox row per recipient written with the payload and deleted on acknowledgement) against an
ALL_RECIPIENTS channel (no rows), every recipient up, alternated: 3 rounds x 200 sequential
Sends per channel on the 3-organisation network of tests/integration/test_privacy_queued.py.

Run: `.venv/bin/python -m benchmarks.private_send_queued [WORKDIR]`; benchmarks/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from tests.integration.test_privacy_queued import TOPOLOGY, invocation

SENDS = 200
ROUNDS = 3


async def measure(path: Path) -> None:
    pc = PrivacyClient(await GatewayClient.connect(path, "user1.org1"))
    try:
        for _ in range(ROUNDS):
            for channel in ("deals", "strict"):
                took = []
                for i in range(SENDS):
                    start = time.perf_counter()
                    await pc.send(channel, invocation(f"k{i}", "v"), ["Org2", "Org3"])
                    took.append(time.perf_counter() - start)
                median = statistics.median(took) * 1e3
                p90 = sorted(took)[int(SENDS * 0.9)] * 1e3
                print(f"{channel}: median {median:.2f} ms, p90 {p90:.2f} ms", flush=True)
    finally:
        await pc.close()


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/private_send_queued")
    work.mkdir(parents=True, exist_ok=True)
    (work / "topology.toml").write_text(TOPOLOGY)
    init_network(work / "topology.toml", work / "net")
    sup = Supervisor(work / "net")
    try:
        sup.up(timeout_s=90)
        asyncio.run(measure(work / "net"))
    finally:
        print({node: sup.stop(node) for node in list(sup.nodes)})


if __name__ == "__main__":
    main()
