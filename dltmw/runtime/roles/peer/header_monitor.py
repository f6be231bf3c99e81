"""The censorship monitor of one block stream: header streams from other orderers, and the check.

While the peer follows one orderer's Deliver stream (`PeerChannel._deliver_from`), this follows
header-only Deliver streams (`SeekInfo.headers_only`: header and orderer signatures, no data) of
f+1 other orderers of the channel (f = (n-1)//3; the ones after the source in the list): if the
block source withholds, at most f-1 of the others are faulty too, so the f+1 include a correct
one even with one of them down. Each header goes to the
decision (`censor_watch.CensorWatch`); a suspicion that comes due has its header checked on the
verify pool with the peer's own commit rule (`committer.signature_error`), and a valid one
cancels the block stream through `DeliverWatch.censored`, which dials the orderer that showed it.

Cost. An idle channel sends nothing on a header stream. Under load a watched orderer sends at
most two headers a second, the newest (`rpc/orderer.newest_headers`; a header and 2f+1 signatures
with their signers' identities, a few kB), parsed and dropped: no signature is verified unless a
suspicion comes due (benchmarks/RESULTS.md, lane `deliver`).

Supervision. The monitor runs as a `TaskOwner.spawn` task of the session and is cancelled with
it. A header stream that fails (the orderer is down, restarted, refuses) is dialled again with
the peer's reconnect backoff, moving on to the next other orderer; only a bug escapes, and that
is fatal to the node (health NOT_SERVING, `aio/tasks.py`), never a silently missing monitor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from dltmw.aio.batched_stream import Reconnect
from dltmw.aio.clock import utc_now
from dltmw.aio.rpc_errors import reconnects
from dltmw.aio.tasks import is_transient, was_asked_to_cancel
from dltmw.aio.throttle import LogThrottle
from dltmw.core.channel import ChannelView
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.peer.censor_watch import CensorWatch
from dltmw.runtime.roles.peer.committer import signature_error
from dltmw.runtime.roles.peer.deliver_watch import REDIAL_EVERY_S, DeliverWatch
from dltmw.v1 import orderer_service_pb2, orderer_service_pb2_grpc

logger = logging.getLogger(__name__)

RECONNECT = Reconnect(first_s=0.1, max_s=2.0)  # Deliver from the next orderer: the one policy
SWITCH_TRIES_MAX = 30  # a verified suspicion waits out the re-dial bound at most this often
_warnings = LogThrottle(60.0)  # one forged-header warning per orderer and minute


def deliver_request(
    ctx: NodeContext, channel_id: str, start: int, headers_only: bool = False
) -> orderer_service_pb2.DeliverRequest:
    """A signed Deliver request following `channel_id` from block `start`."""
    seek = orderer_service_pb2.SeekInfo(
        channel_id=channel_id,
        start_block=start,
        follow=True,
        requester=ctx.signer.identity_bytes,
        headers_only=headers_only,
    )
    seek.timestamp.FromDatetime(utc_now())
    seek_bytes = seek.SerializeToString()
    return orderer_service_pb2.DeliverRequest(
        seek_info=seek_bytes, signature=ctx.signer.sign(seek_bytes)
    )


def watched_count(orderers: int) -> int:
    """Other orderers whose headers a peer follows: f+1 of n = 3f+1 (at most n-1)."""
    return min(orderers - 1, (orderers - 1) // 3 + 1)


def others_after(orderers: list[str], source: str) -> list[str]:
    """The orderers other than `source`, in list order starting after it (so a peer that left
    a withholding orderer for the next one does not watch the withholder first)."""
    at = orderers.index(source) + 1 if source in orderers else 0
    return [o for o in orderers[at:] + orderers[:at] if o != source]


class HeaderMonitor:
    """The monitor of one block stream from `source` (see the module docstring)."""

    def __init__(
        self,
        ctx: NodeContext,
        view: Callable[[], ChannelView],
        source: str,
        censor: CensorWatch,
        deliver: DeliverWatch,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.ctx = ctx
        self._view = view
        self.source = source
        self.censor = censor
        self.deliver = deliver
        self._pool = pool
        self._wake = asyncio.Event()
        self._calls: dict[str, grpc.aio.UnaryStreamCall[Any, Any]] = {}  # the open header streams

    async def run(self) -> None:
        """Follow the others' headers and check suspicions until cancelled (returns at once
        when there is no other orderer or the monitor is off)."""
        others = others_after(self._view().orderer_ids(), self.source)
        if not others or not self.censor.enabled:
            return
        async with asyncio.TaskGroup() as group:
            for k in range(watched_count(len(others) + 1)):
                group.create_task(self._headers(others, k))
            group.create_task(self._check())

    async def _headers(self, others: list[str], first: int) -> None:
        """Header streams, one at a time, from others[first], then the next on failure."""
        attempt = 0
        while True:
            node_id = others[(first + attempt) % len(others)]
            attempt += 1
            if node_id != self.source and not self.censor.distrusts(node_id):
                try:
                    await self._follow_headers(node_id)
                except asyncio.CancelledError:
                    if was_asked_to_cancel():
                        raise
                    # `_drop`, or another user of the cached channel closed it (`ctx.forget`):
                    # a TaskGroup would take a child ending so as cancelled, silently
                    logger.debug("header stream from %s cancelled under it", node_id)
                except Exception as exc:
                    if not is_transient(exc):
                        raise  # a bug: fatal to the node (module docstring)
                    logger.debug("header stream from %s failed: %s", node_id, exc)
                    if reconnects(exc):
                        await self.ctx.forget(node_id)
            await asyncio.sleep(RECONNECT.delay_s(attempt))

    async def _follow_headers(self, node_id: str) -> None:
        channel = await self.ctx.channel_to(node_id)
        stub = orderer_service_pb2_grpc.OrdererServiceStub(channel)
        view = self._view()
        start = self.deliver_start()
        call = stub.Deliver(deliver_request(self.ctx, view.channel_id, start, headers_only=True))
        self._calls[node_id] = call
        try:
            async for response in call:
                if self.censor.header(node_id, response.block):
                    self._wake.set()
        finally:
            self._calls.pop(node_id, None)
            call.cancel()

    def _drop(self, node_id: str) -> None:
        """Stop listening to `node_id` (its header stream moves on to the next orderer)."""
        call = self._calls.get(node_id)
        if call is not None:
            call.cancel()

    def deliver_start(self) -> int:
        """Headers are asked for from the peer's next block (the orderer starts at its newest
        one anyway)."""
        return self.censor.next_number

    async def _check(self) -> None:
        """Wait for a suspicion to come due; check its header; switch or distrust."""
        loop = asyncio.get_running_loop()
        while True:
            due = self.censor.due_in()
            if due is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if due > 0:
                await asyncio.sleep(due)
                continue
            suspicion = self.censor.suspicion
            assert suspicion is not None
            error = await loop.run_in_executor(
                self._pool, signature_error, self._view(), suspicion.header
            )
            teller = self.censor.verdict(suspicion, error)
            channel_id = self._view().channel_id
            if error:
                self._drop(suspicion.teller)
                self.ctx.metrics.observe_forged_header(channel_id, suspicion.teller)
                suppressed = _warnings.admit((channel_id, suspicion.teller))
                if suppressed is not None:
                    logger.warning(
                        "orderer %s showed a forged header of block %d on %s (%s): ignoring its"
                        " headers while %s is followed (%d such warnings suppressed)",
                        suspicion.teller,
                        suspicion.number,
                        channel_id,
                        error,
                        self.source,
                        suppressed,
                    )
            elif teller is not None:
                await self._switch(teller, suspicion.number, channel_id)

    async def _switch(self, teller: str, number: int, channel_id: str) -> None:
        for _ in range(SWITCH_TRIES_MAX):
            if self.deliver.censored(teller):
                self.ctx.metrics.observe_censorship_switch(channel_id)
                logger.warning(
                    "orderer %s withheld block %d of %s for %.1fs while %s showed its header:"
                    " following %s",
                    self.source,
                    number,
                    channel_id,
                    self.censor.timeout_s,
                    teller,
                    teller,
                )
                return
            await asyncio.sleep(REDIAL_EVERY_S)
