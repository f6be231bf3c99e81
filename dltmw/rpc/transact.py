"""The gateway side of one Transact stream: Endorse, Submit and CommitStatus, pipelined and batched.

Why: a client with many transactions in flight would otherwise pay three unary RPCs and a signed
query per transaction, each costing ~0.2 ms of CPU on both ends, more than the transaction's
signature checks. Here every item gets exactly what the unary RPC does (the same admission,
policy, durability and error reasons), and the outcomes that are ready at one moment leave
together in one TransactResponse.

Per request, not per item. A task, a coroutine and a timer per item were the largest share of a
gateway peer's Python time (a quarter of its GIL samples, `benchmarks/RESULTS.md`). So a
request's endorse items share one task, and its submit items another: each item is a future of
the batch it joins downstream (`Coalescer.submit`; the orderer's Broadcast stream; the peer's
commit watch), whose callback queues the item's outcome as soon as it settles. The rules a
reader must keep: an item's own error (a DltmwError) is that item's outcome only, never its
neighbours'; an outcome leaves when its item is ready, never held for the rest of its request;
anything else an item's future fails with is a bug and ends the stream (`_Batch.broken`), it
does not pass as an item error; and a request's task owns its items: cancelled (the stream
ends), it withdraws what they still wait for.

Commit status. An accepted submission is answered twice: SubmitOutcome once the orderer has
durably queued it, then CommitOutcome once the local peer has durably committed its block —
or, for an item marked `commit_only` (a client that waits for the commit anyway), by its
CommitOutcome alone: at one transaction per block each gRPC message costs each end ~0.25 ms of
CPU (benchmarks/grpc_ping.py), a measurable share of a lone transaction's ~11 messages. A
refusal is a SubmitOutcome with its error either way. The
wait is registered with the peer (`LocalPeer.watch`) BEFORE the duplicate check and the
forwarding, so no commit can slip in between; it is resolved from the committed block itself.
The envelope's creator signature (checked here) and the TLS binding of the stream to the
creator's organisation authorise the status, so no separately signed query is needed.

Bounds: at most `max_outstanding` items in progress per stream (more are refused with
OVERLOADED); each commit wait ends after `wait_s` (WAIT_TIMEOUT); when `max_outstanding`
outcomes wait for a client that does not read them, the stream's requests are not read either.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from dltmw.aio.coalesce import settled
from dltmw.aio.deadlines import FifoDeadlines
from dltmw.core.block import TxRecord
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError, DltmwError, TransientError
from dltmw.core.txcheck import CheckedEnvelope, CheckedProposal, parse
from dltmw.rpc.guard import Ctx, check_tls_org, envelope_channel, proposal_header, require
from dltmw.v1 import (
    batch_pb2,
    block_pb2,
    common_pb2,
    errors_pb2,
    gateway_service_pb2,
    identity_pb2,
    proposal_pb2,
)
from dltmw.v1 import proposal_pb2 as P

R = errors_pb2
G = gateway_service_pb2
Outcome = G.EndorseOutcome | G.SubmitOutcome | G.CommitOutcome
RESPONSE_MAX = 512  # outcomes per TransactResponse
MAX_OUTSTANDING = 4096
Item = TypeVar("Item", G.EndorseItem, G.SubmitItem)


class Endorsed(Protocol):
    """What an endorsement gathered by the gateway role gives the client."""

    @property
    def prepared_payload(self) -> bytes:
        """The transaction payload for the client to sign."""
        ...

    @property
    def result(self) -> proposal_pb2.ContractResponse:
        """The contract's answer."""
        ...


class GatewayRole(Protocol):
    """What the gateway API (Gateway servicer, Transact stream) needs of the node's gateway
    role (`runtime/roles/gateway`), by channel id; declared here, on the consumer's side."""

    async def endorse(
        self,
        channel_id: str,
        signed: proposal_pb2.SignedProposal,
        orgs_wanted: list[str],
        min_block_number: int = 0,
    ) -> Endorsed:
        """Gather endorsements that satisfy the policy, on states that include block
        `min_block_number`."""
        ...

    def endorse_soon(
        self,
        channel_id: str,
        signed: proposal_pb2.SignedProposal,
        orgs_wanted: Sequence[str],
        min_block_number: int = 0,
    ) -> asyncio.Future[Any]:
        """`endorse` as a future of an `Endorsed` (no coroutine per proposal; a Future is
        invariant, hence Any); cancelling it withdraws the proposal."""
        ...

    async def check_envelope(self, channel_id: str, envelope: bytes) -> CheckedEnvelope:
        """Admission of a signed envelope (raises its ClientError)."""
        ...

    def check_envelope_soon(
        self, channel_id: str, envelope: bytes
    ) -> asyncio.Future[CheckedEnvelope]:
        """`check_envelope` as a future (no coroutine per envelope)."""
        ...

    async def submit(self, channel_id: str, envelope: bytes, tx_id: str) -> None:
        """Forward to the channel's orderer; returns once it durably accepted."""

    async def submit_many(
        self, channel_id: str, envelopes: Sequence[tuple[bytes, str]]
    ) -> list[asyncio.Future[None]]:
        """`submit` of many (envelope, tx_id): per envelope the future of its acceptance or
        of its own error."""
        ...


class LocalPeer(Protocol):
    """What the gateway API needs of the local peer of a channel (`runtime/roles/peer`)."""

    @property
    def view(self) -> ChannelView:
        """The channel's current configuration."""
        ...

    async def admit(self, signed: proposal_pb2.SignedProposal) -> CheckedProposal:
        """Admission checks of a proposal."""
        ...

    async def simulate(self, checked: CheckedProposal) -> proposal_pb2.ProposalResponsePayload:
        """Run the contract against the peer's state (nothing is signed or written)."""
        ...

    async def reach(self, block_number: int, timeout_s: float) -> None:
        """Return once `block_number` is committed here, else raise HEIGHT_NOT_REACHED."""
        ...

    async def wait_for_tx(self, tx_id: str, timeout_s: float) -> TxRecord:
        """Where `tx_id` committed, waiting for it (WAIT_TIMEOUT after `timeout_s`)."""
        ...

    def committed_blocks(self, start: int) -> AsyncIterator[block_pb2.Block]:
        """Committed blocks from `start`, following new ones."""
        ...

    def watch(self, tx_id: str) -> asyncio.Future[TxRecord]:
        """A future resolved when `tx_id` commits (register before submitting)."""
        ...

    def unwatch(self, tx_id: str, future: asyncio.Future[TxRecord]) -> None:
        """Drop a watch."""


def item_error(exc: DltmwError) -> batch_pb2.ItemError:
    """The ItemError of a refused item."""
    return batch_pb2.ItemError(reason=exc.reason, message=exc.message)  # type: ignore[arg-type]


class _Batch:
    """The items of one request of one kind (endorse or submit) while they are in progress:
    the request's task waits on `all_done` until each of them was answered (and so owns
    them: cancelling it cancels what they still wait for)."""

    def __init__(self, session: TransactSession, count: int) -> None:
        self.session = session
        self.left = count
        self.commit_only: set[int] = set()  # refs answered at commit only (module docstring)
        self.all_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answered(self, outcome: Outcome) -> None:
        """An item's final outcome."""
        self.session._out.put_nowait(outcome)
        self.session._busy -= 1
        self.left -= 1
        if self.left == 0 and not self.all_done.done():
            self.all_done.set_result(None)

    def broken(self, exc: BaseException) -> None:
        """An item's future failed with what is no item error (a bug): the stream fails."""
        if not self.all_done.done():
            self.all_done.set_exception(exc)


class TransactSession:
    """State of one Transact stream.

    Per request, ONE task for its endorse items and one for its submit items, not one per
    item: each item becomes a future of the batching stage it joins (`Coalescer.submit`, the
    orderer's Broadcast stream, the peer's commit watch), and its outcome is queued by that
    future's callback the moment it settles — neighbours neither wait for nor fail with it.
    Commit waits share one timer (`FifoDeadlines`) instead of a timer per item."""

    def __init__(
        self,
        gateway: GatewayRole,
        peers: Mapping[str, LocalPeer],
        context: Ctx,
        wait_s: float,
        max_outstanding: int = MAX_OUTSTANDING,
    ) -> None:
        self._gateway = gateway
        self._peers = peers
        self._context = context
        self._wait_s = wait_s
        self._max_outstanding = max_outstanding
        self._out: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._drained = asyncio.Event()  # set when `serve` took outcomes off `_out`
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy = 0  # items in progress (bounded by max_outstanding)
        self._deadlines = FifoDeadlines()  # the commit waits'
        self._tls: dict[tuple[str, str], ClientError | None] = {}
        self._failure: BaseException | None = None  # what broke a batch (a bug)

    async def serve(
        self, requests: AsyncIterator[G.TransactRequest]
    ) -> AsyncIterator[G.TransactResponse]:
        """Responses to the request stream, until it ends and every item is answered."""
        reader = asyncio.create_task(self._read(requests), name="transact-reader")
        try:
            while (first := await self._out.get()) is not None:
                response = G.TransactResponse()
                _add(response, first)
                while not self._out.empty() and _size(response) < RESPONSE_MAX:
                    more = self._out.get_nowait()
                    if more is None:
                        self._out.put_nowait(None)
                        break
                    _add(response, more)
                self._drained.set()
                yield response
            if self._failure is not None:
                raise self._failure
            await reader  # re-raise what broke the request stream, if anything
        finally:
            reader.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(reader, *self._tasks, return_exceptions=True)
            self._deadlines.close()

    async def _read(self, requests: AsyncIterator[G.TransactRequest]) -> None:
        try:
            async for request in requests:
                # Backpressure: a client that writes but does not read stops being read.
                while self._out.qsize() >= self._max_outstanding:
                    self._drained.clear()
                    await self._drained.wait()
                endorse = self._admit(request.endorse, G.EndorseOutcome)
                if endorse:
                    self._start(self._endorse_batch(endorse))
                submit = self._admit(request.submit, G.SubmitOutcome)
                if submit:
                    self._start(self._submit_batch(submit))
            while self._tasks:  # (a batch that broke ends the stream: `_ended`)
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            self._out.put_nowait(None)

    def _admit(self, items: Sequence[Item], kind: type[Outcome]) -> list[Item]:
        """The items taken into progress; those beyond the bound are refused OVERLOADED."""
        taken: list[Item] = []
        for item in items:
            if self._busy >= self._max_outstanding:
                busy = TransientError(R.ERROR_REASON_OVERLOADED, "too many items in progress")
                self._out.put_nowait(kind(ref=item.ref, error=item_error(busy)))
                continue
            self._busy += 1
            taken.append(item)
        return taken

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A batch's task ended; one that raised (a bug) ends the stream at once with it."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self._out.put_nowait(None)

    def _peer(self, channel_id: str) -> LocalPeer:
        peer = self._peers.get(channel_id)
        if peer is None:
            raise ClientError(R.ERROR_REASON_CHANNEL_NOT_FOUND, f"no channel {channel_id!r} here")
        return peer

    def _check_tls(self, peer: LocalPeer, org_id: str) -> None:
        """The stream's TLS certificate must be issued by `org_id` (checked once per org)."""
        key = (peer.view.channel_id, org_id)
        if key not in self._tls:
            try:
                check_tls_org(self._context, peer.view.membership, org_id)
                self._tls[key] = None
            except ClientError as exc:
                self._tls[key] = exc
        error = self._tls[key]
        if error is not None:
            raise error

    async def _endorse_batch(self, items: list[G.EndorseItem]) -> None:
        batch = _Batch(self, len(items))
        pending: list[asyncio.Future[Any]] = []
        for item in items:
            try:
                request = item.request
                require(request.HasField("signed_proposal"), "request.signed_proposal")
                header = proposal_header(request.signed_proposal)  # parsed once per item
                peer = self._peer(header.channel_id)
                self._check_tls(
                    peer, parse(identity_pb2.Identity, header.creator, "creator").org_id
                )
                future = self._gateway.endorse_soon(
                    peer.view.channel_id,
                    request.signed_proposal,
                    request.endorsing_organizations,
                    request.min_block_number,
                )
            except DltmwError as exc:
                batch.answered(G.EndorseOutcome(ref=item.ref, error=item_error(exc)))
                continue
            future.add_done_callback(functools.partial(_endorsed, batch, item.ref))
            pending.append(future)
        await _until_answered(batch, pending)

    async def _submit_batch(self, items: list[G.SubmitItem]) -> None:
        batch = _Batch(self, len(items))
        checks: list[tuple[int, LocalPeer, bytes, asyncio.Future[CheckedEnvelope]]] = []
        for item in items:
            request = item.request
            try:
                require(request.HasField("envelope"), "request.envelope")
                channel_id, _ = envelope_channel(request.envelope)
                peer = self._peer(channel_id)
                raw = request.envelope.SerializeToString()
            except DltmwError as exc:
                batch.answered(G.SubmitOutcome(ref=item.ref, error=item_error(exc)))
                continue
            checks.append((item.ref, peer, raw, self._gateway.check_envelope_soon(channel_id, raw)))
            if item.commit_only:
                batch.commit_only.add(item.ref)
        watched: list[tuple[str, LocalPeer, asyncio.Future[TxRecord]]] = []
        try:
            await settled([check for *_, check in checks])
            by_channel: dict[str, list[tuple[int, LocalPeer, bytes, str]]] = {}
            for ref, peer, raw, check in checks:
                try:
                    checked = check.result()
                    self._check_tls(peer, checked.creator_org)
                except DltmwError as exc:
                    batch.answered(G.SubmitOutcome(ref=ref, error=item_error(exc)))
                    continue
                entry = (ref, peer, raw, checked.header.tx_id)
                by_channel.setdefault(peer.view.channel_id, []).append(entry)
            for channel_id, entries in by_channel.items():
                for _, peer, _, tx_id in entries:  # before the duplicate check (module docstring)
                    watched.append((tx_id, peer, peer.watch(tx_id)))
                await self._order(batch, channel_id, entries, watched[-len(entries) :])
            await batch.all_done
        finally:
            for tx_id, peer, committed in watched:
                peer.unwatch(tx_id, committed)

    async def _order(
        self,
        batch: _Batch,
        channel_id: str,
        entries: list[tuple[int, LocalPeer, bytes, str]],
        watched: list[tuple[str, LocalPeer, asyncio.Future[TxRecord]]],
    ) -> None:
        """Submit a channel's checked envelopes; each item's outcomes from its future's
        callbacks: SubmitOutcome on the orderer's answer, then CommitOutcome on the commit."""
        try:
            accepted = await self._gateway.submit_many(
                channel_id, [(raw, tx_id) for _, _, raw, tx_id in entries]
            )
        except DltmwError as exc:
            for ref, *_ in entries:
                batch.answered(G.SubmitOutcome(ref=ref, error=item_error(exc)))
            return
        for (ref, peer, _, tx_id), (_, _, committed), future in zip(
            entries, watched, accepted, strict=True
        ):
            future.add_done_callback(
                functools.partial(self._submitted, batch, ref, tx_id, peer, committed)
            )

    def _submitted(
        self,
        batch: _Batch,
        ref: int,
        tx_id: str,
        peer: LocalPeer,
        committed: asyncio.Future[TxRecord],
        future: asyncio.Future[None],
    ) -> None:
        error = _item_failure(batch, future)
        if error is not None:
            peer.unwatch(tx_id, committed)
            batch.answered(G.SubmitOutcome(ref=ref, error=item_error(error)))
            return
        if future.cancelled() or future.exception() is not None:
            return  # (a bug: `_item_failure` broke the stream)
        if ref not in batch.commit_only:
            self._out.put_nowait(G.SubmitOutcome(ref=ref, response=G.SubmitResponse(tx_id=tx_id)))

        def late() -> TransientError:
            return TransientError(
                R.ERROR_REASON_WAIT_TIMEOUT, f"tx {tx_id} not committed within {self._wait_s}s"
            )

        self._deadlines.add(committed, self._wait_s, late)
        committed.add_done_callback(functools.partial(_committed, batch, ref, tx_id, peer))


def _item_failure(batch: _Batch, future: asyncio.Future[Any]) -> DltmwError | None:
    """The item error a settled future holds; anything else that is no result breaks the
    batch (and so the stream: a bug must not pass as an item's error)."""
    if future.cancelled():
        return TransientError(R.ERROR_REASON_SHUTTING_DOWN, "the gateway is stopping")
    exc = future.exception()
    if exc is None or isinstance(exc, DltmwError):
        return exc
    batch.broken(exc)
    return None


def _endorsed(batch: _Batch, ref: int, future: asyncio.Future[Endorsed]) -> None:
    error = _item_failure(batch, future)
    if error is not None:
        batch.answered(G.EndorseOutcome(ref=ref, error=item_error(error)))
    elif future.exception() is None:
        result = future.result()
        response = G.EndorseResponse(prepared_payload=result.prepared_payload, result=result.result)
        batch.answered(G.EndorseOutcome(ref=ref, response=response))


def _committed(
    batch: _Batch, ref: int, tx_id: str, peer: LocalPeer, future: asyncio.Future[TxRecord]
) -> None:
    peer.unwatch(tx_id, future)
    error = _item_failure(batch, future)
    if error is not None:
        batch.answered(G.CommitOutcome(ref=ref, error=item_error(error)))
    elif future.exception() is None:
        record = future.result()
        status = G.CommitStatusResponse(
            result=record.code,  # type: ignore[arg-type]
            block_number=record.block_number,
            tx_index=record.tx_index,
        )
        batch.answered(G.CommitOutcome(ref=ref, status=status))


async def _until_answered(batch: _Batch, pending: list[asyncio.Future[Any]]) -> None:
    """Wait until every item of `batch` was answered; cancelled, withdraw what is pending."""
    try:
        await batch.all_done
    finally:
        for future in pending:
            future.cancel()


def creator_org(signed: P.SignedProposal) -> str:
    """Organisation named by a proposal's creator (unverified: only for the TLS binding check,
    which admission follows with the signature check)."""
    proposal = parse(P.Proposal, signed.proposal_bytes, "proposal")
    header = parse(common_pb2.Header, proposal.header, "header")
    return parse(identity_pb2.Identity, header.creator, "creator").org_id


def _add(response: G.TransactResponse, outcome: Outcome) -> None:
    if isinstance(outcome, G.EndorseOutcome):
        response.endorsed.append(outcome)
    elif isinstance(outcome, G.SubmitOutcome):
        response.submitted.append(outcome)
    else:
        response.committed.append(outcome)


def _size(response: G.TransactResponse) -> int:
    return len(response.endorsed) + len(response.submitted) + len(response.committed)
