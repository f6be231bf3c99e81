"""Pipelined commit of delivered blocks (dltmw.runtime.roles.peer.pipeline), with fakes.

What must hold: blocks commit in order, each exactly once (resends skipped); block N+1 is queued
— its checks started — while block N is still committing (the fake commits block N only once
N+1 is queued: a one-at-a-time loop never queues N+1 before N committed, so it deadlocks and
fails at the bound; no timing is asserted); a refusal is raised as itself as soon as it is known,
even when the stream delivers nothing more, and the blocks queued behind it are let go.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dltmw.core.errors import PeerError
from dltmw.runtime.roles.peer.pipeline import commit_pipelined
from dltmw.v1 import block_pb2, errors_pb2

BOUND_S = 5.0  # a deadlock detector, never reached when the pipeline works


def block(number: int) -> block_pb2.Block:
    return block_pb2.Block(header=block_pb2.BlockHeader(number=number))


class Pending:
    def __init__(self, committer: FakeCommitter, number: int) -> None:
        self.committer, self.number = committer, number
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        await self.done
        self.committer.log.append(f"committed {self.number}")

    def discard(self) -> None:
        self.committer.discarded.append(self.number)
        if self.done.done():
            self.done.exception()


class FakeCommitter:
    """Commits in queue order; `pipelined`: block N commits only once N+1 is queued (or the
    stream ended), so a serial caller deadlocks."""

    def __init__(self, refuse: int | None = None, pipelined: bool = True) -> None:
        self.log: list[str] = []
        self.height = 0
        self.refuse = refuse
        self.pipelined = pipelined
        self.queued: list[Pending] = []
        self.discarded: list[int] = []

    async def enqueue(self, b: block_pb2.Block) -> Pending:
        self.log.append(f"queue {b.header.number}")
        self.queued.append(Pending(self, b.header.number))
        self.release(len(self.queued) - (2 if self.pipelined else 1))
        return self.queued[-1]

    def release(self, index: int) -> None:
        if index < 0 or index >= len(self.queued) or self.queued[index].done.done():
            return
        p = self.queued[index]
        if p.number == self.refuse:  # and those behind it no longer link: refused as well
            for later in self.queued[index:]:
                if not later.done.done():
                    later.done.set_exception(
                        PeerError(errors_pb2.ERROR_REASON_INVALID_FIELD, "refused")
                    )
        else:
            self.height = p.number + 1
            p.done.set_result(None)

    def end(self) -> None:
        for index in range(len(self.queued)):
            self.release(index)


async def stream(c: FakeCommitter, *numbers: int, then_hang: bool = False) -> AsyncIterator:
    for n in numbers:
        yield block(n)
    if then_hang:
        await asyncio.Event().wait()  # an orderer that delivers nothing more
    c.end()


def run(c: FakeCommitter, *numbers: int, then_hang: bool = False) -> None:
    async def main() -> None:
        blocks = stream(c, *numbers, then_hang=then_hang)
        pipeline = commit_pipelined(blocks, c.enqueue, lambda: c.height)
        await asyncio.wait_for(pipeline, BOUND_S)

    asyncio.run(main())


def test_the_next_block_is_queued_while_the_previous_one_commits() -> None:
    c = FakeCommitter()
    run(c, 0, 1, 2)
    assert c.log == ["queue 0", "queue 1", "committed 0", "queue 2", "committed 1", "committed 2"]
    assert c.height == 3


def test_resent_and_already_committed_blocks_are_skipped() -> None:
    c = FakeCommitter(pipelined=False)
    c.height = 1
    run(c, 0, 1, 1, 2, 2)
    assert [e for e in c.log if e.startswith("queue")] == ["queue 1", "queue 2"]


def test_a_refusal_is_raised_at_once_even_if_the_stream_stays_silent() -> None:
    c = FakeCommitter(refuse=0, pipelined=False)
    with pytest.raises(PeerError, match="refused"):
        run(c, 0, then_hang=True)


def test_a_refused_block_raises_as_itself_and_the_blocks_behind_it_are_let_go() -> None:
    c = FakeCommitter(refuse=1)
    with pytest.raises(PeerError, match="refused"):
        run(c, 0, 1, 2, 3)
    assert "committed 0" in c.log and "committed 1" not in c.log
    assert c.discarded == [2]
