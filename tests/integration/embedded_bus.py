"""A program that embeds a whole network and uses its bus, for the kill -9 tests:
`python embedded_bus.py DIR TRANSPORT START COUNT`.

It runs `dltmw.open(DIR/net, transport=TRANSPORT)` (made on first use, reopened afterwards) and,
in the same process and event loop, publishes messages "m<START>".."m<START+COUNT-1>" on topic
"trades" one after the other as user1.org1, appending "tx_id payload" to DIR/acked.txt
(fsynced) as each publish returns, while two subscribers (s1 as user1.org1, s2 as user1.org2)
follow the topic with the SDK's own `FileCheckpointer` (DIR/checkpoints) and append
"block tx event tx_id payload" per message to DIR/s1.txt and DIR/s2.txt (fsynced). Every start
appends a "restart" line to those files (after dropping a torn last line). Once everything is
published, it exits 0 when both subscribers have the last message.

A kill -9 can land anywhere: between a subscriber's record and its checkpoint's save, the one
message in hand is delivered again after the restart (the SDK's documented contract,
docs/embedding.md); nothing else may repeat, and nothing acknowledged may be missing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import dltmw

TOPIC = "trades"
SUBSCRIBERS = {"s1": "user1.org1", "s2": "user1.org2"}


def complete_lines(path: Path) -> list[str]:
    """The complete lines of `path` (a torn last line, killed mid-write, never counts)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return text[: text.rfind("\n") + 1].splitlines()


def once_but_the_message_in_hand(lines: list[str], kills: int) -> list[list[str]]:
    """The records ("block tx event tx_id payload", runs separated by "restart") with the
    repeats the SDK's checkpoint contract allows removed: only the message in hand at a kill,
    as the first record after the restart, at most once per kill. Fails on any other repeat."""
    delivered: list[list[str]] = []
    first, again = True, 0
    for line in lines:
        if line == "restart":
            first = True
            continue
        row = line.split()
        if delivered and row[3] == delivered[-1][3]:
            assert first, f"{row[3]} delivered twice within one run"
            assert row == delivered[-1]
            again += 1
        else:
            delivered.append(row)
        first = False
    assert again <= kills, f"{again} repeats for {kills} kills"
    return delivered


def append(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())
    os.fsync(fd)


def _reopen(path: Path) -> int:
    """Drop a torn last line, then open for appending."""
    path.write_text("".join(f"{line}\n" for line in complete_lines(path)))
    return os.open(path, os.O_WRONLY | os.O_APPEND)


async def _follow(bus: dltmw.Bus, name: str, directory: Path, last: bytes) -> None:
    fd = _reopen(directory / f"{name}.txt")
    append(fd, "restart")
    checkpoints = dltmw.FileCheckpointer(directory / "checkpoints")
    try:
        async with bus.subscribe(TOPIC, name, checkpoints) as subscription:
            async for message in subscription:
                p = message.position
                append(
                    fd,
                    f"{p.block} {p.tx_index} {p.event_index} {message.tx_id} "
                    f"{message.payload.decode()}",
                )
                if message.payload == last:
                    break
    finally:
        os.close(fd)


async def main(directory: Path, transport: str, start: int, count: int) -> None:
    (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
    async with dltmw.open(directory / "net", transport=transport) as net:  # type: ignore[arg-type]
        publisher = net.bus("user1.org1")
        if start == 0:
            await publisher.create_topic(TOPIC)
        last = f"m{start + count - 1}".encode()
        followers = [
            asyncio.create_task(_follow(net.bus(client), name, directory, last))
            for name, client in SUBSCRIBERS.items()
        ]
        acked = _reopen(directory / "acked.txt")
        print("STARTED", flush=True)
        try:
            for i in range(start, start + count):
                tx_id = (await publisher.publish(TOPIC, f"m{i}".encode())).tx_id
                append(acked, f"{tx_id} m{i}")
            await asyncio.gather(*followers)
        finally:
            os.close(acked)
            for task in followers:
                task.cancel()


if __name__ == "__main__":
    directory, transport, start, count = sys.argv[1:5]
    asyncio.run(main(Path(directory), transport, int(start), int(count)))
