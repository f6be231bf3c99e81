"""Counts of given-up private deliveries on real node processes (branch priv58), runnable against
an older tree too (PYTHONPATH picks the tree; the node processes inherit it).

Network: tests/integration/test_privacy_queued.py's (as test_privacy_given_up.py): Org1, Org2,
Org3 with one peer each, one orderer; `strict` requires every recipient's agreement, `deals` the
sender's and one other's (2 of 3); its `plain` channel and Org2's and Org3's clients go unused.

* refusal: Org3's node down, a private send on `strict` ends in PrivateAgreementPending (3 s),
  the client abandons its delivery and resumes it with a deadline of `--deadline` seconds:
  the answer (status, reason), the seconds it took and the CollectAgreements calls made;
* group: group `g` of the three organisations, Org3's node down, a group payload sent (not
  ordered), then Org3 removed from `g` (commits with Org1 and Org2): for `--window` seconds
  after the REMOVE committed, the sender's push attempts to peer0.org3 and the payloads they
  carried (its log's "delivery of N payload(s) to peer0.org3 failed"), and the outbox state of
  the group payload's row. The REMOVE itself is owed to peer0.org3 on both trees (the removed
  member learns of its removal), so payloads per attempt is what tells them apart.

Run: `PYTHONPATH=<tree>:<tree>/tests .venv/bin/python benchmarks/given_up_counts.py` (prints
JSON; `<tree>/tests`: a tree older than branch sim60 imports the topology's module's helpers as
`integration.*`); benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import grpc

from dltmw.aio.rpc_errors import reason_of
from dltmw.client import GatewayClient
from dltmw.client.groups import create_group, remove_from_group
from dltmw.client.privacy import PrivacyClient
from dltmw.client.private_pending import PrivateAgreementPending
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.v1 import private_payload_pb2
from tests.integration.test_privacy_queued import TOPOLOGY  # the integration tests' network

FAILED = re.compile(r"delivery of (\d+) payload\(s\) to peer0\.org3 failed")


async def refusal(pc: PrivacyClient, deadline_s: float) -> dict[str, Any]:
    """Abandon a pending transaction, then resume it: what answers, how fast, how many calls."""
    nonce, _ = pc.new_nonce()
    try:
        await pc.submit_private("strict", ["Org2", "Org3"], "kv", "put", "k", "v", nonce=nonce)
        raise AssertionError("not pending")
    except PrivateAgreementPending as pending:
        digest = pending.payload_hash
    abandoned = await pc.abandon_delivery("strict", digest)
    calls = [0]
    real = pc.collect_agreements

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await real(*args, **kwargs)

    pc.collect_agreements = counted  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        await pc.resume_private("strict", digest, nonce, deadline_s=deadline_s)
        answer = "committed"
    except grpc.aio.AioRpcError as exc:
        answer = f"{exc.code().name} {reason_of(exc)}"
    return {
        "abandoned": abandoned,
        "answer": answer,
        "seconds": round(loop.time() - start, 3),
        "collect_calls": calls[0],
    }


def outbox_state(net: Path, digest: bytes) -> dict[str, int]:
    db = net / "nodes" / "peer0.org1" / "data" / "deals.private.sqlite"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(f"SELECT node, state FROM outbox WHERE hash = x'{digest.hex()}'")
        return {str(n): int(s) for n, s in rows}
    finally:
        conn.close()


async def group(pc: PrivacyClient, net: Path, sup: Supervisor, window_s: float) -> dict[str, Any]:
    """Pushes to a node whose organisation left the group, for `window_s` after the REMOVE."""
    sup.start("peer0.org3")
    sup.wait_ready("peer0.org3", 60)
    await create_group(pc, "deals", "g", ["Org1", "Org2", "Org3"])
    sup.kill("peer0.org3")
    call = private_payload_pb2.PrivateInvocation(
        contract="kv", function="put", args=[b"late", b"call"], group="g"
    )
    sent = await pc.send("deals", call.SerializeToString(), [])
    log = net / "run" / "logs" / "peer0.org1.log"
    await remove_from_group(pc, "deals", "g", ["Org3"])
    offset = log.stat().st_size
    await asyncio.sleep(window_s)
    with log.open(errors="replace") as f:
        f.seek(offset)
        carried = [int(m.group(1)) for m in FAILED.finditer(f.read())]
    return {
        "window_s": window_s,
        "push_attempts": len(carried),
        "payloads_pushed": sum(carried),
        "group_payload_pushes": sum(carried) - len(carried),  # the REMOVE rides in each
        "group_payload_state": outbox_state(net, sent.payload_hash),
    }


async def main(deadline_s: float, window_s: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="givenup-", dir=os.environ.get("TMPDIR")))
    (tmp / "topology.toml").write_text(TOPOLOGY)
    init_network(tmp / "topology.toml", tmp / "net")
    sup = Supervisor(tmp / "net")
    out: dict[str, Any] = {"tree": os.environ.get("PYTHONPATH", "")}
    try:
        sup.up(timeout_s=90)
        sup.kill("peer0.org3")
        gateway = await GatewayClient.connect(tmp / "net", "user1.org1")
        pc = PrivacyClient(gateway, pending_deadline_s=3.0)
        try:
            out["refusal"] = await refusal(pc, deadline_s)
            out["group"] = await group(pc, tmp / "net", sup, window_s)
        finally:
            await pc.close()
    finally:
        for node in list(sup.nodes):
            if sup.running(node):
                sup.stop(node)
    out["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deadline", type=float, default=30.0, help="the resume's deadline, s")
    parser.add_argument("--window", type=float, default=60.0, help="pushes counted for, s")
    args = parser.parse_args()
    asyncio.run(main(args.deadline, args.window))
