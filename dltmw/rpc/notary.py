"""NotaryService servicer: unary Notarise and the batched NotariseStream.

A refusal of a unary request is a status with an ErrorInfo reason; an input conflict is ABORTED
(INPUT_CONSUMED) with metadata `consuming_tx_id_hash` (hex SHA-256 of the consuming tx_id, never
the tx_id itself) and one NotarisationConflict per state in the status details. On the stream,
refusals are per-request results so one bad request does not end the stream. A stream message
may carry one requester batch signature instead of a signature per request
(`core/request_batch.py`); a bad one refuses each of its requests, as results.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from google.protobuf import any_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from grpc_status import rpc_status

from dltmw.core.errors import ClientError, DltmwError
from dltmw.core.handlers.notary import Decision
from dltmw.core.identity import Membership
from dltmw.core.notary import NotaryIdentity
from dltmw.core.notary_batch import proof_to_pb
from dltmw.core.utxo.build import state_ref
from dltmw.rpc.guard import Ctx, streaming, tls_org_matches_memo, unary
from dltmw.rpc.status import to_status
from dltmw.rpc.tls import caller_tls_cert
from dltmw.v1 import (
    errors_pb2,
    identity_pb2,
    notarisation_pb2,
    notary_service_pb2,
    notary_service_pb2_grpc,
)

R = errors_pb2
N = notary_service_pb2
Outcome = Decision | DltmwError  # a notary's answer to one request: a decision or a refusal


def caller_org(context: Ctx, membership: Membership) -> str:
    """The organisation whose CA issued the caller's TLS certificate (checked once per call)."""
    cert = caller_tls_cert(context)
    for org in sorted(membership.org_ids):
        if cert is not None and tls_org_matches_memo(cert, membership, org):
            return org
    raise ClientError(
        R.ERROR_REASON_TLS_IDENTITY_MISMATCH, "TLS client certificate is not a member's"
    )


def fill_response(
    out: notarisation_pb2.NotarisationResponse, decision: Decision, notary: bytes
) -> notarisation_pb2.NotarisationResponse:
    """Fill `out` (in place: no nested copies on the hot path) from a decision."""
    out.tx_id = decision.tx_id
    if decision.signature:
        out.notary_signature.signer = notary
        out.notary_signature.signature = decision.signature
        if decision.proof is not None:
            proof_to_pb(decision.proof, out.batch_proof)
    for c in decision.conflicts:
        out.conflicts.add(
            state=state_ref(c.ref),
            consuming_tx_id_hash=c.consuming_tx_id_hash,
            is_reference=c.is_reference,
        )
    return out


def add_result(
    results: RepeatedCompositeFieldContainer[notarisation_pb2.NotarisationResult],
    outcome: Outcome,
    notary: bytes,
) -> None:
    """Append the stream result of one outcome."""
    result = results.add()
    if isinstance(outcome, DltmwError):
        result.reason, result.message = outcome.reason, str(outcome)
        return
    fill_response(result.response, outcome, notary)
    if outcome.reason:
        result.reason, result.message = outcome.reason, outcome.message


async def abort_refusal(context: Ctx, decision: Decision) -> None:
    """End the call with the refusal's status, conflicts in metadata and details."""
    error = ClientError(decision.reason, decision.message)
    metadata = {}
    if decision.conflicts:
        metadata["consuming_tx_id_hash"] = decision.conflicts[0].consuming_tx_id_hash.hex()
        metadata["is_reference"] = str(decision.conflicts[0].is_reference).lower()
    status = to_status(error, **metadata)
    for c in decision.conflicts:
        detail = any_pb2.Any()
        detail.Pack(
            notarisation_pb2.NotarisationConflict(
                state=state_ref(c.ref),
                consuming_tx_id_hash=c.consuming_tx_id_hash,
                is_reference=c.is_reference,
            )
        )
        status.details.append(detail)
    await context.abort_with_status(rpc_status.to_status(status))  # type: ignore[attr-defined]


class Notarising(Protocol):
    """What the servicer needs of a notary: the single notary and a notary-cluster replica."""

    identity: NotaryIdentity
    membership: Membership

    async def notarise(
        self,
        requests: Sequence[notarisation_pb2.NotarisationRequest],
        tls_org: str | None,
        batch: identity_pb2.Signature | None = None,
        ordered_elsewhere: bool = False,
    ) -> list[Outcome]:
        """Admit and decide `requests` (each signed, or all by the requester `batch`
        signature); one outcome per request, in order. `ordered_elsewhere`: another cluster
        member orders them (NotariseStreamRequest.ordered_elsewhere)."""
        ...


class NotaryServicer(notary_service_pb2_grpc.NotaryServiceServicer):
    """Serves the notary role of a node."""

    def __init__(self, role: Notarising) -> None:
        self._role = role

    @unary
    async def Notarise(self, request: N.NotariseRequest, context: Ctx) -> N.NotariseResponse:
        """One request."""
        org = caller_org(context, self._role.membership)
        (outcome,) = await self._role.notarise(
            [request.request], org, None, request.ordered_elsewhere
        )
        if isinstance(outcome, DltmwError):
            raise outcome
        if outcome.reason:
            await abort_refusal(context, outcome)
        out = N.NotariseResponse()
        fill_response(out.response, outcome, self._role.identity.identity)
        return out

    @streaming
    async def NotariseStream(
        self, request_iterator: AsyncIterator[N.NotariseStreamRequest], context: Ctx
    ) -> AsyncIterator[N.NotariseStreamResponse]:
        """Batches on one stream, answered in order."""
        org = caller_org(context, self._role.membership)
        notary = self._role.identity.identity
        async for batch in request_iterator:  # (entries bounded by rpc/boundary.py)
            signed = batch.batch_signature if batch.HasField("batch_signature") else None
            outcomes = await self._role.notarise(
                batch.requests, org, signed, batch.ordered_elsewhere
            )
            reply = N.NotariseStreamResponse()
            for outcome in outcomes:
                add_result(reply.results, outcome, notary)
            yield reply
