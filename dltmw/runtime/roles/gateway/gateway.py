"""The gateway role: the client-facing API beside a peer (Fabric Gateway style).

Endorse asks every peer of the channel whose organisation the contract's endorsement policy
names, in parallel, verifies each endorsement as it arrives and feeds the endorsement-policy
handler (`EndorsementCollector`), which says SATISFIED, UNSATISFIABLE or PENDING. It stops at the
first decision, so a slow or dead endorser that is not needed costs nothing. Only a group of
byte-identical response payloads can satisfy the policy; if the groups differ and none suffices
the client gets ENDORSEMENT_MISMATCH. The client then signs the returned payload and Submits it;
the gateway forwards it to an orderer (batched, see `Broadcaster`; which orderer, and more of
them when it does not answer within the ordering deadline: `orderer_choice.py`) and CommitStatus
waits on the local peer's ledger.

Batching: concurrent Endorse calls are endorsed together (`runtime/roles/gateway/endorsing.py`): one
admission batch, one ProcessProposals message per remote endorser (`EndorserStream`), one
simulate-and-sign hop on the local peer, signatures checked on the thread pool. Calls that arrive
while a batch is in progress wait for it and form the next one (`ENDORSE_HOLD_S`), so the batches
grow with the load even when arrivals are spread out, and a lone call still goes at once.
Envelope admission and the duplicate check of Submit are batched the same way, so one transaction
costs no gRPC message of its own beyond the client's and no per-transaction thread hop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from dltmw.aio.clock import utc_now
from dltmw.aio.coalesce import Coalescer, settled
from dltmw.aio.deadlines import FifoDeadlines
from dltmw.aio.throttle import LogThrottle
from dltmw.core.errors import ClientError, TransientError
from dltmw.core.txcheck import CheckedEnvelope, check_envelope
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.gateway.broadcaster import Broadcaster
from dltmw.runtime.roles.gateway.endorser_links import EndorserStream
from dltmw.runtime.roles.gateway.endorsing import BatchEndorser, EndorseResult
from dltmw.runtime.roles.gateway.endorsing import Request as EndorseRequest
from dltmw.runtime.roles.gateway.orderer_choice import (
    Result,
    first_accepting,
    orderer_answer,
    widening_for,
)
from dltmw.runtime.roles.gateway.patience import Patience
from dltmw.runtime.roles.gateway.staleness import refuse_stale, stale_errors
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.runtime.roles.peer.deliver_watch import STALL_S
from dltmw.v1 import (
    config_pb2,
    errors_pb2,
    proposal_pb2,
)

logger = logging.getLogger(__name__)
R = errors_pb2
PBFT = config_pb2.ORDERING_TYPE_PBFT
# How long a batch of endorsements in progress holds the proposals that arrive meanwhile (they
# then go together as the next batch: one ProcessProposals message, one simulation hop per
# endorser; `aio/coalesce.Coalescer`). A batch takes a few ms even on a loaded 2-core machine;
# one older than this is stuck on a slow endorser and no longer holds anyone.
ENDORSE_HOLD_S = 0.05


async def nudge_deliver(peer: PeerChannel, tx_id: str) -> None:
    """A submission answered only after the ordering deadline widened it: the first orderer may
    be a PBFT-lite primary cut off from the backups, which still serves this peer's Deliver
    stream, with nothing new on it; the deliver watch re-dials a quiet stream only when a block
    is wanted (`roles/peer/deliver_watch.py`: by an endorsement at a `min_block_number`), and a
    client waiting in CommitStatus wants one without saying so. A PBFT-lite orderer accepts
    once the transaction's block is committed there, so if it has not reached this peer within
    `STALL_S`, a block is wanted: tell the watch (it re-dials only a stream that is quiet, has
    nothing left to commit, and was not re-dialled within the last second)."""
    try:
        await peer.wait_for_tx(tx_id, STALL_S)
    except TransientError:
        if peer.deliver_watch.wanted(peer.ledger.height):
            logger.warning(
                "tx %s ordered elsewhere but not delivered to %s within %.1fs: re-dialling Deliver",
                tx_id,
                peer.ctx.node_id,
                STALL_S,
            )


class Gateway:
    """Endorse / Submit / CommitStatus / Events on behalf of clients."""

    def __init__(self, ctx: NodeContext, peers: dict[str, PeerChannel]) -> None:
        self.ctx = ctx
        self.peers = peers
        self._broadcasters: dict[str, Broadcaster] = {}
        self._orderer_pick: dict[str, int] = {}
        self._ordering_deadlines = FifoDeadlines()  # every submission's, one timer
        self._widen_log = LogThrottle()
        self._patience: dict[str, Patience] = {}  # channel -> its orderers' answer times
        self._endorsers: dict[str, EndorserStream] = {}
        self._envelope_checks: dict[str, Coalescer[bytes, CheckedEnvelope]] = {}
        self._batch_endorsers: dict[str, Coalescer[EndorseRequest, EndorseResult]] = {}

    async def close(self) -> None:
        """Close orderer and endorser streams."""
        for b in self._broadcasters.values():
            await b.close()
        self._ordering_deadlines.close()
        for e in self._endorsers.values():
            await e.close()
        for c in self._envelope_checks.values():
            await c.close()
        for endorser in self._batch_endorsers.values():
            await endorser.close()

    async def endorse(
        self,
        channel_id: str,
        signed: proposal_pb2.SignedProposal,
        orgs_wanted: list[str],
        min_block_number: int = 0,
    ) -> EndorseResult:
        """Gather endorsements that satisfy the policy; returns the payload to sign.

        Concurrent calls are endorsed together (`runtime/roles/gateway/endorsing.py`). A call
        naming a block the local peer has not committed waits for it here, alone (bounded:
        HEIGHT_NOT_REACHED), before it joins a batch: a block far ahead holds up no other
        caller's batch, and remote endorsers are only ever asked for blocks this peer holds."""
        peer = self.peers[channel_id]
        await peer.reach(min_block_number, self.ctx.limits.height_wait_s)
        return await self._endorser(peer).call((signed, tuple(orgs_wanted), min_block_number))

    def endorse_soon(
        self,
        channel_id: str,
        signed: proposal_pb2.SignedProposal,
        orgs_wanted: Sequence[str],
        min_block_number: int = 0,
    ) -> asyncio.Future[EndorseResult]:
        """`endorse` as a future, for a caller with many proposals at once (a Transact
        request): a proposal whose block the local peer holds joins the next batch directly,
        with no coroutine or task of its own; one naming a block still to come waits for it
        in a task, as `endorse` does. Cancelling the future withdraws the proposal."""
        peer = self.peers[channel_id]
        if min_block_number != 0 and peer.applied_height <= min_block_number:
            return asyncio.ensure_future(
                self.endorse(channel_id, signed, list(orgs_wanted), min_block_number)
            )
        return self._endorser(peer).submit((signed, tuple(orgs_wanted), min_block_number))

    def _endorser(self, peer: PeerChannel) -> Coalescer[EndorseRequest, EndorseResult]:
        endorser = self._batch_endorsers.get(peer.view.channel_id)
        if endorser is None:
            batch = BatchEndorser(self.ctx, peer, self._stream_to).endorse_many
            name = f"endorse-{peer.view.channel_id}"
            endorser = Coalescer(
                batch,
                batch_max=512,
                name=name,
                max_concurrent=4,
                hold_s=ENDORSE_HOLD_S,
                owner=self.ctx.tasks,  # a batching task that dies stops the node
            )
            self._batch_endorsers[peer.view.channel_id] = endorser
        return endorser

    def _broadcaster(self, envelope: bytes) -> Callable[[str], asyncio.Future[Result]]:
        """Submission of `envelope` to a named orderer, through its (lazily opened) stream."""

        def to(orderer_id: str) -> asyncio.Future[Result]:
            broadcaster = self._broadcasters.get(orderer_id)
            if broadcaster is None:
                broadcaster = self._broadcasters[orderer_id] = Broadcaster(self.ctx, orderer_id)
            return broadcaster.send(envelope)

        return to

    def _stream_to(self, node_id: str) -> EndorserStream:
        stream = self._endorsers.get(node_id)
        if stream is None:
            stream = self._endorsers[node_id] = EndorserStream(self.ctx, node_id)
        return stream

    async def check_envelope(self, channel_id: str, envelope: bytes) -> CheckedEnvelope:
        """Admission of a signed envelope (parse, creator signature, window), batched with
        concurrent ones onto the thread pool; raises the item's ClientError."""
        return await self.check_envelope_soon(channel_id, envelope)

    def check_envelope_soon(
        self, channel_id: str, envelope: bytes
    ) -> asyncio.Future[CheckedEnvelope]:
        """`check_envelope` as a future (no coroutine per envelope: a Transact request's)."""
        peer = self.peers[channel_id]
        checker = self._envelope_checks.get(peer.view.channel_id)
        if checker is None:
            window = self.ctx.limits.timestamp_window_s

            def check(raw: bytes) -> CheckedEnvelope:
                view = peer.view  # the current config: a config block may have replaced it
                return check_envelope(raw, {view.channel_id: view}, utc_now(), window)

            async def batch(items: Sequence[bytes]) -> list[CheckedEnvelope | BaseException]:
                return await peer.offload(check, items)  # type: ignore[return-value]

            checker = self._envelope_checks[peer.view.channel_id] = Coalescer(
                batch, name="env", owner=self.ctx.tasks
            )
        return checker.submit(envelope)

    async def submit(self, channel_id: str, envelope: bytes, tx_id: str) -> None:
        """Forward to the channel's orderer; returns once it durably accepted."""
        peer = self.peers[channel_id]
        if await peer.tx_record(tx_id) is not None:
            raise ClientError(R.ERROR_REASON_DUPLICATE_TX_ID, f"tx {tx_id} is on the ledger")
        await refuse_stale(peer.ledger, envelope, tx_id)  # early abort (core/early_abort.py)
        await self._order(peer, envelope, tx_id)

    async def submit_many(
        self, channel_id: str, envelopes: Sequence[tuple[bytes, str]]
    ) -> list[asyncio.Future[None]]:
        """`submit` for many (envelope, tx_id) at once (a Transact request's): per envelope a
        future of the orderer's acceptance, or of its own error (one envelope's refusal never
        touches another's). The duplicate checks and the early abort are done together (one
        lookup batch, one state read); on a channel with one orderer the envelopes then go to
        its Broadcast stream directly, with no coroutine per envelope (there is nobody to
        widen to); with several, each races the orderers as `submit` does."""
        peer = self.peers[channel_id]
        loop = asyncio.get_running_loop()
        records = [peer.tx_record_soon(tx_id) for _, tx_id in envelopes]
        await settled(records)
        out: list[asyncio.Future[None]] = [loop.create_future() for _ in envelopes]
        fresh: list[int] = []
        for index, ((_, tx_id), record) in enumerate(zip(envelopes, records, strict=True)):
            if record.exception() is not None:  # the lookup failed: this envelope's error
                out[index].set_exception(record.exception())  # type: ignore[arg-type]
            elif record.result() is not None:
                dup = ClientError(R.ERROR_REASON_DUPLICATE_TX_ID, f"tx {tx_id} is on the ledger")
                out[index].set_exception(dup)
            else:
                fresh.append(index)
        stale = await stale_errors(peer.ledger, [envelopes[i] for i in fresh])
        view = peer.view
        orderers = view.orderer_ids()
        for index, error in zip(fresh, stale, strict=True):
            envelope, tx_id = envelopes[index]
            if error is not None:
                out[index].set_exception(error)
            elif len(orderers) == 1:
                self._order_at_once(view.channel_id, orderers[0], envelope, out[index])
            else:
                out[index] = asyncio.ensure_future(self._order(peer, envelope, tx_id))
        return out

    def _order_at_once(
        self, channel_id: str, orderer_id: str, envelope: bytes, out: asyncio.Future[None]
    ) -> None:
        """The one orderer's answer to `envelope`, settled into `out` (what `_order` makes of
        a single orderer's answer, `first_accepting` included, without its coroutine)."""
        patience = self._patience.get(channel_id)
        if patience is None:
            patience = self._patience[channel_id] = Patience()
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        try:
            answer = self._broadcaster(envelope)(orderer_id)
        except TransientError as exc:
            out.set_exception(exc)
            return

        def settle(future: asyncio.Future[Result]) -> None:
            if out.done():
                return
            if future.cancelled():
                out.set_exception(_unavailable(orderer_id))
                return
            try:
                result = orderer_answer(future, orderer_id)
            except Exception as exc:  # (not an orderer's answer: a bug, for the waiter to raise)
                out.set_exception(exc)
                return
            if isinstance(result, TransientError):
                out.set_exception(result)
            elif result.accepted:
                patience.answered(loop.time() - sent_at)
                out.set_result(None)
            else:
                out.set_exception(_refused(result))

        answer.add_done_callback(settle)

    async def _order(self, peer: PeerChannel, envelope: bytes, tx_id: str) -> None:
        """Forward a checked envelope to the channel's orderers until one accepts it."""
        # Try the orderers in turn from the last one that worked (`orderer_choice`): any
        # replica or JetStream orderer can order it, so one that cannot moves us on, and one
        # that does not answer within the ordering deadline gets company (a censoring or cut
        # off PBFT-lite primary would otherwise hold it for ever).
        view = peer.view
        orderers = view.orderer_ids()
        start = self._orderer_pick.get(view.channel_id, 0)
        patience = self._patience.get(view.channel_id)
        if patience is None:
            patience = self._patience[view.channel_id] = Patience()
        widening = widening_for(
            view.config.ordering, len(orderers), self.ctx.limits.ordering_deadline_s
        )
        sent_at = asyncio.get_running_loop().time()
        widened: list[int] = []

        def on_widen(count: int) -> None:
            widened.append(count)
            self.ctx.metrics.observe_widened(view.channel_id, count)
            suppressed = self._widen_log.admit(view.channel_id)
            if suppressed is not None:
                logger.warning(
                    "%s: orderer %s did not answer tx %s within %.1fs: also sent to %d more"
                    " orderer(s) (%d similar warnings suppressed)",
                    view.channel_id,
                    orderers[start],
                    tx_id,
                    patience.deadline_s(widening.deadline_s or 0.0),
                    count,
                    suppressed,
                )

        index, result = await first_accepting(
            orderers,
            start,
            self._broadcaster(envelope),
            widening,
            self._ordering_deadlines,
            on_widen,
            patience.deadline_s,
        )
        self._orderer_pick[view.channel_id] = index
        if result.accepted:
            patience.answered(asyncio.get_running_loop().time() - sent_at)
        if widened and result.accepted and view.config.ordering == PBFT:
            await nudge_deliver(peer, tx_id)
        if not result.accepted:
            raise _refused(result)


def _refused(result: Result) -> ClientError:
    """The client's error for an orderer's refusal of its transaction."""
    reason = result.reason or R.ERROR_REASON_INVALID_FIELD
    return ClientError(reason, f"orderer refused: {result.message}")


def _unavailable(orderer_id: str) -> TransientError:
    """An answer that will never come (the Broadcast stream was closed under it)."""
    return TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, f"orderer {orderer_id} unavailable")
