"""FlowService (node to node) and VaultService (client to its own node) servicers.

Admission is the same for both: the carried bytes are parsed, the timestamp must lie in the
node's window, the requester's signature must verify over exactly those bytes, and the TLS
client certificate must belong to the requester's organisation (`guard.admit_query`).
VaultService additionally serves only clients of the node's own organisation.
"""

from __future__ import annotations

from dltmw.core.errors import ClientError
from dltmw.core.identity import VerifiedIdentity
from dltmw.core.txcheck import parse
from dltmw.core.utxo.build import state_ref
from dltmw.core.utxo.model import window_of
from dltmw.core.utxo.verify import SignedTx
from dltmw.rpc.guard import Ctx, admit_query, require, unary
from dltmw.runtime.roles.vault.flows import run_dvp, run_issue, run_move
from dltmw.runtime.roles.vault.vault import VaultRole
from dltmw.v1 import (
    errors_pb2,
    flow_service_pb2,
    flow_service_pb2_grpc,
    vault_service_pb2,
    vault_service_pb2_grpc,
)

R = errors_pb2
F = flow_service_pb2
V = vault_service_pb2
MAX_OBSERVERS = 16


class FlowServicer(flow_service_pb2_grpc.FlowServiceServicer):
    """Answers other vault nodes."""

    def __init__(self, role: VaultRole, window_s: float) -> None:
        self._role = role
        self._window_s = window_s

    def _admit(
        self, context: Ctx, raw: bytes, signature: bytes
    ) -> tuple[VerifiedIdentity, F.FlowMessage]:
        require(bool(raw) and bool(signature), "message/signature")
        msg = parse(F.FlowMessage, raw, "flow message")
        who = admit_query(context, msg, raw, signature, self._role.membership, self._window_s)
        return who, msg

    @unary
    async def ProposeTransaction(
        self, request: F.ProposeTransactionRequest, context: Ctx
    ) -> F.ProposeTransactionResponse:
        """Verify and sign."""
        who, msg = self._admit(context, request.message, request.signature)
        require(bool(msg.signed_transaction), "signed_transaction")
        sig = await self._role.on_propose(who, msg.signed_transaction)
        out = F.ProposeTransactionResponse()
        out.signature.signer = self._role.me
        out.signature.signature = sig
        return out

    @unary
    async def OfferInputs(
        self, request: F.OfferInputsRequest, context: Ctx
    ) -> F.OfferInputsResponse:
        """Offer cash for DvP terms."""
        who, msg = self._admit(context, request.message, request.signature)
        require(msg.HasField("terms"), "terms")
        refs = await self._role.on_offer(who, msg.terms)
        return F.OfferInputsResponse(inputs=[state_ref(r) for r in refs])

    @unary
    async def FetchTransaction(
        self, request: F.FetchTransactionRequest, context: Ctx
    ) -> F.FetchTransactionResponse:
        """Serve one shared backchain transaction."""
        who, msg = self._admit(context, request.message, request.signature)
        require(bool(msg.tx_id), "tx_id")
        return F.FetchTransactionResponse(
            signed_transaction=await self._role.on_fetch(who, msg.tx_id)
        )

    @unary
    async def RecordTransaction(
        self, request: F.RecordTransactionRequest, context: Ctx
    ) -> F.RecordTransactionResponse:
        """Verify and record a notarised transaction."""
        who, msg = self._admit(context, request.message, request.signature)
        require(bool(msg.signed_transaction), "signed_transaction")
        await self._role.on_record(who, msg.signed_transaction, msg.observer)
        return F.RecordTransactionResponse()


class VaultServicer(vault_service_pb2_grpc.VaultServiceServicer):
    """Serves clients of the node's own organisation."""

    def __init__(self, role: VaultRole, window_s: float) -> None:
        self._role = role
        self._window_s = window_s

    def _own_client(self, who: VerifiedIdentity) -> None:
        if who.org_id != self._role.ctx.org_id:
            raise ClientError(
                R.ERROR_REASON_NOT_AUTHORIZED, "only clients of the node's organisation may ask"
            )

    @unary
    async def QueryStates(
        self, request: V.QueryStatesRequest, context: Ctx
    ) -> V.QueryStatesResponse:
        """States matching the query."""
        require(bool(request.query) and bool(request.signature), "query/signature")
        query = parse(V.VaultQuery, request.query, "query")
        who = admit_query(
            context, query, request.query, request.signature, self._role.membership, self._window_s
        )
        self._own_client(who)
        rows = await self._role.store.query(
            query.contract, query.owner, query.participant, query.include_consumed
        )
        return V.QueryStatesResponse(
            states=[
                V.VaultState(ref=state_ref(r.ref), output=r.output_bytes, consumed_by=r.consumed_by)
                for r in rows
            ]
        )

    @unary
    async def RunFlow(self, request: V.RunFlowRequest, context: Ctx) -> V.RunFlowResponse:
        """Run a flow to completion."""
        require(bool(request.command) and bool(request.signature), "command/signature")
        cmd = parse(V.FlowCommand, request.command, "command")
        who = admit_query(
            context, cmd, request.command, request.signature, self._role.membership, self._window_s
        )
        self._own_client(who)
        if len(cmd.observers) > MAX_OBSERVERS:
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"more than {MAX_OBSERVERS} observers")
        stx = await self._run(cmd)
        return V.RunFlowResponse(tx_id=stx.wire.tx_id, signed_transaction=stx.raw)

    async def _run(self, cmd: V.FlowCommand) -> SignedTx:
        window = window_of(cmd.time_window if cmd.HasField("time_window") else None)
        observers = list(cmd.observers)
        self._role.check_observers(observers)
        kind = cmd.WhichOneof("flow")
        if kind == "issue":
            return await run_issue(self._role, cmd.issue, observers, window, cmd.memo, cmd.notary)
        if kind == "move":
            m = cmd.move
            return await run_move(
                self._role,
                m.contract,
                m.new_owner,
                m.asset,
                m.amount,
                observers,
                window,
                cmd.memo,
                cmd.notary,
            )
        if kind == "dvp":
            return await run_dvp(self._role, cmd.dvp.terms, observers, window, cmd.memo, cmd.notary)
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, "command names no flow")
