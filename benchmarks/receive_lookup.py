"""Microseconds per Receive store lookup on sqlite: a held payload (hit) and one neither held
nor purged (miss: what a non-recipient's subscriber asks for every private transaction).

Main's Receive reads `PrivateStore.payload`; this branch's `PrivateStore.payload_or_purge`
(one thread round trip; on a miss one more primary-key SELECT on `purged`). Tree-agnostic:
uses `payload_or_purge` where the tree has it. Best of 5 runs of 3,000 lookups each; prints one
JSON line with the 1-minute load average.

    PYTHONPATH=<tree> .venv/bin/python benchmarks/receive_lookup.py
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from dltmw.ledger.private_store import NewPayload, PrivateStore

N, RUNS = 3000, 5


async def main() -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="dltmw-rl-"))
    store = await PrivateStore.open(work / "c.private.sqlite")
    try:
        held = bytes(range(32))
        await store.store_payloads([NewPayload(held, b"x" * 600, (b"k" * 32,))])
        lookup = getattr(store, "payload_or_purge", None) or store.payload
        out: dict[str, object] = {"method": lookup.__name__}
        for name, digest in (("hit", held), ("miss", b"\x01" * 32)):
            best = float("inf")
            for _ in range(RUNS):
                start = time.perf_counter()
                for _ in range(N):
                    await lookup(digest)
                best = min(best, (time.perf_counter() - start) / N * 1e6)
            out[f"{name}_us"] = round(best, 2)
        out["load_average_1m"] = os.getloadavg()[0]
        return out
    finally:
        await store.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
