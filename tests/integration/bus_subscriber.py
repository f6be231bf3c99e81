"""A bus subscriber process for the crash tests: `python bus_subscriber.py NET CLIENT RECORDS N`.

It follows topic "trades" of channel "trades" as CLIENT of the network directory NET and
appends one line per message to RECORDS ("block tx event tx_id payload", fsynced), until it has
N lines, then exits 0. The records file is also its checkpoint (the pattern docs/embedding.md
recommends for exactly-once effects: the position is stored with the effect, in one write), so
a kill -9 at any instant neither loses nor repeats a message.
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


async def main(net: Path, client_id: str, records: Path, wanted: int) -> None:
    checkpointer = RecordsCheckpointer(records)
    have = drop_torn_line(records)
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
                    have += 1
                    if have >= wanted:
                        break
        finally:
            os.close(fd)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
