"""PrivacyManagerService servicer: admission of every request, then the privacy manager.

Two admission rules (see the proto): client RPCs (Send, Receive, ValidatePrivateState, Recover,
PendingDeliveries, AbandonDelivery, CollectAgreements, CollectAgreementsBatch)
need a signed request of a member of THIS node's organisation with a TLS certificate of that
organisation; node RPCs (Push, Resend, PrivateStateHash, Agree) need a signed request of a peer node
named in the channel config, with a TLS certificate of its organisation (AgreeBatch too: one
admission for the whole batch). The requester's privacy
key is always taken from the signed channel config, never from the request.

The servicer depends only on the `PrivacyRole` and `PrivateChannelRole` protocols declared
here; the node passes in its privacy manager.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from dltmw.aio.clock import utc_now
from dltmw.aio.coalesce import pipelined
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError
from dltmw.core.identity import VerifiedIdentity
from dltmw.core.timestamps import checked_datetime
from dltmw.core.txcheck import check_signed_query, parse
from dltmw.rpc.guard import (
    Ctx,
    SignedQueryBody,
    check_count,
    check_tls_org,
    require,
    streaming,
    unary,
)
from dltmw.rpc.tls import caller_tls_cert
from dltmw.v1 import (
    config_pb2,
    errors_pb2,
    privacy_manager_service_pb2,
    privacy_manager_service_pb2_grpc,
    private_agreement_pb2,
    private_payload_pb2,
)

A = private_agreement_pb2
P = privacy_manager_service_pb2
R = errors_pb2
HASH_BYTES = 32
TLS_CACHE_MAX = 1024
# PushBatches of one Push stream stored at once: a sender pipelines its batches to a node
# (`private_channel.PUSH_PIPELINE`); stored one at a time they queued behind each other.
PUSH_DEPTH = 8


class PrivateChannelRole(Protocol):
    """What the service needs of the privacy manager's side of one channel
    (`runtime/roles/privacy/private_channel.py`)."""

    @property
    def channel_id(self) -> str:
        """The channel's id."""
        ...

    @property
    def view(self) -> ChannelView:
        """The channel's configuration (members, peers and their privacy keys)."""
        ...

    def peer_node(self, identity: bytes) -> config_pb2.NodeConfig | None:
        """The channel's peer node with this identity, if any."""
        ...

    async def send(
        self, plaintext: bytes, orgs: Sequence[str]
    ) -> tuple[bytes, int, tuple[str, ...]]:
        """Seal, store, push; (payload hash, number of boxes, recipients not reached yet)."""
        ...

    async def send_many(
        self, items: Sequence[tuple[bytes, Sequence[str]]]
    ) -> list[tuple[bytes, int, tuple[str, ...]]]:
        """`send` for several payloads."""
        ...

    async def add_recipients(self, digest: bytes, orgs: Sequence[str]) -> int:
        """Give more organisations a sent payload; the box count."""
        ...

    async def receive(self, digest: bytes) -> bytes:
        """The decrypted payload."""
        ...

    def resend_chunks(
        self, recipient: bytes
    ) -> AsyncIterator[list[private_payload_pb2.EncryptedPayload]]:
        """Every held payload addressed to `recipient`'s privacy key, in chunks."""
        ...


class PrivacyRole(Protocol):
    """What the service needs of the node's privacy manager (`runtime/roles/privacy`)."""

    def channel(self, channel_id: str) -> PrivateChannelRole:
        """The privacy manager of a channel (CHANNEL_NOT_FOUND if none)."""
        ...

    async def accept_push(self, push: P.PushBatch, sender: config_pb2.NodeConfig) -> P.PushResponse:
        """Check and store pushed payloads; how many were stored, and the agreements the push
        asked (`PushBatch.agree_tx_ids`)."""
        ...

    async def send_and_collect(
        self, channel_id: str, items: Sequence[tuple[bytes, Sequence[str], str]]
    ) -> tuple[list[tuple[bytes, int, tuple[str, ...]]], list[A.CollectAgreementsResult]]:
        """Send each (plaintext, organisations, tx_id); ((payload hash, boxes, recipients not
        reached yet) per item, the collected agreements of each item with a tx_id in order)."""
        ...

    async def state_record(
        self, channel_id: str, digest: bytes, requester_key: bytes
    ) -> P.PrivateStateHashResponse:
        """This node's record of a private transaction, for another recipient."""
        ...

    async def validate(self, channel_id: str, digest: bytes) -> P.ValidatePrivateStateResponse:
        """Compare this node's private-state hash with every other party's."""
        ...

    async def recover(self, channel_id: str) -> P.RecoverResponse:
        """Rebuild the private store from the other peers."""
        ...

    async def pending_deliveries(
        self, channel_id: str, after: tuple[bytes, str], limit: int
    ) -> P.PendingDeliveriesResponse:
        """A page of this node's deliveries not acknowledged yet (pending or given up)."""
        ...

    async def abandon_delivery(self, channel_id: str, digest: bytes) -> P.AbandonDeliveryResponse:
        """Give up the pending deliveries of a payload this node sent."""
        ...

    async def agree(self, query: A.AgreeQuery, requester_key: bytes) -> A.PrivateAgreement:
        """Execute a held payload and sign a verdict on the requester's proposal."""
        ...

    async def agree_many(
        self, channel_id: str, queries: Sequence[A.AgreeQuery], requester_key: bytes
    ) -> list[A.AgreeResult]:
        """`agree` for each query of an admitted batch: a verdict or a refusal per item."""
        ...

    async def collect_agreements(
        self, channel_id: str, digest: bytes, tx_id: str
    ) -> A.CollectAgreementsResponse:
        """Every recipient's signed agreement."""
        ...

    async def collect_many(
        self, channel_id: str, items: Sequence[tuple[bytes, str]]
    ) -> list[A.CollectAgreementsResult]:
        """`collect_agreements` for each (payload hash, tx_id): a result or a refusal each."""
        ...


class PrivacyManagerServicer(privacy_manager_service_pb2_grpc.PrivacyManagerServiceServicer):
    """Send, Push, Receive, Resend, PrivateStateHash, ValidatePrivateState, Recover,
    CollectAgreements, CollectAgreementsBatch, Agree, AgreeBatch."""

    def __init__(self, manager: PrivacyRole, org_id: str, window_s: float, items_max: int) -> None:
        self._pm = manager
        self._org_id = org_id  # the organisation of this node: its clients may use the service
        self._window_s = window_s
        self._items_max = items_max
        self._tls_ok: set[tuple[str, bytes, str]] = set()

    def _client(
        self, context: Ctx, query: SignedQueryBody, channel_id: str, data: bytes, sig: bytes
    ) -> PrivateChannelRole:
        channel = self._pm.channel(channel_id)
        who = self._admit(context, query, channel, data, sig)
        if who.org_id != self._org_id:
            raise ClientError(
                R.ERROR_REASON_NOT_AUTHORIZED,
                f"only clients of {self._org_id} may use this privacy manager",
            )
        return channel

    def _node(
        self, context: Ctx, query: SignedQueryBody, channel_id: str, data: bytes, sig: bytes
    ) -> tuple[PrivateChannelRole, config_pb2.NodeConfig]:
        channel = self._pm.channel(channel_id)
        self._admit(context, query, channel, data, sig)
        node = channel.peer_node(query.requester)
        if node is None:
            raise ClientError(
                R.ERROR_REASON_NOT_AUTHORIZED, "requester is not a peer node of the channel"
            )
        return channel, node

    def _admit(
        self,
        context: Ctx,
        query: SignedQueryBody,
        channel: PrivateChannelRole,
        data: bytes,
        sig: bytes,
    ) -> VerifiedIdentity:
        """`guard.admit_query`, with the TLS-organisation verdict cached per (certificate, org):
        checking it costs a certificate signature verification, and a connection sends many
        requests with the same certificate."""
        membership = channel.view.membership
        stamp = (
            checked_datetime(query.timestamp, "timestamp") if query.HasField("timestamp") else None
        )
        who = check_signed_query(
            data, sig, query.requester, membership, stamp, utc_now(), self._window_s
        )
        key = (channel.channel_id, caller_tls_cert(context) or b"", who.org_id)
        if key not in self._tls_ok:
            check_tls_org(context, membership, who.org_id)
            if len(self._tls_ok) >= TLS_CACHE_MAX:
                self._tls_ok.clear()
            self._tls_ok.add(key)
        return who

    @unary
    async def Send(self, request: P.SendRequest, context: Ctx) -> P.SendResponse:
        """Encrypt, store, push, return the hash."""
        require(bool(request.body), "body")
        body = parse(P.SendBody, request.body, "body")
        require(bool(body.payload), "body.payload")
        channel = self._client(context, body, body.channel_id, request.body, request.signature)
        digest, count, pending = await channel.send(
            body.payload, list(body.recipient_organizations)
        )
        return P.SendResponse(payload_hash=digest, recipient_count=count, pending_nodes=pending)

    @unary
    async def SendBatch(self, request: P.SendBatchRequest, context: Ctx) -> P.SendBatchResponse:
        """Send for many payloads under one signature."""
        require(bool(request.body), "body")
        body = parse(P.SendBatchBody, request.body, "body")
        require(len(body.items) > 0, "body.items")
        check_count(body.items, "body.items", self._items_max)
        for item in body.items:
            require(bool(item.payload), "body.items.payload")
        self._client(context, body, body.channel_id, request.body, request.signature)
        sent, collected = await self._pm.send_and_collect(
            body.channel_id,
            [(i.payload, list(i.recipient_organizations), i.collect_for_tx_id) for i in body.items],
        )
        pending = sorted({node for _, _, nodes in sent for node in nodes})
        return P.SendBatchResponse(
            payload_hashes=[digest for digest, _, _ in sent],
            pending_nodes=pending,
            agreements=_placed(body, collected),
        )

    @unary
    async def AddRecipients(
        self, request: P.AddRecipientsRequest, context: Ctx
    ) -> P.AddRecipientsResponse:
        """Re-wrap a sent payload's key for more recipients (no re-encryption)."""
        require(bool(request.body), "body")
        body = parse(P.AddRecipientsBody, request.body, "body")
        _require_hash(body.payload_hash)
        require(len(body.recipient_organizations) > 0, "body.recipient_organizations")
        channel = self._client(context, body, body.channel_id, request.body, request.signature)
        count = await channel.add_recipients(body.payload_hash, list(body.recipient_organizations))
        return P.AddRecipientsResponse(recipient_count=count)

    @streaming
    async def Push(
        self, request_iterator: AsyncIterator[P.PushRequest], context: Ctx
    ) -> AsyncIterator[P.PushResponse]:
        """Admit and store batches, up to PUSH_DEPTH of the stream at once (their stores share
        the private store's group commit), acknowledged in order; a refused batch ends the
        stream with its status (batches after it may be stored: Push is idempotent)."""

        async def handle(request: P.PushRequest) -> P.PushResponse:
            require(bool(request.batch), "batch")
            batch = parse(P.PushBatch, request.batch, "batch")
            check_count(batch.payloads, "batch.payloads", self._items_max)
            check_count(batch.payload_hashes, "batch.payload_hashes", self._items_max)
            _, node = self._node(context, batch, batch.channel_id, request.batch, request.signature)
            if batch.agree_tx_ids and len(batch.agree_tx_ids) != len(batch.payload_hashes):
                raise ClientError(
                    R.ERROR_REASON_INVALID_FIELD, "batch.agree_tx_ids: none, or one per payload"
                )
            return await self._pm.accept_push(batch, node)

        async for response in pipelined(request_iterator, handle, PUSH_DEPTH):
            yield response

    @unary
    async def Receive(self, request: P.ReceiveRequest, context: Ctx) -> P.ReceiveResponse:
        """Decrypt for a client of this node's organisation."""
        query = parse(P.ReceiveQuery, request.query, "query")
        _require_hash(query.payload_hash)
        channel = self._client(context, query, query.channel_id, request.query, request.signature)
        return P.ReceiveResponse(payload=await channel.receive(query.payload_hash))

    @streaming
    async def Resend(
        self, request: P.ResendRequest, context: Ctx
    ) -> AsyncIterator[P.ResendResponse]:
        """Every held payload addressed to the requesting node."""
        query = parse(P.ResendQuery, request.query, "query")
        channel, node = self._node(
            context, query, query.channel_id, request.query, request.signature
        )
        if not node.privacy_public_key:
            return
        async for chunk in channel.resend_chunks(node.privacy_public_key):
            yield P.ResendResponse(payloads=chunk)

    @unary
    async def PrivateStateHash(
        self, request: P.PrivateStateHashRequest, context: Ctx
    ) -> P.PrivateStateHashResponse:
        """This node's record, to another recipient."""
        query = parse(P.PrivateStateHashQuery, request.query, "query")
        _require_hash(query.payload_hash)
        _, node = self._node(context, query, query.channel_id, request.query, request.signature)
        return await self._pm.state_record(
            query.channel_id, query.payload_hash, node.privacy_public_key
        )

    @unary
    async def ValidatePrivateState(
        self, request: P.ValidatePrivateStateRequest, context: Ctx
    ) -> P.ValidatePrivateStateResponse:
        """Compare with every other recipient."""
        query = parse(P.ValidatePrivateStateQuery, request.query, "query")
        _require_hash(query.payload_hash)
        self._client(context, query, query.channel_id, request.query, request.signature)
        return await self._pm.validate(query.channel_id, query.payload_hash)

    @unary
    async def Recover(self, request: P.RecoverRequest, context: Ctx) -> P.RecoverResponse:
        """Rebuild the private store from the other peers."""
        query = parse(P.RecoverQuery, request.query, "query")
        self._client(context, query, query.channel_id, request.query, request.signature)
        return await self._pm.recover(query.channel_id)

    @unary
    async def PendingDeliveries(
        self, request: P.PendingDeliveriesRequest, context: Ctx
    ) -> P.PendingDeliveriesResponse:
        """The sender's deliveries not acknowledged yet, for a client of this organisation."""
        query = parse(P.PendingDeliveriesQuery, request.query, "query")
        if query.after_payload_hash:
            _require_hash(query.after_payload_hash)
        self._client(context, query, query.channel_id, request.query, request.signature)
        after = (query.after_payload_hash, query.after_node_id)
        return await self._pm.pending_deliveries(query.channel_id, after, query.limit)

    @unary
    async def AbandonDelivery(
        self, request: P.AbandonDeliveryRequest, context: Ctx
    ) -> P.AbandonDeliveryResponse:
        """Give up a payload's pending deliveries, for a client of this organisation."""
        query = parse(P.AbandonDeliveryQuery, request.query, "query")
        _require_hash(query.payload_hash)
        self._client(context, query, query.channel_id, request.query, request.signature)
        return await self._pm.abandon_delivery(query.channel_id, query.payload_hash)

    @unary
    async def CollectAgreements(
        self, request: A.CollectAgreementsRequest, context: Ctx
    ) -> A.CollectAgreementsResponse:
        """Every recipient's agreement, for a client of this node's organisation."""
        query = parse(A.CollectAgreementsQuery, request.query, "query")
        _require_hash(query.payload_hash)
        require(bool(query.tx_id), "query.tx_id")
        self._client(context, query, query.channel_id, request.query, request.signature)
        return await self._pm.collect_agreements(query.channel_id, query.payload_hash, query.tx_id)

    def _check_batch(
        self, channel_id: str, queries: Sequence[A.AgreeQuery | A.CollectAgreementsQuery]
    ) -> None:
        """The shape of a batch of agreement queries, before anything runs: not empty, within
        the item limit, each with a payload hash and a tx_id, none naming another channel."""
        require(len(queries) > 0, "query.queries")
        check_count(queries, "query.queries", self._items_max)
        for item in queries:
            _require_hash(item.payload_hash)
            require(bool(item.tx_id), "query.queries.tx_id")
            if item.channel_id and item.channel_id != channel_id:
                raise ClientError(
                    R.ERROR_REASON_INVALID_FIELD, "every query of a batch names the batch's channel"
                )

    @unary
    async def CollectAgreementsBatch(
        self, request: A.CollectAgreementsBatchRequest, context: Ctx
    ) -> A.CollectAgreementsBatchResponse:
        """Every recipient's agreements for many payloads, for a client of this node's
        organisation: every item checked for shape first (a malformed one refuses the batch),
        then each collected on its own."""
        query = parse(A.CollectAgreementsBatchQuery, request.query, "query")
        self._check_batch(query.channel_id, query.queries)
        self._client(context, query, query.channel_id, request.query, request.signature)
        items = [(q.payload_hash, q.tx_id) for q in query.queries]
        return A.CollectAgreementsBatchResponse(
            results=await self._pm.collect_many(query.channel_id, items)
        )

    @unary
    async def Agree(self, request: A.AgreeRequest, context: Ctx) -> A.AgreeResponse:
        """This node's signed verdict, to another recipient."""
        query = parse(A.AgreeQuery, request.query, "query")
        _require_hash(query.payload_hash)
        require(bool(query.tx_id), "query.tx_id")
        _, node = self._node(context, query, query.channel_id, request.query, request.signature)
        return A.AgreeResponse(agreement=await self._pm.agree(query, node.privacy_public_key))

    @unary
    async def AgreeBatch(self, request: A.AgreeBatchRequest, context: Ctx) -> A.AgreeBatchResponse:
        """This node's verdicts on a batch of another recipient's proposals: every item is
        checked for shape before anything runs (a malformed item refuses the batch), then each
        gets its own verdict or refusal."""
        query = parse(A.AgreeBatchQuery, request.query, "query")
        self._check_batch(query.channel_id, query.queries)
        _, node = self._node(context, query, query.channel_id, request.query, request.signature)
        key = node.privacy_public_key
        return A.AgreeBatchResponse(
            results=await self._pm.agree_many(query.channel_id, query.queries, key)
        )


def _placed(
    body: P.SendBatchBody, collected: Sequence[A.CollectAgreementsResult]
) -> list[A.CollectAgreementsResult]:
    """The agreements of the items that asked for them (`SendItem.collect_for_tx_id`) in their
    places, in the same call as their Send: a separate CollectAgreementsBatch cost the client
    one more round trip, signature and queue per batch, a third of a private transaction's
    latency (benchmarks/RESULTS.md, branch priv). An empty list when no item asked."""
    asked = [i for i, item in enumerate(body.items) if item.collect_for_tx_id]
    if not asked:
        return []
    out = [A.CollectAgreementsResult() for _ in body.items]
    for i, result in zip(asked, collected, strict=True):
        out[i] = result
    return out


def _require_hash(digest: bytes) -> None:
    if len(digest) != HASH_BYTES:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "payload_hash must be 32 bytes")
