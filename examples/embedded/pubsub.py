"""Publish/subscribe between two organisations on an embedded dltmw network.

Run: `python examples/embedded/pubsub.py` (prints one line per message and `OK` at the end).

Org1 publishes order fills on topic "fills"; Org2's subscriber receives them in commit order,
each ordered, signed and committed on both organisations' peers before delivery. The whole
network (an orderer and one peer per organisation) runs inside this process.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import dltmw

FILLS = [("XS1234", 100, "99.50"), ("XS1234", 250, "99.55"), ("US0378", 10, "187.20")]


async def main() -> int:
    with tempfile.TemporaryDirectory() as home:
        async with dltmw.open(Path(home) / "net") as net:
            org1, org2 = net.bus("user1.org1"), net.bus("user1.org2")
            await org1.create_topic("fills")
            for isin, qty, price in FILLS:
                sent = await org1.publish(
                    "fills", f"{isin} {qty} @ {price}".encode(), {"isin": isin}
                )
                print(f"org1 published tx {sent.tx_id[:12]} in block {sent.block_number}")
            checkpoints = dltmw.FileCheckpointer(Path(home) / "checkpoints")
            received = []
            async with org2.subscribe("fills", "org2-fills", checkpoints) as subscription:
                async for message in subscription:
                    print(
                        f"org2 received {message.payload.decode()} (isin={message.headers['isin']})"
                    )
                    received.append(message.payload.decode())
                    if len(received) == len(FILLS):
                        break
            ok = received == [f"{i} {q} @ {p}" for i, q, p in FILLS]
            print("OK" if ok else "MISMATCH")
            return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
