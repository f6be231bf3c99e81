"""The ordering role of one channel, with the "none" handler (solo orderer).

Envelopes admitted by the Broadcast servicer enter a bounded inbox; the generic driver steps them
into the `SoloOrderer` core, which queues them and cuts blocks. Executing a Ready: the queued
envelopes are persisted (one sqlite transaction), each decided block is signed over its hash and
committed (one sqlite transaction that also removes the queue entries it consumed), and only then
are the submitters answered and Deliver streams woken.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView
from dltmw.core.cutter import BlockCutter
from dltmw.core.errors import DltmwError, TransientError
from dltmw.core.handlers.base import Ready
from dltmw.core.handlers.solo import SoloOrderer, Submit
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.runtime.blockfeed import follow
from dltmw.runtime.context import NodeContext
from dltmw.runtime.driver import drive
from dltmw.v1 import block_pb2, errors_pb2, identity_pb2

TICK_S = 0.01


class OrdererChannel:
    """Orders one channel's transactions and serves its blocks."""

    def __init__(self, ctx: NodeContext, view: ChannelView, ledger: ChannelLedger) -> None:
        self.ctx = ctx
        self.view = view
        self.ledger = ledger
        self._inbox: asyncio.Queue[object] = asyncio.Queue(maxsize=ctx.limits.queue_max)
        self._new_block = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Restore the queue and start the driver."""
        batch = self.view.config.batch
        cutter = BlockCutter(
            batch.max_tx_count, batch.max_bytes, max(1, round(batch.timeout_ms / 1000 / TICK_S))
        )
        handler = SoloOrderer(
            self.view.channel_id,
            self.ledger.height,
            self.ledger.last_hash,
            cutter,
            await self.ledger.pending(),
        )
        ready = handler.ready()  # blocks completed by the restored queue alone
        if not ready.is_empty():
            await self._execute(ready)
        # Not restartable: the handler already moved past a Ready that failed to execute.
        self._task = self.ctx.tasks.forever(
            f"orderer-{self.view.channel_id}",
            lambda: drive(handler, self._inbox, TICK_S, self._execute),
            restart=False,
        )

    async def stop(self) -> None:
        """Stop the driver (queued but unacknowledged envelopes are simply not acknowledged)."""
        await cancel_and_wait(self._task)
        self._task = None

    async def submit(self, envelope: bytes) -> None:
        """Queue an admitted envelope; returns once it is durably queued."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._inbox.put_nowait(Submit(envelope, done))
        except asyncio.QueueFull as exc:
            raise TransientError(
                errors_pb2.ERROR_REASON_OVERLOADED, "orderer queue is full"
            ) from exc
        await done

    async def submit_many(self, envelopes: Sequence[bytes]) -> list[DltmwError | None]:
        """Queue admitted envelopes; returns once all are durably queued, with None for each
        queued one and the error (OVERLOADED) of each that did not fit."""
        loop = asyncio.get_running_loop()
        out: list[DltmwError | None] = []
        waits: list[asyncio.Future[None]] = []
        for envelope in envelopes:
            done: asyncio.Future[None] = loop.create_future()
            try:
                self._inbox.put_nowait(Submit(envelope, done))
            except asyncio.QueueFull:
                out.append(
                    TransientError(errors_pb2.ERROR_REASON_OVERLOADED, "orderer queue is full")
                )
                continue
            out.append(None)
            waits.append(done)
        await asyncio.gather(*waits)
        return out

    async def _execute(self, ready: Ready) -> None:
        await self.ledger.enqueue(ready.persist)
        for decided in ready.blocks:
            block = decided.block
            block.metadata.signatures.add(
                signer=self.ctx.signer.identity_bytes,
                signature=self.ctx.signer.sign(block_hash(block)),
            )
            await self.ledger.commit_block(block, (), consumed_seq=decided.consumed_seq)
        for token in ready.replies:
            if isinstance(token, asyncio.Future) and not token.done():
                token.set_result(None)
        if ready.blocks:
            async with self._new_block:
                self._new_block.notify_all()

    def blocks_from(self, start: int, stop: int | None) -> AsyncIterator[block_pb2.Block]:
        """Blocks start.. (stop inclusive, or forever when None), waiting for new ones."""
        return follow(self.ledger, self._new_block, start, stop)


def orderer_identity_of(view: ChannelView, signer: bytes) -> identity_pb2.Identity | None:
    """The configured orderer whose identity bytes are `signer`, if any."""
    for node in view.config.orderers:
        if node.identity == signer:
            return identity_pb2.Identity.FromString(node.identity)
    return None
