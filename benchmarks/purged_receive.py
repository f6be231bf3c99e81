"""What a bus subscription costs to get past a purged private message (issue 14, purge16).

An in-process two-org network (`dltmw.open`, the default topology with private agreements on,
so the private transaction is reported owed to Org2's node). Org1 publishes "before", a
private message to Org2 and "after"; both organisations purge the private payload; then an Org2
subscriber from block 0 (its client's `deadline_s` = DEADLINE_S) reads until "after" or an
error. Counted: `Client.receive_private` calls (Receive RPCs) of the subscription, the private
store reads (thread round trips) of the Receive path (`PrivateStore.payload` on main,
`PrivateStore.payload_or_purge` on this branch), and the wall time to get past the purged
message. Tree-agnostic (a tree without `Message.purged` / `PayloadPurged` prints what it got).
Prints one JSON line.

    PYTHONPATH=<tree> .venv/bin/python benchmarks/purged_receive.py [DEADLINE_S]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dltmw
from dltmw.client.purge import approve, purge_body, submit_purge
from dltmw.ledger.private_store import PrivateStore
from dltmw.runtime.roles.privacy.hybrid import load_privacy_key
from dltmw.sdk.network import DEFAULT_TOPOLOGY

TOPOLOGY = DEFAULT_TOPOLOGY.replace(
    'members = ["Org1", "Org2"]',
    'members = ["Org1", "Org2"]\nprivate_agreement = "AND(Org1.peer, Org2.peer)"',
)
CALLS: Counter[str] = Counter()


def _count(cls: Any, name: str) -> None:
    """Count calls of `cls.name` (in this process: the in-process nodes' stores too)."""
    original = getattr(cls, name, None)
    if original is None:
        return

    async def counted(*args: Any, **kwargs: Any) -> Any:
        CALLS[name] += 1
        return await original(*args, **kwargs)

    setattr(cls, name, counted)


async def main(deadline_s: float) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="dltmw-pr-"))
    try:
        return await _run(work, deadline_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _run(work: Path, deadline_s: float) -> dict[str, object]:
    (work / "topology.toml").write_text(TOPOLOGY)
    async with dltmw.open(work / "net", work / "topology.toml") as net:
        org1 = net.bus("user1.org1", "main")
        await org1.create_topic("otc")
        await org1.create_private_topic("otc", ["Org2"])
        await org1.publish("otc", b"before")
        secret = await org1.publish_private("otc", b"secret", ["Org2"])
        await org1.publish("otc", b"after")
        org2 = net.client("user1.org2", deadline_s=deadline_s)
        pc1 = await net.client("user1.org1").private()
        pc2 = await org2.private()
        nonce, tx_id = pc1.new_nonce()
        keys = [
            load_privacy_key((work / "net" / "nodes" / n / "privacy.key").read_bytes()).public_key
            for n in ("peer0.org1", "peer0.org2")
        ]
        body = purge_body("main", tx_id, [secret.payload], [], keys)
        await submit_purge(
            pc1, "main", body, [approve(pc.client.signer, body) for pc in (pc1, pc2)], nonce
        )
        for _ in range(200):  # until Org2's node executed the purge (no longer readable)
            try:
                if await org2.receive_private("main", secret.payload) is None:
                    break
            except dltmw.Error:
                break
            await asyncio.sleep(0.05)
        receive = org2.receive_private

        async def counted_receive(*args: Any) -> Any:
            CALLS["receive_private"] += 1
            return await receive(*args)

        org2.receive_private = counted_receive  # type: ignore[method-assign]
        _count(PrivateStore, "payload")
        _count(PrivateStore, "payload_or_purge")
        got: list[str] = []
        start = time.perf_counter()
        error = ""
        try:
            async with dltmw.Bus(org2, "main").subscribe("otc") as sub:
                async for m in sub:
                    got.append("purged" if getattr(m, "purged", False) else m.payload.decode())
                    if m.payload == b"after":
                        break
        except dltmw.Error as exc:
            error = f"{type(exc).__name__}/{exc.reason}"
        elapsed = time.perf_counter() - start
    return {
        "deadline_s": deadline_s,
        "messages": got,
        "error": error,
        "seconds": round(elapsed, 3),
        "receive_rpcs": CALLS["receive_private"],
        "store_reads": CALLS["payload"] + CALLS["payload_or_purge"],
        "load_average_1m": os.getloadavg()[0],
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0))))
