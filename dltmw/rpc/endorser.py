"""EndorserService servicer: thin — routing, TLS check, error mapping.

It depends only on the `Endorsing` protocol declared here; the node passes in its peers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from dltmw.aio.coalesce import pipelined
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError, DltmwError
from dltmw.rpc.guard import Ctx, check_tls_org, proposal_channel, require, streaming, unary
from dltmw.v1 import batch_pb2, endorser_service_pb2, endorser_service_pb2_grpc, errors_pb2
from dltmw.v1 import proposal_pb2 as P

E = endorser_service_pb2
STREAM_DEPTH = 32  # requests of one ProcessProposals stream in progress at once


class Endorsing(Protocol):
    """What the endorser service needs of the peer of a channel (`runtime/roles/peer`)."""

    @property
    def view(self) -> ChannelView:
        """The channel's current configuration."""
        ...

    async def endorse(self, signed: P.SignedProposal) -> P.ProposalResponse:
        """Admit, simulate, sign (no endorsement when the contract refused)."""
        ...

    async def admit_and_endorse(
        self, batch: Sequence[P.SignedProposal]
    ) -> Sequence[P.ProposalResponse | BaseException]:
        """Admit (with the duplicate tx_id check), simulate and sign on any committed state,
        in one read transaction: each proposal's response or its error, in order."""
        ...

    async def reach(self, block_number: int, timeout_s: float) -> None:
        """Return once `block_number` is committed here, else raise HEIGHT_NOT_REACHED."""
        ...


class EndorserServicer(endorser_service_pb2_grpc.EndorserServiceServicer):
    """ProcessProposal and ProcessProposals on the peers of this node."""

    def __init__(self, peers: Mapping[str, Endorsing], height_wait_s: float) -> None:
        self._peers = peers
        self._height_wait_s = height_wait_s

    def _peer(self, signed: P.SignedProposal) -> Endorsing:
        channel_id = proposal_channel(signed)
        peer = self._peers.get(channel_id)
        if peer is None:
            raise ClientError(
                errors_pb2.ERROR_REASON_CHANNEL_NOT_FOUND, f"no channel {channel_id!r} here"
            )
        return peer

    @unary
    async def ProcessProposal(
        self, request: E.ProcessProposalRequest, context: Ctx
    ) -> E.ProcessProposalResponse:
        """Admit, simulate and endorse."""
        require(request.HasField("signed_proposal"), "signed_proposal")
        peer = self._peer(request.signed_proposal)
        check_tls_org(context, peer.view.membership, None)
        await peer.reach(request.min_block_number, self._height_wait_s)
        response = await peer.endorse(request.signed_proposal)
        return E.ProcessProposalResponse(proposal_response=response)

    @streaming
    async def ProcessProposals(
        self, request_iterator: AsyncIterator[E.ProcessProposalsRequest], context: Ctx
    ) -> AsyncIterator[E.ProcessProposalsResponse]:
        """Batches of proposals, each admitted, simulated and endorsed as ProcessProposal does;
        one response per request, in order (several requests in progress at once)."""
        tls_checked: set[str] = set()  # channels whose membership the caller's TLS cert passed

        def route(signed: P.SignedProposal) -> Endorsing:
            peer = self._peer(signed)
            if peer.view.channel_id not in tls_checked:
                check_tls_org(context, peer.view.membership, None)
                tls_checked.add(peer.view.channel_id)
            return peer

        async def handle(request: E.ProcessProposalsRequest) -> E.ProcessProposalsResponse:
            if request.min_block_numbers and len(request.min_block_numbers) != len(
                request.signed_proposals
            ):
                raise ClientError(
                    errors_pb2.ERROR_REASON_INVALID_FIELD,
                    "min_block_numbers must be empty or one per signed proposal",
                )
            outcomes: list[E.ProposalOutcome | None] = [None] * len(request.signed_proposals)
            by_peer: dict[str, tuple[Endorsing, list[int]]] = {}
            for i, signed in enumerate(request.signed_proposals):
                try:
                    peer = route(signed)
                except DltmwError as exc:
                    outcomes[i] = E.ProposalOutcome(error=_item_error(exc))
                    continue
                by_peer.setdefault(peer.view.channel_id, (peer, []))[1].append(i)
            jobs = [
                _endorse(peer, request, indexes, self._height_wait_s)
                for peer, indexes in by_peer.values()
            ]
            # One channel (the usual case) is awaited here: no task of its own, no loop turn.
            answers = [await jobs[0]] if len(jobs) == 1 else await asyncio.gather(*jobs)
            for (_, indexes), outs in zip(by_peer.values(), answers, strict=True):
                for i, answer in zip(indexes, outs, strict=True):
                    outcomes[i] = answer
            answered = [o for o in outcomes if o is not None]
            assert len(answered) == len(outcomes), "every proposal gets one outcome"
            return E.ProcessProposalsResponse(outcomes=answered)

        async for response in pipelined(request_iterator, handle, STREAM_DEPTH):
            yield response


async def _endorse(
    peer: Endorsing, request: E.ProcessProposalsRequest, indexes: list[int], wait_s: float
) -> list[E.ProposalOutcome]:
    """Admit and endorse the proposals at `indexes` of `request` (one channel) as one batch
    (each at its min block, if the request names them).

    The highest min block is reached before admission, not only before simulation: admission
    resolves the contract's committed definition, and a proposal naming the block that
    committed a new definition was refused PACKAGE_MISMATCH / CONTRACT_NOT_COMMITTED by an
    endorser one block behind (fresh-clone test_governance). The gateway only names blocks its
    own peer holds and waits for the whole batch's answer, so waiting for the highest first
    holds nothing up longer than the slowest proposal would."""
    wanted = request.min_block_numbers
    highest = max((wanted[i] for i in indexes), default=0) if wanted else 0
    try:
        await peer.reach(highest, wait_s)
    except DltmwError as exc:
        return [E.ProposalOutcome(error=_item_error(exc)) for _ in indexes]
    # Every block named is committed now: admission and endorsement read one snapshot.
    answers = await peer.admit_and_endorse([request.signed_proposals[i] for i in indexes])
    out: list[E.ProposalOutcome] = []
    for a in answers:
        if isinstance(a, DltmwError):
            out.append(E.ProposalOutcome(error=_item_error(a)))
        elif isinstance(a, BaseException):
            raise a  # not an expected refusal: a bug, let it surface
        else:
            out.append(E.ProposalOutcome(proposal_response=a))
    return out


def _item_error(exc: DltmwError) -> batch_pb2.ItemError:
    return batch_pb2.ItemError(reason=exc.reason, message=exc.message)  # type: ignore[arg-type]
