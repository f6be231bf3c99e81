"""FlowService (node to node) and VaultService (client to its own node) servicers.

Admission is the same for both: the carried bytes are parsed, the timestamp must lie in the
node's window, the requester's signature must verify over exactly those bytes, and the TLS
client certificate must belong to the requester's organisation (`guard.admit_query`).
VaultService additionally serves only clients of the node's own organisation.

The servicers depend only on the protocols declared here; the node passes in its vault role and
the flows it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dltmw.core.errors import ClientError
from dltmw.core.identity import Membership, VerifiedIdentity
from dltmw.core.txcheck import parse
from dltmw.core.utxo.build import state_ref
from dltmw.core.utxo.model import Ref
from dltmw.core.utxo.verify import SignedTx
from dltmw.rpc.guard import Ctx, admit_query, require, unary
from dltmw.v1 import (
    errors_pb2,
    flow_service_pb2,
    flow_service_pb2_grpc,
    utxo_pb2,
    vault_service_pb2,
    vault_service_pb2_grpc,
)

R = errors_pb2
F = flow_service_pb2
V = vault_service_pb2
MAX_OBSERVERS = 16


class FlowResponder(Protocol):
    """What FlowService needs of the vault role (`runtime/roles/vault/vault.py`)."""

    @property
    def membership(self) -> Membership:
        """The network's organisations and CAs."""
        ...

    @property
    def me(self) -> bytes:
        """This node's identity."""
        ...

    async def on_propose(self, sender: VerifiedIdentity, raw: bytes) -> bytes:
        """Verify a proposed transaction and sign it; the signature."""
        ...

    async def on_offer(self, sender: VerifiedIdentity, terms: utxo_pb2.DvpTerms) -> list[Ref]:
        """Offer own cash for DvP terms."""
        ...

    async def on_fetch(self, sender: VerifiedIdentity, tx_id: str) -> bytes:
        """A backchain transaction shared with `sender`."""
        ...

    async def on_record(self, sender: VerifiedIdentity, raw: bytes, observer: bool) -> None:
        """Verify and record a notarised transaction."""


class StateRow(Protocol):
    """One recorded state, as VaultService returns it."""

    @property
    def ref(self) -> Ref:
        """(tx id, index) of the state."""
        ...

    @property
    def output_bytes(self) -> bytes:
        """The serialised output."""
        ...

    @property
    def consumed_by(self) -> str:
        """The consuming transaction's id, or ""."""
        ...


class VaultQueries(Protocol):
    """What VaultService needs of the vault role (`runtime/roles/vault/vault.py`)."""

    @property
    def membership(self) -> Membership:
        """The network's organisations and CAs."""
        ...

    async def query_states(
        self, contract: str, owner: bytes, participant: bytes, include_consumed: bool
    ) -> Sequence[StateRow]:
        """Recorded states matching every non-empty filter."""
        ...


class FlowStarter(Protocol):
    """Runs the flows clients ask for (`runtime/roles/vault/flows.FlowRunner`)."""

    async def run(self, command: V.FlowCommand) -> SignedTx:
        """Run the flow `command` names; the final transaction."""
        ...


class FlowServicer(flow_service_pb2_grpc.FlowServiceServicer):
    """Answers other vault nodes."""

    def __init__(self, role: FlowResponder, window_s: float) -> None:
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

    def __init__(
        self, vault: VaultQueries, flows: FlowStarter, org_id: str, window_s: float
    ) -> None:
        self._vault = vault
        self._flows = flows
        self._org_id = org_id
        self._window_s = window_s

    def _own_client(self, who: VerifiedIdentity) -> None:
        if who.org_id != self._org_id:
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
            context, query, request.query, request.signature, self._vault.membership, self._window_s
        )
        self._own_client(who)
        rows = await self._vault.query_states(
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
            context, cmd, request.command, request.signature, self._vault.membership, self._window_s
        )
        self._own_client(who)
        if len(cmd.observers) > MAX_OBSERVERS:
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"more than {MAX_OBSERVERS} observers")
        stx = await self._flows.run(cmd)
        return V.RunFlowResponse(tx_id=stx.wire.tx_id, signed_transaction=stx.raw)
