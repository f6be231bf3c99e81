"""The gateway side of one Transact stream: Endorse, Submit and CommitStatus, pipelined and batched.

Why: a client with many transactions in flight would otherwise pay three unary RPCs and a signed
query per transaction, each costing ~0.2 ms of CPU on both ends, more than the transaction's
signature checks. Here every item of a request becomes its own task doing exactly what the unary
RPC does (the same admission, policy, durability and error reasons), and the outcomes that are
ready at one moment leave together in one TransactResponse.

Commit status. An accepted submission is answered twice: SubmitOutcome once the orderer has
durably queued it, then CommitOutcome once the local peer has durably committed its block. The
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
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, Protocol

from dltmw.aio.coalesce import bounded
from dltmw.core.block import TxRecord
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError, DltmwError, TransientError
from dltmw.core.txcheck import CheckedEnvelope, CheckedProposal, parse
from dltmw.rpc.guard import Ctx, check_tls_org, envelope_channel, proposal_channel, require
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

    async def check_envelope(self, channel_id: str, envelope: bytes) -> CheckedEnvelope:
        """Admission of a signed envelope (raises its ClientError)."""
        ...

    async def submit(self, channel_id: str, envelope: bytes, tx_id: str) -> None:
        """Forward to the channel's orderer; returns once it durably accepted."""


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


class TransactSession:
    """State of one Transact stream."""

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
        self._tls: dict[tuple[str, str], ClientError | None] = {}

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
            await reader  # re-raise what broke the request stream, if anything
        finally:
            reader.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(reader, *self._tasks, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[G.TransactRequest]) -> None:
        try:
            async for request in requests:
                # Backpressure: a client that writes but does not read stops being read.
                while self._out.qsize() >= self._max_outstanding:
                    self._drained.clear()
                    await self._drained.wait()
                for e in request.endorse:
                    self._spawn(self._endorse(e), G.EndorseOutcome, e.ref)
                for s in request.submit:
                    self._spawn(self._submit(s), G.SubmitOutcome, s.ref)
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        finally:
            self._out.put_nowait(None)

    def _spawn(self, coro: Coroutine[Any, Any, None], kind: type[Outcome], ref: int) -> None:
        if len(self._tasks) >= self._max_outstanding:
            coro.close()
            busy = TransientError(R.ERROR_REASON_OVERLOADED, "too many items in progress")
            self._out.put_nowait(kind(ref=ref, error=item_error(busy)))
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

    async def _endorse(self, item: G.EndorseItem) -> None:
        try:
            request = item.request
            require(request.HasField("signed_proposal"), "request.signed_proposal")
            peer = self._peer(proposal_channel(request.signed_proposal))
            self._check_tls(peer, creator_org(request.signed_proposal))
            result = await self._gateway.endorse(
                peer.view.channel_id,
                request.signed_proposal,
                list(request.endorsing_organizations),
                request.min_block_number,
            )
        except DltmwError as exc:
            self._out.put_nowait(G.EndorseOutcome(ref=item.ref, error=item_error(exc)))
            return
        response = G.EndorseResponse(prepared_payload=result.prepared_payload, result=result.result)
        self._out.put_nowait(G.EndorseOutcome(ref=item.ref, response=response))

    async def _submit(self, item: G.SubmitItem) -> None:
        request = item.request
        try:
            require(request.HasField("envelope"), "request.envelope")
            channel_id, _ = envelope_channel(request.envelope)
            peer = self._peer(channel_id)
            raw = request.envelope.SerializeToString()
            checked = await self._gateway.check_envelope(channel_id, raw)
            self._check_tls(peer, checked.creator.org_id)
        except DltmwError as exc:
            self._out.put_nowait(G.SubmitOutcome(ref=item.ref, error=item_error(exc)))
            return
        tx_id = checked.header.tx_id
        committed = peer.watch(tx_id)
        try:
            await self._gateway.submit(channel_id, raw, tx_id)
            accepted = G.SubmitResponse(tx_id=tx_id)
            self._out.put_nowait(G.SubmitOutcome(ref=item.ref, response=accepted))
        except DltmwError as exc:
            peer.unwatch(tx_id, committed)
            self._out.put_nowait(G.SubmitOutcome(ref=item.ref, error=item_error(exc)))
            return
        try:
            await self._commit(item.ref, tx_id, committed)
        finally:
            peer.unwatch(tx_id, committed)

    async def _commit(self, ref: int, tx_id: str, committed: asyncio.Future[TxRecord]) -> None:
        def late() -> TransientError:
            return TransientError(
                R.ERROR_REASON_WAIT_TIMEOUT, f"tx {tx_id} not committed within {self._wait_s}s"
            )

        try:
            record = await bounded(committed, self._wait_s, late)
        except TransientError as exc:
            self._out.put_nowait(G.CommitOutcome(ref=ref, error=item_error(exc)))
            return
        status = G.CommitStatusResponse(
            result=record.code,  # type: ignore[arg-type]
            block_number=record.block_number,
            tx_index=record.tx_index,
        )
        self._out.put_nowait(G.CommitOutcome(ref=ref, status=status))


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
