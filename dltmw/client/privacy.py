"""PrivacyClient: private transactions through the client's own node (Quorum/Tessera style).

The flow of one private transaction: the client Sends the serialised PrivateInvocation to its
node's privacy manager, naming the recipient organisations; the privacy manager encrypts, stores
and pushes it to every recipient and returns the payload hash. The client then signs an envelope
of type PRIVATE_TRANSACTION whose data is only `PrivateTransaction{payload_hash, agreements}` and
submits it through the gateway like any transaction: the ordered transaction carries no plaintext
(on a channel that requires agreements, every recipient's signed agreement on the execution
result, collected by the node first: docs/privacy.md "Agreement before commit"). Recipients
execute it against their private state once its block commits.

A recipient that is down does not fail the send on a channel that requires agreements: its
delivery is queued by the node, and the collection of the agreements waits for it (collected
again with backoff, bounded by `pending_deadline_s`); past that, `PrivateAgreementPending`
names the transaction to `resume_private` later (`client/private_pending.py`).

The creator (identity references, `client/creator_reference.py`, shared with the client's
endorser transactions): `submit_private` names the client by reference once one of its
transactions sent in full committed on the channel. It is fixed with the nonce BEFORE the
agreements (they are signed for the tx id = SHA-256(nonce ‖ creator as sent)) and carried to
the envelope and to `resume_private` (`PrivateAgreementPending.creator`). A reference refused at
admission or commit changed nothing; since an agreement is bound to its tx id, the transaction
is then done again in full under a new tx id: the payload is not sent again, its agreements are
collected again for that tx id (`_submit_collected`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc

from dltmw.aio.coalesce import Coalescer
from dltmw.aio.entropy import token_bytes
from dltmw.client.creator_reference import TxName
from dltmw.client.gateway import GatewayClient, transaction_header
from dltmw.client.private_pending import (
    PENDING_DEADLINE_S,
    PrivateAgreementPending,
    until_agreed,
)
from dltmw.core.hashing import compute_tx_id
from dltmw.rpc.status import reason_of
from dltmw.v1 import (
    common_pb2,
    gateway_service_pb2,
    privacy_manager_service_pb2,
    privacy_manager_service_pb2_grpc,
    private_agreement_pb2,
    private_payload_pb2,
    transaction_pb2,
)

A = private_agreement_pb2
P = privacy_manager_service_pb2
WAIT_ATTEMPTS = 40
PENDING_PAGE = 256  # PendingDeliveries rows per call
PENDING_LIST_MAX = 10_000  # `pending_deliveries` stops there (bounded)


@dataclass(frozen=True)
class PrivateSubmitted:
    """The outcome of one private transaction as the public ledger records it (`tx_id`: the
    transaction that committed; another than the agreements were first asked for when its
    creator reference was refused and it was done again in full: module docstring)."""

    tx_id: str
    payload_hash: bytes
    status: gateway_service_pb2.CommitStatusResponse


@dataclass(frozen=True)
class _Send:
    """One payload to send, with its recipients; `tx_id`: also collect the recipients'
    agreements for that transaction in the same SendBatch call ("" for none)."""

    channel_id: str
    payload: bytes
    orgs: tuple[str, ...]
    tx_id: str = ""


# A sent payload's hash, and its agreements' result when they were asked for and the node
# answered them (None: not asked, or a node that predates `SendItem.collect_for_tx_id`).
Sent = tuple[bytes, A.CollectAgreementsResult | None]


@dataclass(frozen=True)
class _Collect:
    """One payload whose agreements to collect, for a tx_id."""

    channel_id: str
    payload_hash: bytes
    tx_id: str


class PrivacyClient:
    """Private transactions for a GatewayClient's identity, via its gateway node."""

    def __init__(
        self,
        client: GatewayClient,
        batch_max: int = 100,
        in_flight: int = 8,
        pending_deadline_s: float = PENDING_DEADLINE_S,
    ) -> None:
        self.client = client
        # How long a collection waits for a recipient whose delivery is queued (module docstring)
        self.pending_deadline_s = pending_deadline_s
        self.stub = privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub(client.channel)
        # Concurrent sends gathered into SendBatch calls (`aio/coalesce.Coalescer`): one signed
        # call per payload costs more than sealing it, so while `in_flight` calls are out, new
        # sends queue and leave together, up to `batch_max` per call; a lone send leaves at once.
        self._coalescer: Coalescer[_Send, Sent] = Coalescer(
            self._send_batch, batch_max=batch_max, name="private-send", max_concurrent=in_flight
        )
        # Likewise concurrent agreement collections, into CollectAgreementsBatch calls.
        self._collects: Coalescer[_Collect, A.CollectAgreementsResponse] = Coalescer(
            self._collect_batch,
            batch_max=batch_max,
            name="private-collect",
            max_concurrent=in_flight,
        )

    async def close(self) -> None:
        """Stop pending coalesced sends and collections and close the connection."""
        await self._coalescer.close()
        await self._collects.close()
        await self.client.close()

    async def __aenter__(self) -> PrivacyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send_coalesced(
        self, channel_id: str, payload: bytes, recipient_orgs: Sequence[str]
    ) -> bytes:
        """Like `send` (returns the hash), but concurrent calls share SendBatch calls."""
        digest, _ = await self._coalescer.call(_Send(channel_id, payload, tuple(recipient_orgs)))
        return digest

    async def send_and_collect(
        self, channel_id: str, payload: bytes, recipient_orgs: Sequence[str], tx_id: str
    ) -> tuple[bytes, A.CollectAgreementsResponse]:
        """`send_coalesced`, then every recipient's agreement for `tx_id`
        (`collect_coalesced`), in ONE SendBatch call when the node answers them there
        (`SendItem.collect_for_tx_id`): a private transaction's second round trip, signature
        and client queue gone. A refused collection is asked again alone, so its caller gets
        the error CollectAgreements gives, as before; so is a node that answered none. A
        recipient whose delivery is pending is waited for (`collect_until`);
        `PrivateAgreementPending` (without the nonce: the caller chose the tx_id) past it."""
        send = _Send(channel_id, payload, tuple(recipient_orgs), tx_id)
        digest, result = await self._coalescer.call(send)
        if result is not None and result.HasField("response"):
            return digest, result.response
        return digest, await self.collect_until(channel_id, digest, tx_id)

    async def collect_until(
        self, channel_id: str, payload_hash: bytes, tx_id: str, deadline_s: float | None = None
    ) -> A.CollectAgreementsResponse:
        """`collect_agreements`, again with jittered backoff while a recipient has not agreed
        (PRIVATE_AGREEMENT_TIMEOUT: its delivery is queued, or it is slow), for at most
        `deadline_s` (default `pending_deadline_s`); then `PrivateAgreementPending` (the last
        error, with the payload hash and tx_id to resume). Any other error at once."""
        deadline = self.pending_deadline_s if deadline_s is None else deadline_s
        try:
            return await until_agreed(
                lambda timeout_s: self.collect_agreements(
                    channel_id, payload_hash, tx_id, timeout_s
                ),
                deadline,
            )
        except PrivateAgreementPending:
            raise
        except grpc.aio.AioRpcError as exc:
            if reason_of(exc) != "PRIVATE_AGREEMENT_TIMEOUT":
                raise
            raise PrivateAgreementPending(exc, channel_id, payload_hash, tx_id) from exc

    async def _send_batch(self, sends: Sequence[_Send]) -> list[Sent | BaseException]:
        """One SendBatch per channel among `sends`; the hashes (or errors) in order."""
        return await _per_channel(sends, self._send_channel)

    async def _send_channel(self, sends: list[_Send]) -> list[Sent | BaseException]:
        """Sends of one channel under one signature. A batch refused as a whole for bad input is
        retried payload by payload, so one caller's mistake fails only that caller."""
        try:
            reply = await self._send_batch_call(sends[0].channel_id, sends)
        except grpc.aio.AioRpcError as exc:
            if len(sends) == 1 or exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                return [exc] * len(sends)
            return list(await asyncio.gather(*(self._send_one(s) for s in sends)))
        if len(reply.payload_hashes) != len(sends) or len(reply.agreements) not in (0, len(sends)):
            return [ConnectionError("the node answered another number of items")] * len(sends)
        results: list[A.CollectAgreementsResult | None] = [None] * len(sends)
        for i, result in enumerate(reply.agreements):
            results[i] = result if sends[i].tx_id else None
        return list(zip(reply.payload_hashes, results, strict=True))

    async def _send_one(self, send: _Send) -> Sent | BaseException:
        try:
            return (await self.send(send.channel_id, send.payload, send.orgs)).payload_hash, None
        except grpc.aio.AioRpcError as exc:
            return exc

    async def send(
        self, channel_id: str, payload: bytes, recipient_orgs: Sequence[str]
    ) -> P.SendResponse:
        """Encrypt and distribute `payload`; returns its hash once every recipient holds it."""
        body, signature = self.client.signed_query(
            P.SendBody(
                channel_id=channel_id, payload=payload, recipient_organizations=recipient_orgs
            )
        )
        return await self.stub.Send(P.SendRequest(body=body, signature=signature), timeout=60)

    async def send_batch(
        self, channel_id: str, items: Sequence[tuple[bytes, Sequence[str]]]
    ) -> list[bytes]:
        """`send` for many (payload, recipient organisations) under one signature and one call;
        returns the payload hashes in order."""
        sends = [_Send(channel_id, payload, tuple(orgs)) for payload, orgs in items]
        return list((await self._send_batch_call(channel_id, sends)).payload_hashes)

    async def _send_batch_call(
        self, channel_id: str, sends: Sequence[_Send]
    ) -> P.SendBatchResponse:
        body, signature = self.client.signed_query(
            P.SendBatchBody(
                channel_id=channel_id,
                items=[
                    P.SendItem(
                        payload=s.payload,
                        recipient_organizations=s.orgs,
                        collect_for_tx_id=s.tx_id,
                    )
                    for s in sends
                ],
            )
        )
        # one deadline for the send and, when asked, the collection (each had 60 s alone)
        return await self.stub.SendBatch(
            P.SendBatchRequest(body=body, signature=signature), timeout=60
        )

    async def add_recipients(
        self, channel_id: str, payload_hash: bytes, recipient_orgs: Sequence[str]
    ) -> int:
        """Give more organisations a payload this client's node sent; returns the box count."""
        body, signature = self.client.signed_query(
            P.AddRecipientsBody(
                channel_id=channel_id,
                payload_hash=payload_hash,
                recipient_organizations=recipient_orgs,
            )
        )
        reply = await self.stub.AddRecipients(
            P.AddRecipientsRequest(body=body, signature=signature), timeout=60
        )
        return reply.recipient_count

    def new_nonce(self) -> tuple[bytes, str]:
        """A fresh nonce and the tx_id it gives this client's transaction with its creator in
        full: agreements are collected for a tx_id before the envelope is signed."""
        nonce = token_bytes(24)
        return nonce, compute_tx_id(nonce, self.client.signer.identity_bytes)

    def new_tx(self, channel_id: str) -> TxName:
        """A fresh nonce with the creator the client names on `channel_id` now (by reference
        once registered there: module docstring); its `tx_id` is what agreements are for."""
        return self.client.references.new_tx(channel_id)

    def _named(self, nonce: bytes, creator: bytes | None) -> TxName:
        return TxName(nonce, self.client.signer.identity_bytes if creator is None else creator)

    async def collect_agreements(
        self, channel_id: str, payload_hash: bytes, tx_id: str, timeout_s: float = 60.0
    ) -> A.CollectAgreementsResponse:
        """Every recipient's signed agreement on the payload's execution, for `tx_id` (none on a
        channel that does not require them; DISAGREEs included, see `agreed`). One attempt: a
        recipient not reached fails it (PRIVATE_AGREEMENT_TIMEOUT); `collect_until` waits."""
        query, signature = self.client.signed_query(
            A.CollectAgreementsQuery(channel_id=channel_id, payload_hash=payload_hash, tx_id=tx_id)
        )
        return await self.stub.CollectAgreements(
            A.CollectAgreementsRequest(query=query, signature=signature), timeout=timeout_s
        )

    async def collect_coalesced(
        self, channel_id: str, payload_hash: bytes, tx_id: str
    ) -> A.CollectAgreementsResponse:
        """Like `collect_agreements`, but concurrent calls share CollectAgreementsBatch calls
        (one signature and one call per batch); an item the node refused is asked again alone
        (`collect_agreements`), whose error is raised to its caller only."""
        return await self._collects.call(_Collect(channel_id, payload_hash, tx_id))

    async def _collect_batch(
        self, items: Sequence[_Collect]
    ) -> list[A.CollectAgreementsResponse | BaseException]:
        """One CollectAgreementsBatch per channel among `items`; results (or errors) in order."""
        return await _per_channel(items, self._collect_channel)

    async def _collect_channel(
        self, items: Sequence[_Collect]
    ) -> list[A.CollectAgreementsResponse | BaseException]:
        query, signature = self.client.signed_query(
            A.CollectAgreementsBatchQuery(
                channel_id=items[0].channel_id,
                queries=[
                    A.CollectAgreementsQuery(payload_hash=i.payload_hash, tx_id=i.tx_id)
                    for i in items
                ],
            )
        )
        try:
            reply = await self.stub.CollectAgreementsBatch(
                A.CollectAgreementsBatchRequest(query=query, signature=signature), timeout=60
            )
        except grpc.aio.AioRpcError as exc:
            # refused whole for one item's bad input, or a node without the batch call: each
            # item alone, so one caller's mistake fails only that caller
            if exc.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED):
                return [exc] * len(items)
            return list(await asyncio.gather(*(self._collect_one(i) for i in items)))
        if len(reply.results) != len(items):
            return [ConnectionError("the node answered another number of items")] * len(items)
        # An item the node refused is asked again alone, so its caller gets the very error
        # CollectAgreements gives (status and ErrorInfo reason), as before batching.
        return list(
            await asyncio.gather(
                *(
                    _done(result.response)
                    if result.HasField("response")
                    else self._collect_one(item)
                    for item, result in zip(items, reply.results, strict=True)
                )
            )
        )

    async def _collect_one(self, item: _Collect) -> A.CollectAgreementsResponse | BaseException:
        try:
            return await self.collect_agreements(item.channel_id, item.payload_hash, item.tx_id)
        except grpc.aio.AioRpcError as exc:
            return exc

    def private_envelope(
        self,
        channel_id: str,
        payload_hash: bytes,
        agreements: Sequence[A.PrivateAgreement] = (),
        nonce: bytes | None = None,
        creator: bytes | None = None,
    ) -> tuple[common_pb2.Envelope, str]:
        """A signed PRIVATE_TRANSACTION envelope carrying only `payload_hash` and the parties'
        agreements (collected for this `nonce`'s and `creator`'s tx_id), and its tx_id."""
        data = transaction_pb2.PrivateTransaction(payload_hash=payload_hash, agreements=agreements)
        return self.private_data_envelope(channel_id, data.SerializeToString(), nonce, creator)

    def private_data_envelope(
        self,
        channel_id: str,
        data: bytes,
        nonce: bytes | None = None,
        creator: bytes | None = None,
    ) -> tuple[common_pb2.Envelope, str]:
        """A signed PRIVATE_TRANSACTION envelope with `data` (a PrivateTransaction) and its
        tx_id: a payload's hash (`private_envelope`) or a purge (`client/purge.py`); `creator`
        as the tx_id names it (None: in full)."""
        tx = self._named(nonce if nonce is not None else token_bytes(24), creator)
        payload = self.private_payload(channel_id, data, tx.nonce, tx.creator)
        return self.client.envelope(payload), tx.tx_id

    def private_payload(
        self, channel_id: str, data: bytes, nonce: bytes, creator: bytes | None = None
    ) -> bytes:
        """The serialised Payload of a PRIVATE_TRANSACTION with `data`, for the tx_id of
        `nonce` and `creator` (None: in full) (signed alone by `private_data_envelope`, or with
        its Transact request's others)."""
        creator = self.client.signer.identity_bytes if creator is None else creator
        kind = common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION
        header = transaction_header(kind, channel_id, creator, nonce)
        return common_pb2.Payload(header=header.SerializeToString(), data=data).SerializeToString()

    async def submit_private(
        self,
        channel_id: str,
        recipient_orgs: Sequence[str],
        contract: str,
        function: str,
        *args: str | bytes,
        group: str = "",
        nonce: bytes | None = None,
        creator: bytes | None = None,
    ) -> PrivateSubmitted:
        """Send the invocation privately, order its hash, wait for the public commit; `group`:
        in that privacy group's state (`client/groups.py`); `nonce`: the caller's (so it knows
        the tx_id before: with `creator`, else in full), else a fresh one with the creator the
        client names now (module docstring). A recipient whose delivery is pending is waited
        for up to `pending_deadline_s`; then `PrivateAgreementPending`, for `resume_private`."""
        invocation = private_payload_pb2.PrivateInvocation(
            contract=contract,
            function=function,
            args=[a.encode() if isinstance(a, str) else a for a in args],
            group=group,
        )
        return await self.submit_invocation(channel_id, recipient_orgs, invocation, nonce, creator)

    async def submit_invocation(
        self,
        channel_id: str,
        recipient_orgs: Sequence[str],
        invocation: private_payload_pb2.PrivateInvocation,
        nonce: bytes | None = None,
        creator: bytes | None = None,
    ) -> PrivateSubmitted:
        """`submit_private` of a ready invocation (a privacy group's: `client/groups.py`)."""
        tx = self.new_tx(channel_id) if nonce is None else self._named(nonce, creator)
        try:
            digest, collected = await self.send_and_collect(
                channel_id, invocation.SerializeToString(), recipient_orgs, tx.tx_id
            )
        except PrivateAgreementPending as pending:
            # what `resume_private` needs to submit the same tx_id
            pending.nonce, pending.creator = tx.nonce, tx.creator
            raise
        return await self._submit_collected(channel_id, digest, collected, tx)

    async def resume_private(
        self,
        channel_id: str,
        payload_hash: bytes,
        nonce: bytes,
        deadline_s: float | None = None,
        creator: bytes | None = None,
    ) -> PrivateSubmitted:
        """Finish a private transaction whose collection timed out (`PrivateAgreementPending`
        from `submit_private` names `channel_id`, `payload_hash` and `nonce`): collect the
        agreements again for the same tx_id (waiting up to `deadline_s`, as `collect_until`),
        then submit and wait for the commit. The payload is not sent again: the same hash and
        tx_id, so resuming twice orders it at most once (the gateway refuses a tx_id on its
        ledger, the ledger marks a second copy DUPLICATE_TXID). `creator`: the error's (the
        creator its tx id names; None: in full)."""
        tx = self._named(nonce, creator)
        return await self._collect_and_submit(channel_id, payload_hash, tx, deadline_s)

    async def _collect_and_submit(
        self, channel_id: str, digest: bytes, tx: TxName, deadline_s: float | None = None
    ) -> PrivateSubmitted:
        """Collect the agreements for `tx`'s tx id (waiting as `collect_until`), then order."""
        try:
            collected = await self.collect_until(channel_id, digest, tx.tx_id, deadline_s)
        except PrivateAgreementPending as pending:
            pending.nonce, pending.creator = tx.nonce, tx.creator
            raise
        return await self._submit_collected(channel_id, digest, collected, tx)

    async def _submit_collected(
        self,
        channel_id: str,
        digest: bytes,
        collected: A.CollectAgreementsResponse,
        tx: TxName,
    ) -> PrivateSubmitted:
        """Order the payload hash with its agreements under `tx`'s tx_id; wait for the commit.
        A creator reference refused (at admission, or as the commit code) changed nothing: the
        transaction is done again in full under a new tx id, its agreements collected again
        (they are bound to the tx id; module docstring)."""
        refs = self.client.references
        try:
            status: gateway_service_pb2.CommitStatusResponse | None = await self._order(
                channel_id, digest, collected, tx
            )
        except grpc.aio.AioRpcError as exc:
            if not refs.refused_reason(channel_id, tx.creator, reason_of(exc)):
                raise
            status = None
        if status is not None and not refs.refused_code(channel_id, tx.creator, status.result):
            refs.committed(channel_id, tx.creator, status.result)
            return PrivateSubmitted(tx.tx_id, digest, status)
        return await self._collect_and_submit(
            channel_id, digest, TxName(token_bytes(24), refs.full)
        )

    async def _order(
        self,
        channel_id: str,
        digest: bytes,
        collected: A.CollectAgreementsResponse,
        tx: TxName,
    ) -> gateway_service_pb2.CommitStatusResponse:
        data = transaction_pb2.PrivateTransaction(
            payload_hash=digest, agreements=collected.agreements
        ).SerializeToString()
        payload = self.private_payload(channel_id, data, tx.nonce, tx.creator)
        tx_id = tx.tx_id
        # On a channel with private_creator_batches the envelope is signed with the others of
        # its Transact request (`client/creator_signing.py`), else alone.
        return await self.client.retried_alone(
            channel_id,
            lambda later: self.client.submit_and_wait(
                channel_id,
                tx_id,
                common_pb2.Envelope(payload=payload) if later else self.client.envelope(payload),
                unsigned=later,
            ),
            private=True,
        )

    async def receive(self, channel_id: str, payload_hash: bytes) -> bytes:
        """The decrypted payload (only from a recipient node, for a client of its org)."""
        query, signature = self.client.signed_query(
            P.ReceiveQuery(channel_id=channel_id, payload_hash=payload_hash)
        )
        reply = await self.stub.Receive(
            P.ReceiveRequest(query=query, signature=signature), timeout=30
        )
        return reply.payload

    async def validate(
        self, channel_id: str, payload_hash: bytes, wait: bool = True
    ) -> P.ValidatePrivateStateResponse:
        """Compare every recipient's private-state hash; with `wait`, retry (bounded) while this
        node or another party has not executed the transaction yet."""
        for attempt in range(WAIT_ATTEMPTS if wait else 1):
            query, signature = self.client.signed_query(
                P.ValidatePrivateStateQuery(channel_id=channel_id, payload_hash=payload_hash)
            )
            try:
                reply = await self.stub.ValidatePrivateState(
                    P.ValidatePrivateStateRequest(query=query, signature=signature), timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                if not wait or attempt + 1 == WAIT_ATTEMPTS or reason_of(exc) != "NOT_FOUND":
                    raise
            else:
                if (
                    not wait
                    or all(not p.error for p in reply.parties)
                    or attempt + 1 == WAIT_ATTEMPTS
                ):
                    return reply
            await asyncio.sleep(0.25)
        raise RuntimeError("unreachable: the loop returns or raises")

    async def recover(self, channel_id: str) -> P.RecoverResponse:
        """Rebuild the node's private store of `channel_id` from the other recipients."""
        query, signature = self.client.signed_query(P.RecoverQuery(channel_id=channel_id))
        return await self.stub.Recover(
            P.RecoverRequest(query=query, signature=signature), timeout=180
        )

    async def pending_deliveries(
        self, channel_id: str, limit: int = PENDING_LIST_MAX
    ) -> list[P.PendingDelivery]:
        """The node's deliveries of payloads it sent that no recipient acknowledged yet —
        pending, expired, recipient removed, abandoned (docs/privacy.md "Queued delivery") —
        page by page, at most `limit` in all."""
        out: list[P.PendingDelivery] = []
        after: tuple[bytes, str] = (b"", "")
        while len(out) < limit:
            page = min(PENDING_PAGE, limit - len(out))
            query, signature = self.client.signed_query(
                P.PendingDeliveriesQuery(
                    channel_id=channel_id,
                    after_payload_hash=after[0],
                    after_node_id=after[1],
                    limit=page,
                )
            )
            reply = await self.stub.PendingDeliveries(
                P.PendingDeliveriesRequest(query=query, signature=signature), timeout=30
            )
            out.extend(reply.deliveries)
            if len(reply.deliveries) < page:
                break
            last = reply.deliveries[-1]
            after = (last.payload_hash, last.node_id)
        return out

    async def abandon_delivery(self, channel_id: str, payload_hash: bytes) -> int:
        """Have the node stop pushing a payload it sent to the recipients still owed it (a
        pending transaction nobody will resume); how many deliveries were given up."""
        query, signature = self.client.signed_query(
            P.AbandonDeliveryQuery(channel_id=channel_id, payload_hash=payload_hash)
        )
        reply = await self.stub.AbandonDelivery(
            P.AbandonDeliveryRequest(query=query, signature=signature), timeout=30
        )
        return reply.abandoned


async def _done(response: A.CollectAgreementsResponse) -> A.CollectAgreementsResponse:
    return response


class _OfChannel(Protocol):
    @property
    def channel_id(self) -> str: ...


Item = TypeVar("Item", bound=_OfChannel)
Result = TypeVar("Result")


async def _per_channel(
    items: Sequence[Item],
    call: Callable[[list[Item]], Awaitable[list[Result | BaseException]]],
) -> list[Result | BaseException]:
    """`call` once per channel among `items` (a batch call names one channel), the channels
    at once; each item's result (or error) back in the items' order."""
    by_channel: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_channel.setdefault(item.channel_id, []).append(i)
    out: list[Result | BaseException] = [ConnectionError("no answer")] * len(items)
    answers = await asyncio.gather(*(call([items[i] for i in ix]) for ix in by_channel.values()))
    for indexes, results in zip(by_channel.values(), answers, strict=True):
        for i, result in zip(indexes, results, strict=True):
            out[i] = result
    return out
