"""The vault role: records the transactions a node is party to, answers its counterparties, and
hosts the flows the node initiates (`runtime/roles/vault/flows.py`).

Who may see what. A transaction reaches only its parties: the nodes of required signers (to
sign), the participants of its states and named observers (to record). A counterparty may fetch
backchain transactions only from a node that sent it something, and only the ancestors of what
was sent (`share`); any other request gets NOT_FOUND, the same answer as for an unknown id, so
ids cannot be probed. A node refuses to record a transaction it is not a participant of unless
the sender names it an observer.

When does a node sign? Only a transaction that verifies completely (backchain, contracts, every
other required signature present except its own) and, if it consumes any of the node's own
states, only states it offered to this very sender for these very DvP terms (`OfferInputs`).
Offers and sharing grants live in memory: a restart simply makes in-flight flows fail, and
their initiators retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from dltmw.aio.clock import utc_now
from dltmw.aio.rpc_errors import from_rpc_error, reconnects
from dltmw.core.errors import ClientError, TransientError
from dltmw.core.identity import Membership, VerifiedIdentity
from dltmw.core.utxo.contracts import StateAndRef
from dltmw.core.utxo.model import Ref
from dltmw.core.utxo.plans import Holding, holding, select
from dltmw.core.utxo.verify import SignedTx, check_signatures, read_signed
from dltmw.ledger.vault_store import VaultRow, VaultStore, owner_of
from dltmw.net.netmap import NetworkMap
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.vault.backchain import Backchain, Fetch, check_notary, verify_full
from dltmw.runtime.roles.vault.outbox import Outbox
from dltmw.runtime.roles.vault.recovery import Page, Recovery, Report, serve_page
from dltmw.v1 import (
    errors_pb2,
    flow_service_pb2,
    flow_service_pb2_grpc,
    utxo_pb2,
    vault_recovery_pb2,
)

R = errors_pb2
F = flow_service_pb2
RPC_TIMEOUT_S = 30.0
SHARE_LIMIT = 100_000
FLOW_STUB = flow_service_pb2_grpc.FlowServiceStub


@dataclass(frozen=True)
class Offer:
    """States offered to one initiator for one set of DvP terms."""

    terms: bytes
    refs: frozenset[Ref]


class VaultRole:
    """Vault and flow responder of one node."""

    def __init__(
        self, ctx: NodeContext, store: VaultStore, netmap: NetworkMap, membership: Membership
    ) -> None:
        self.ctx = ctx
        self.me = ctx.signer.identity_bytes
        self.store = store
        self.netmap = netmap
        self.membership = membership
        self.backchain = Backchain(store, netmap, membership)
        self._shared: dict[bytes, set[str]] = {}
        self._offers: dict[bytes, Offer] = {}
        self._reserved: set[Ref] = set()
        self.select_lock = asyncio.Lock()
        self._recovering = asyncio.Lock()
        self.outbox = Outbox(self)

    async def start(self) -> None:
        """Open the store and resume delivering what the outbox holds."""
        await self.store.open()
        self.outbox.start(self.ctx.tasks)

    async def stop(self) -> None:
        """Stop the delivery task, then close the store."""
        await self.outbox.stop()
        await self.store.close()

    # --- talking to other vault nodes ------------------------------------------------------

    def node_of(self, identity: bytes) -> str:
        """Vault node of a party; INVALID_FIELD if the identity is no vault node."""
        node = self.netmap.node_of(identity)
        if node is None or "vault" not in self.netmap.nodes[node].roles:
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, "a party is not a vault node")
        return node

    def check_observers(self, observers: Iterable[str]) -> None:
        """INVALID_FIELD unless every observer is a vault node (checked before anything moves)."""
        for node in observers:
            party = self.netmap.nodes.get(node)
            if party is None or "vault" not in party.roles:
                raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"{node!r} is not a vault node")

    def signed_message(self, **fields: object) -> tuple[bytes, bytes]:
        """A FlowMessage from this node, serialised and signed."""
        msg = F.FlowMessage(requester=self.me, **fields)  # type: ignore[arg-type]
        msg.timestamp.FromDatetime(utc_now())
        raw = msg.SerializeToString()
        return raw, self.ctx.signer.sign(raw)

    def sign_query(self, query: vault_recovery_pb2.TransactionPageQuery) -> tuple[bytes, bytes]:
        """`query` stamped with this node's identity and time, serialised and signed."""
        query.requester = self.me
        query.timestamp.FromDatetime(utc_now())
        raw = query.SerializeToString()
        return raw, self.ctx.signer.sign(raw)

    async def call(
        self, node_id: str, method: str, request: Message, service: type = FLOW_STUB
    ) -> Message:
        """Call `service`.`method` (FlowService unless named) on another node, mapping failures
        to DltmwError."""
        stub = service(await self.ctx.channel_to(node_id))
        try:
            reply: Message = await getattr(stub, method)(request, timeout=RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            if reconnects(err):
                await self.ctx.forget(node_id)
            raise from_rpc_error(err, node_id) from None
        return reply

    def fetcher(self, node_id: str) -> Fetch:
        """Fetch function for backchain resolution from `node_id`."""

        async def fetch(tx_id: str) -> bytes:
            raw, sig = self.signed_message(tx_id=tx_id)
            reply = await self.call(
                node_id, "FetchTransaction", F.FetchTransactionRequest(message=raw, signature=sig)
            )
            if not isinstance(reply, F.FetchTransactionResponse):
                raise TypeError("unexpected reply")
            return reply.signed_transaction

        return fetch

    async def share(self, to: bytes, tx_ids: Iterable[str]) -> None:
        """Let party `to` fetch `tx_ids` and everything they depend on."""
        wanted = set(tx_ids)
        wanted |= await self.store.ancestors(wanted, SHARE_LIMIT)
        grants = self._shared.setdefault(to, set())
        if len(grants) + len(wanted) > SHARE_LIMIT:
            grants.clear()  # bounded memory: old grants go first; in-flight flows then retry
        grants |= wanted

    # --- answering other vault nodes -------------------------------------------------------

    async def on_fetch(self, sender: VerifiedIdentity, tx_id: str) -> bytes:
        """A backchain transaction shared with `sender`, else NOT_FOUND."""
        if tx_id in self._shared.get(sender.identity_bytes, set()):
            found = await self.store.transactions([tx_id])
            if tx_id in found:
                return found[tx_id]
        raise ClientError(R.ERROR_REASON_NOT_FOUND, f"transaction {tx_id[:12]} is not available")

    async def on_list(self, sender: VerifiedIdentity, after: str, want: int) -> Page:
        """A page of the transactions `sender` takes part in (vault recovery)."""
        return await serve_page(self, sender, after, want)

    async def recover(self) -> Report:
        """Rebuild the vault from the counterparties (`recovery.py`); one run at a time."""
        async with self._recovering:
            return await Recovery(self).run()

    async def replicate_from(self, active: str) -> int:
        """A standby's pass (runtime/standby.py): record what its active recorded since the last
        pass, each transaction verified; returns how many. PEER_UNAVAILABLE when the active
        could not be read to the end."""
        async with self._recovering:
            report = await Recovery(self, active).run()
        if report.unreachable:
            raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, f"{active} could not be read")
        return report.recorded

    async def on_offer(self, sender: VerifiedIdentity, terms: utxo_pb2.DvpTerms) -> list[Ref]:
        """Offer own cash for DvP terms in which this node pays `sender`."""
        if terms.buyer != self.me or terms.seller != sender.identity_bytes:
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "offers are only made to the seller")
        async with self.select_lock:
            chosen = select(await self.holdings("cash"), terms.currency, terms.amount)
            old = self._offers.pop(sender.identity_bytes, None)
            if old is not None:
                self._reserved -= old.refs
            refs = frozenset(h.ref for h in chosen)
            self._reserved |= refs
            self._offers[sender.identity_bytes] = Offer(terms.SerializeToString(), refs)
        await self.share(sender.identity_bytes, {r.tx_id for r in refs})
        return sorted(refs)

    async def on_propose(self, sender: VerifiedIdentity, raw: bytes) -> bytes:
        """Verify a proposed transaction (resolving its backchain from the sender) and sign."""
        stx = read_signed(raw)
        required = stx.wire.required_signers()
        if self.me not in required:
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "this node is not a required signer")
        if not self.netmap.is_notary(stx.wire.notary):
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"{stx.wire.notary!r} is no notary")
        self.netmap.contract_code.named(stx.wire)  # unknown or unapproved code: fetch nothing
        now = utc_now()
        known = await self.backchain.resolve(
            stx.wire, self.fetcher(self.node_of_sender(sender)), now
        )
        missing_ok = required - {sender.identity_bytes}
        code = self.netmap.contract_code
        ltx = verify_full(stx, known, self.membership, now, frozenset(missing_ok), code)
        mine = {s.ref for s in ltx.inputs if owner_of(s.output) == self.me}
        if mine:
            offer = self._offers.get(sender.identity_bytes)
            terms = [c.data for c in stx.wire.commands if c.contract == "dvp"]
            if offer is None or terms != [offer.terms] or not mine <= offer.refs:
                raise ClientError(
                    R.ERROR_REASON_NOT_AUTHORIZED, "the transaction spends states not offered"
                )
        return self.ctx.signer.sign(stx.wire.tx_id.encode())

    async def on_record(self, sender: VerifiedIdentity, raw: bytes, observer: bool) -> None:
        """Verify and record a notarised transaction this node participates in or observes."""
        stx = read_signed(raw)
        mine = [i for i, o in enumerate(stx.wire.outputs) if self.me in o.participants]
        if not observer and not mine and self.me not in stx.wire.required_signers():
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "this node is not a participant")
        await self.verify_received(stx, self.node_of_sender(sender))
        await self.record(stx, range(len(stx.wire.outputs)) if observer else mine)
        self.release(sender.identity_bytes)

    async def verify_received(self, stx: SignedTx, node_id: str) -> None:
        """Verify a notarised transaction received from `node_id` before it is recorded: the
        notary's signature (or batch proof), then either only the parties' signatures (a
        validating notary verified the rest) or its backchain, fetched from `node_id`, its
        contracts and every required signature."""
        now = utc_now()
        check_notary(stx, self.netmap, self.membership, now)
        self.netmap.contract_code.named(stx.wire)  # unknown or unapproved code: fetch nothing
        if self.backchain.vouched(stx):
            check_signatures(stx, self.membership, now)  # the validating notary verified the rest
        else:
            known = await self.backchain.resolve(stx.wire, self.fetcher(node_id), now)
            verify_full(stx, known, self.membership, now, code=self.netmap.contract_code)

    def node_of_sender(self, sender: VerifiedIdentity) -> str:
        """The vault node that sent a flow message (its identity must be a node's)."""
        node = self.netmap.node_of(sender.identity_bytes)
        if node is None:
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "flow messages come from nodes only")
        return node

    async def query_states(
        self, contract: str, owner: bytes, participant: bytes, include_consumed: bool
    ) -> list[VaultRow]:
        """Recorded states matching every non-empty filter (VaultService.QueryStates)."""
        return await self.store.query(contract, owner, participant, include_consumed)

    # --- local state -----------------------------------------------------------------------

    async def record(
        self, stx: SignedTx, outputs: Iterable[int], deliveries: Iterable[tuple[str, bool]] = ()
    ) -> None:
        """Record a verified, notarised transaction (and the outbox rows to deliver it)."""
        await self.store.record(stx, list(outputs), list(deliveries))
        self._reserved -= set(stx.wire.inputs)

    def release(self, initiator: bytes) -> None:
        """Drop the offer made to `initiator` (its flow ended)."""
        offer = self._offers.pop(initiator, None)
        if offer is not None:
            self._reserved -= offer.refs

    async def holdings(self, contract: str) -> list[Holding]:
        """Own unconsumed, unreserved states of a contract, oldest first."""
        rows = await self.store.query(contract=contract, owner=self.me)
        out = []
        for row in rows:
            h = holding(StateAndRef(row.ref, row.output))
            if h is not None and h.ref not in self._reserved:
                out.append(h)
        return out

    def is_reserved(self, ref: Ref) -> bool:
        """Whether a running flow (or an offer) spends `ref`."""
        return ref in self._reserved

    def reserve(self, refs: Iterable[Ref]) -> None:
        """Keep states away from other selections while a flow spends them."""
        self._reserved |= set(refs)

    def unreserve(self, refs: Iterable[Ref]) -> None:
        """Give states back after a failed flow."""
        self._reserved -= set(refs)
