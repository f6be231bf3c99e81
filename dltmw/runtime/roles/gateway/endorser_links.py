"""A gateway's client of one remote endorser: proposals batched on one ProcessProposals stream.

One gRPC message costs as much CPU as the signature checks of a whole transaction, so the
proposal batches that concurrent callers send to the same remote peer are gathered into one
ProcessProposalsRequest (up to `batch_max` proposals), with each proposal's min_block_number
when any is set (read your writes: the remote simulates on a state that includes that block).
Responses come back one per request, in request order, on the same stream (`InOrder` acks).
The stream itself — queue, window, reconnect, close — is the node's one batched stream client
(`aio/batched_stream.py`). When the stream breaks, every waiting proposal gets UNAVAILABLE
(PEER_UNAVAILABLE). A refusal of one proposal comes back as a TransientError naming the
remote's status, exactly as a failed unary ProcessProposal did before (the gateway counts that
endorser as failed for that proposal); HEIGHT_NOT_REACHED keeps its reason, so the gateway can
tell a lagging endorser from a dead one. A refusal of the proposal's creator (`CREATOR_REFUSED`:
not a member, revoked, an unknown reference) comes back as a ClientError with the remote's
reason: it is final, and the gateway reports it as such when the policy cannot be met without
that endorser (the gateway's own view of the channel may be older than the remote's, e.g. on a
removed organisation's peer, which hears no more config blocks).
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from dltmw.aio.acks import InOrder
from dltmw.aio.batched_stream import BatchedStream, Bounds, Codec, StreamCall
from dltmw.core.errors import ClientError, TransientError
from dltmw.rpc.status import CODE_OF_REASON
from dltmw.runtime.context import NodeContext
from dltmw.v1 import (
    batch_pb2,
    endorser_service_pb2,
    endorser_service_pb2_grpc,
    errors_pb2,
    proposal_pb2,
)

E = endorser_service_pb2
# Remote refusals of the proposal's creator: final, reported with their own reason.
CREATOR_REFUSED = frozenset(
    {
        errors_pb2.ERROR_REASON_NOT_A_MEMBER,
        errors_pb2.ERROR_REASON_CERTIFICATE_REVOKED,
        # a creator's reference the endorser cannot resolve although it reached the client's
        # block (min_block_number): the client sends in full (client/gateway.py)
        errors_pb2.ERROR_REASON_UNKNOWN_IDENTITY_REFERENCE,
    }
)
Response = proposal_pb2.ProposalResponse
Signed = list[tuple[proposal_pb2.SignedProposal, int]]  # (proposal, its min block number)
Answers = list[Response | BaseException]


class EndorserStream:
    """Batched, pipelined ProcessProposals to one remote endorser."""

    def __init__(self, ctx: NodeContext, node_id: str, batch_max: int = 256) -> None:
        self._ctx = ctx
        self._node_id = node_id
        codec = Codec[Signed, E.ProcessProposalsRequest](
            pack=_pack,
            failure=self._failure,
            units=len,
            size_bytes=lambda group: sum(p.ByteSize() + 10 for p, _ in group),
        )
        bounds = Bounds(
            queue_max=ctx.limits.queue_max,
            batch_items_max=batch_max,
            batch_bytes_max=ctx.limits.max_message_bytes // 2,
        )
        self._stream: BatchedStream[
            Signed, Answers, E.ProcessProposalsRequest, E.ProcessProposalsResponse
        ]
        self._stream = BatchedStream(
            f"endorse-{node_id}",
            self._open,
            codec,
            InOrder(self._answers),
            ctx.tasks,
            drop=lambda: ctx.forget(node_id),
            bounds=bounds,
        )

    async def process_many(
        self,
        signed: Sequence[proposal_pb2.SignedProposal],
        min_blocks: Sequence[int],
        timeout_s: float,
    ) -> Answers:
        """The remote's answer to each proposal, in order: its ProposalResponse, or a
        TransientError when it refused that proposal or could not be reached in time. Each
        proposal is simulated on a state that includes its `min_blocks` entry (0: any)."""

        def late() -> TransientError:
            return TransientError(
                errors_pb2.ERROR_REASON_PEER_UNAVAILABLE,
                f"{self._node_id}: no endorsement within {timeout_s}s",
            )

        try:
            group = list(zip(signed, min_blocks, strict=True))
            return await self._stream.call(group, timeout_s, late)
        except TransientError as exc:  # overloaded, unreachable, late: every proposal failed
            return [exc] * len(signed)

    async def close(self) -> None:
        """Stop the stream."""
        await self._stream.close()

    async def _open(self) -> StreamCall[E.ProcessProposalsRequest, E.ProcessProposalsResponse]:
        channel = await self._ctx.channel_to(self._node_id)
        stub = endorser_service_pb2_grpc.EndorserServiceStub(channel)
        return stub.ProcessProposals()  # type: ignore[call-arg]  # aio: write() mode

    def _answers(
        self, response: E.ProcessProposalsResponse, groups: Sequence[Signed]
    ) -> list[Answers]:
        """One list of answers per group of proposals (a missing outcome is a refusal)."""
        outcomes = list(response.outcomes)
        out: list[Answers] = []
        position = 0
        for group in groups:
            answers: Answers = []
            for outcome in outcomes[position : position + len(group)]:
                if outcome.HasField("proposal_response"):
                    answers.append(outcome.proposal_response)
                else:
                    answers.append(self._refused(outcome.error))
            answers += [self._refused(None)] * (len(group) - len(answers))
            position += len(group)
            out.append(answers)
        return out

    def _refused(self, error: batch_pb2.ItemError | None) -> TransientError | ClientError:
        if error is not None and error.reason == errors_pb2.ERROR_REASON_HEIGHT_NOT_REACHED:
            return TransientError(error.reason, f"{self._node_id}: {error.message}")
        if error is not None and error.reason in CREATOR_REFUSED:
            return ClientError(error.reason, f"{self._node_id}: {error.message}")
        code = CODE_OF_REASON.get(error.reason, grpc.StatusCode.UNKNOWN) if error else None
        name = code.name if code is not None else "UNKNOWN"
        message = error.message if error else "no outcome for this proposal"
        return TransientError(
            errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"{self._node_id}: {name}: {message}"
        )

    def _failure(self, _cause: BaseException | None) -> BaseException:
        return TransientError(
            errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"endorser {self._node_id} unavailable"
        )


def _pack(groups: Sequence[Signed]) -> E.ProcessProposalsRequest:
    """One request for the groups; min_block_numbers only when one of them is set."""
    items = [item for group in groups for item in group]
    request = E.ProcessProposalsRequest(signed_proposals=[p for p, _ in items])
    if any(n for _, n in items):
        request.min_block_numbers.extend(n for _, n in items)
    return request
