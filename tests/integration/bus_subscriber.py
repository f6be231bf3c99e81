"""A bus subscriber process for the crash tests: `python bus_subscriber.py NET CLIENT RECORDS N
[sdk]`.

It follows topic "trades" of channel "trades" as CLIENT of the network directory NET and
appends one line per message to RECORDS ("block tx event tx_id payload", fsynced), until it has
N lines, then exits 0. The records file is also its checkpoint (the pattern docs/embedding.md
recommends for exactly-once effects: the position is stored with the effect, in one write), so
a kill -9 at any instant neither loses nor repeats a message.

With `sdk`, the checkpoint is the SDK's own `FileCheckpointer` (RECORDS' directory/checkpoints)
instead, every start appends a "restart" line, and it stops at N distinct messages: a kill -9
between a record and the checkpoint's save repeats that one message after the restart (the
SDK's documented contract), nothing else.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import dltmw


class RecordsCheckpointer:
    """The position of the last complete record line (a torn last line never counts)."""

    def __init__(self, records: Path) -> None:
        self.records = records

    def lines(self) -> list[str]:
        try:
            text = self.records.read_text()
        except FileNotFoundError:
            return []
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        return complete.splitlines()

    async def load(self, name: str) -> dltmw.Position | None:
        lines = self.lines()
        if not lines:
            return None
        block, tx, event = (int(x) for x in lines[-1].split()[:3])
        return dltmw.Position(block, tx, event)

    async def save(self, name: str, position: dltmw.Position) -> None:
        """Nothing to do: the record of the message carries its position."""


def drop_torn_line(records: Path) -> int:
    """Drop a torn last line (killed mid-write) before appending more; returns the lines."""
    lines = RecordsCheckpointer(records).lines()
    records.write_text("".join(f"{line}\n" for line in lines))
    return len(lines)


async def main(net: Path, client_id: str, records: Path, wanted: int, sdk: bool = False) -> None:
    checkpointer: dltmw.Checkpointer = RecordsCheckpointer(records)
    have = drop_torn_line(records)
    seen: set[str] = set()
    if sdk:
        (records.parent / "checkpoints").mkdir(exist_ok=True)
        checkpointer = dltmw.FileCheckpointer(records.parent / "checkpoints")
        lines = RecordsCheckpointer(records).lines()
        seen = {line.split()[3] for line in lines if line != "restart"}
        have = len(seen)
        with records.open("a") as f:
            f.write("restart\n")
    print("SUBSCRIBED", have, flush=True)
    if have >= wanted:
        return
    async with dltmw.connect(net) as network:
        bus = network.bus(client_id, "trades")
        fd = os.open(records, os.O_WRONLY | os.O_APPEND)
        try:
            async with bus.subscribe("trades", "crash-test", checkpointer) as subscription:
                async for message in subscription:
                    p = message.position
                    line = f"{p.block} {p.tx_index} {p.event_index} {message.tx_id} "
                    os.write(fd, (line + message.payload.decode() + "\n").encode())
                    os.fsync(fd)
                    if message.tx_id in seen:
                        continue  # the message in hand at a kill, again
                    seen.add(message.tx_id)
                    have += 1
                    if have >= wanted:
                        break
        finally:
            os.close(fd)


if __name__ == "__main__":
    sdk = sys.argv[5:] == ["sdk"]
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), sdk))
