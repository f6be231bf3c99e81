"""GatewayClient: build and sign proposals and envelopes, and drive the Gateway API.

The flow of one transaction (Fabric Gateway style): the client signs a proposal; the gateway
gathers endorsements and returns the transaction payload; the client signs that payload
(exactly those bytes) into an envelope and submits it; then it waits for the commit status.
Every request is signed by the client's own key: the gateway never signs for a client.

Throughput. `submit_transaction` runs over the gateway's Transact stream (`client/pipeline.py`)
unless the client was made with `pipelined=False` (or DLTMW_CLIENT_PIPELINE=0 in the
environment): concurrent calls — `asyncio.gather(*(c.submit_transaction(...) for ...))` or a pool
of worker tasks — then share one stream and travel many per gRPC message, which is what a
high-rate client should do. The unary methods (`endorse`, `submit`, `commit_status`) keep their
one-RPC-each behaviour for callers that drive the steps themselves.

Read your writes (session consistency, on by default). The client remembers, per channel, the
highest block it saw committed (a CommitStatus, a commit through `submit_transaction`, an Events
block) and sends it as `min_block_number` with every Endorse and Evaluate: the endorsers then
simulate on a state that includes the client's own earlier writes (an `open` followed at once by
a `deposit` cannot be refused for a missing account by a peer that lags). `seen_block` reads
that mark and `observe_block` raises it, so a program can carry it to another client (another
gateway after a fail-over, another process).

Identity references (channels with `ChannelConfig.client_identity_references`, named by
`client_references`, from the network's channel files by default): `submit_transaction` sends
its creator in full until it sees one of its transactions committed on the channel (its commit
status names the block N that carried the certificate in full, so every node resolves the
reference from block N+1 on, and any later proposal is ordered after N), then by reference
(`Identity{org_id, certificate_ref}`, ~40 bytes where the identity is ~450; the tx_id covers the
creator as sent). A node refusing the reference — UNKNOWN_IDENTITY_REFERENCE or MALFORMED at
endorsement, or as the commit code (a channel whose flag was turned off, a peer rebuilt) — makes
it send in full again and retry the transaction once, in full (nothing was changed by the
refused one). The rule and its state, shared with private transactions and with the SDK
`Client`'s other connections: `client/creator_reference.py`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError

from dltmw.aio.clock import utc_now
from dltmw.aio.entropy import token_bytes
from dltmw.client.creator_reference import CreatorReferences
from dltmw.client.creator_signing import CreatorSigner
from dltmw.client.files import ClientFiles
from dltmw.client.pipeline import Pipeline
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import SigningIdentity
from dltmw.rpc.status import reason_of
from dltmw.rpc.tls import link_tls, secure_channel
from dltmw.rpc.tracing import NO_TRACING, Tracer
from dltmw.v1 import (
    common_pb2,
    gateway_service_pb2,
    gateway_service_pb2_grpc,
    proposal_pb2,
)

G = gateway_service_pb2
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
ENDORSE_ATTEMPTS = 5
T = TypeVar("T")


@dataclass(frozen=True)
class Submitted:
    """The outcome of one submitted transaction."""

    tx_id: str
    result: proposal_pb2.ContractResponse
    status: G.CommitStatusResponse


class GatewayClient:
    """A client identity connected to one gateway."""

    def __init__(
        self,
        signer: SigningIdentity,
        channel: grpc.aio.Channel,
        pipelined: bool | None = None,
        tracer: Tracer = NO_TRACING,
        batched_channels: Iterable[str] = (),
        private_batched_channels: Iterable[str] = (),
        signing: CreatorSigner | None = None,
        client_references: Iterable[str] = (),
        references: CreatorReferences | None = None,
    ) -> None:
        """`signing`: a `CreatorSigner` of `signer` shared with other connections (the SDK
        `Client`'s, which then decides the channels; `batched_channels` etc. are ignored).
        `client_references`: the channels whose config lets clients name themselves by
        reference (module docstring); `references`: that state shared with other connections
        (the SDK `Client`'s; `client_references` is then ignored)."""
        self.signer = signer
        # which creator each channel's transactions name (`client/creator_reference.py`)
        self.references = references or CreatorReferences(signer.identity_bytes, client_references)
        # pipelined transactions of `batched_channels` (ChannelConfig.creator_batches) and
        # private ones of `private_batched_channels` (private_creator_batches) are signed once
        # per Transact request (`client/creator_signing.py`)
        self.signing = signing or CreatorSigner(signer, batched_channels, private_batched_channels)
        self.channel = channel
        # OpenTelemetry: a span per unary call in its transaction's trace, whose context goes
        # to the gateway as `traceparent` metadata (`rpc/tracing.py`); none by default
        self.tracer = tracer
        self.stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        if pipelined is None:
            pipelined = os.environ.get("DLTMW_CLIENT_PIPELINE", "1") != "0"
        self.pipeline: Pipeline | None = (
            Pipeline(self.stub, signer=self.signing) if pipelined else None
        )
        self._seen: dict[str, int] = {}  # channel id -> highest block seen committed

    def seen_block(self, channel_id: str) -> int:
        """The highest block of `channel_id` this client saw committed (0: none yet); it is
        the `min_block_number` of the client's next Endorse and Evaluate there."""
        return self._seen.get(channel_id, 0)

    def observe_block(self, channel_id: str, block_number: int) -> None:
        """Note that block `block_number` of `channel_id` is committed (never lowers the mark)."""
        if block_number > self._seen.get(channel_id, 0):
            self._seen[channel_id] = block_number

    @staticmethod
    async def connect(
        network_dir: Path,
        client_id: str,
        gateway: str | None = None,
        timeout_s: float = 10.0,
        pipelined: bool | None = None,
        otlp_endpoint: str = "",
    ) -> GatewayClient:
        """Connect as `client_id` of a network made by `dltmw init` to its (or a named) gateway;
        with `otlp_endpoint` ("host:port"), trace each transaction's calls there."""
        loaded = ClientFiles.load(network_dir, client_id)
        node_id = gateway or loaded.gateway
        if node_id is None:
            raise ValueError(f"client {client_id} has no default gateway; name one")
        signer, tls = loaded.signer, loaded.tls
        address = await loaded.addresses.resolve(node_id, timeout_s)
        if address is None:
            raise ConnectionError(f"gateway {node_id} has not published an address")
        name, tls = link_tls(tls, loaded.addresses, node_id)
        channel = secure_channel(address, name, tls, MAX_MESSAGE_BYTES)
        tracer = Tracer.otlp(otlp_endpoint, client_id) if otlp_endpoint else NO_TRACING
        return GatewayClient(
            signer,
            channel,
            pipelined,
            tracer,
            loaded.creator_batches,
            loaded.private_creator_batches,
            client_references=loaded.client_references,
        )

    async def close(self) -> None:
        """Stop the Transact stream (its waiting callers get UNAVAILABLE) and close the
        connection (calls still open on it end with CANCELLED)."""
        if self.pipeline is not None:
            await self.pipeline.close()
        await self.channel.close(None)
        if self.tracer.enabled:
            await asyncio.to_thread(self.tracer.shutdown)  # export what is buffered (bounded)

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def proposal(
        self, channel_id: str, contract: str, function: str, args: Sequence[str | bytes]
    ) -> tuple[proposal_pb2.SignedProposal, str]:
        """A signed proposal and its tx_id."""
        proposal_bytes, tx_id = self.proposal_bytes(channel_id, contract, function, args)
        return self.signing.proposal(proposal_bytes), tx_id

    def proposal_bytes(
        self,
        channel_id: str,
        contract: str,
        function: str,
        args: Sequence[str | bytes],
        creator: bytes | None = None,
    ) -> tuple[bytes, str]:
        """An unsigned proposal (serialised) and its tx_id, with a fresh nonce; its header
        names `creator` (default: this client's identity in full; a test may name another
        form of it, e.g. its reference), and this client's key signs whatever it names."""
        creator = self.signer.identity_bytes if creator is None else creator
        header = transaction_header(
            common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION, channel_id, creator, token_bytes(24)
        )
        invocation = proposal_pb2.ContractInvocation(
            contract=contract,
            function=function,
            args=[a.encode() if isinstance(a, str) else a for a in args],
        )
        proposal_bytes = proposal_pb2.Proposal(
            header=header.SerializeToString(), payload=invocation.SerializeToString()
        ).SerializeToString()
        return proposal_bytes, header.tx_id

    def envelope(self, prepared_payload: bytes) -> common_pb2.Envelope:
        """Sign the gateway's prepared payload into an envelope."""
        return self.signing.envelope(prepared_payload)

    def signed_query(self, message: object) -> tuple[bytes, bytes]:
        """(bytes, signature) of a query message after setting requester and timestamp."""
        message.requester = self.signer.identity_bytes  # type: ignore[attr-defined]
        message.timestamp.FromDatetime(utc_now())  # type: ignore[attr-defined]
        data: bytes = message.SerializeToString()  # type: ignore[attr-defined]
        return data, self.signer.sign(data)

    async def evaluate(
        self, channel_id: str, contract: str, function: str, *args: str | bytes
    ) -> proposal_pb2.ContractResponse:
        """Read-only invocation on the gateway's peer."""
        signed, _ = self.proposal(channel_id, contract, function, args)
        request = G.EvaluateRequest(
            signed_proposal=signed, min_block_number=self.seen_block(channel_id)
        )
        reply = await self.stub.Evaluate(request, timeout=30)
        return reply.result

    async def endorse(self, signed: proposal_pb2.SignedProposal) -> G.EndorseResponse:
        """Gather endorsements, retrying a bounded number of times on ENDORSEMENT_MISMATCH.

        A mismatch means the endorsers simulated on different heights (one had not committed the
        latest block yet); the same signed proposal usually agrees a moment later. Every
        endorser's state includes the highest block this client saw committed on the channel.
        """
        return await self._endorse(signed, pipelined=False)

    async def _endorse(
        self, signed: proposal_pb2.SignedProposal, pipelined: bool, unsigned: bool = False
    ) -> G.EndorseResponse:
        proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
        header = common_pb2.Header.FromString(proposal.header)
        request = G.EndorseRequest(
            signed_proposal=signed, min_block_number=self.seen_block(header.channel_id)
        )
        for attempt in range(ENDORSE_ATTEMPTS):
            try:
                if pipelined and self.pipeline is not None:
                    return await self.pipeline.endorse(request, 30, unsigned)
                with self.tracer.transaction_span("Endorse", header.tx_id) as metadata:
                    return await self.stub.Endorse(request, timeout=30, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                if attempt + 1 == ENDORSE_ATTEMPTS or reason_of(exc) != "ENDORSEMENT_MISMATCH":
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        raise RuntimeError("unreachable: the loop returns or raises")

    async def submit(self, envelope: common_pb2.Envelope) -> str:
        """Submit a signed envelope; returns its tx_id once the orderer accepted it."""
        tx_id = _tx_id_of(envelope) if self.tracer.enabled else ""
        with self.tracer.transaction_span("Submit", tx_id) as metadata:
            reply = await self.stub.Submit(
                G.SubmitRequest(envelope=envelope), timeout=30, metadata=metadata
            )
        return reply.tx_id

    async def commit_status(self, channel_id: str, tx_id: str) -> G.CommitStatusResponse:
        """Wait for the transaction's validation code on the gateway's peer."""
        query, signature = self.signed_query(
            G.CommitStatusQuery(channel_id=channel_id, tx_id=tx_id)
        )
        with self.tracer.transaction_span("CommitStatus", tx_id) as metadata:
            status: G.CommitStatusResponse = await self.stub.CommitStatus(
                G.CommitStatusRequest(query=query, signature=signature),
                timeout=60,
                metadata=metadata,
            )
        self.observe_block(channel_id, status.block_number)
        return status

    async def submit_and_wait(
        self, channel_id: str, tx_id: str, envelope: common_pb2.Envelope, unsigned: bool = False
    ) -> G.CommitStatusResponse:
        """Submit a signed envelope and wait for its commit status: over the Transact stream
        when pipelined (concurrent callers share its messages, and the commit status is the
        stream's one answer to the item, with no signed CommitStatus query to make and check),
        else by
        the unary Submit and CommitStatus. A gateway without Transact (an older release)
        answers UNIMPLEMENTED before anything was submitted: this client then uses the unary
        calls from then on. `unsigned`: the envelope is signed with the others of its Transact
        request (`client/creator_signing.py`), or alone if it goes by the unary calls."""
        pipeline = self.pipeline
        if pipeline is not None:
            try:
                request = G.SubmitRequest(envelope=envelope)
                # answered once, at commit (`Pipeline.submit_committed`): 30 s to be accepted
                # and 60 s to commit, as the two answers had
                status = await pipeline.submit_committed(request, 90, unsigned)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                if self.pipeline is pipeline:
                    self.pipeline = None
                    await pipeline.close()
            else:
                self.observe_block(channel_id, status.block_number)
                return status
        if unsigned:
            envelope = self.envelope(envelope.payload)
        await self.submit(envelope)
        return await self.commit_status(channel_id, tx_id)

    async def submit_transaction(
        self, channel_id: str, contract: str, function: str, *args: str | bytes
    ) -> Submitted:
        """Endorse, sign, submit and wait for the commit (pipelined: see the module doc). On
        a channel whose config lets clients sign per batch, the proposal and the envelope are
        signed with the others of their Transact request (`client/creator_signing.py`); a
        channel that refuses the proof (its flag turned off since) gets them signed alone."""
        refs = self.references
        creator = refs.creator(channel_id)
        try:
            done: Submitted | None = await self._submit_as(
                channel_id, contract, function, args, creator
            )
        except grpc.aio.AioRpcError as exc:
            if not refs.refused_reason(channel_id, creator, reason_of(exc)):
                raise
            done = None  # refused at endorsement or admission: nothing was changed
        if done is None or refs.refused_code(channel_id, creator, done.status.result):
            creator = refs.full  # the refused transaction changed nothing: again, in full
            done = await self._submit_as(channel_id, contract, function, args, creator)
        refs.committed(channel_id, creator, done.status.result)
        return done

    def creator(self, channel_id: str) -> bytes:
        """What `submit_transaction` names as its creator on `channel_id` now: the reference
        once a transaction sent in full committed there (module docstring), else in full."""
        return self.references.creator(channel_id)

    async def _submit_as(
        self,
        channel_id: str,
        contract: str,
        function: str,
        args: Sequence[str | bytes],
        creator: bytes,
    ) -> Submitted:
        proposal_bytes, tx_id = self.proposal_bytes(channel_id, contract, function, args, creator)
        endorsed = await self.endorse_batched(channel_id, proposal_bytes)
        status = await self.order_batched(channel_id, tx_id, endorsed.prepared_payload)
        return Submitted(tx_id, endorsed.result, status)

    async def endorse_batched(self, channel_id: str, proposal_bytes: bytes) -> G.EndorseResponse:
        """Endorse `proposal_bytes`: over the Transact stream signed with the request's others
        where the channel takes batch proofs (`retried_alone`), else signed alone."""
        if self.pipeline is None:
            return await self.endorse(self.signing.proposal(proposal_bytes))
        signed = self.signing.proposal
        return await self.retried_alone(
            channel_id,
            lambda later: self._endorse(
                _unsigned_proposal(proposal_bytes) if later else signed(proposal_bytes),
                pipelined=True,
                unsigned=later,
            ),
        )

    async def order_batched(
        self, channel_id: str, tx_id: str, payload: bytes
    ) -> G.CommitStatusResponse:
        """Submit the endorsed `payload` and wait for its commit status (`submit_and_wait`),
        its envelope signed as `endorse_batched` signs the proposal."""
        return await self.retried_alone(
            channel_id,
            lambda later: self.submit_and_wait(
                channel_id,
                tx_id,
                common_pb2.Envelope(payload=payload) if later else self.envelope(payload),
                unsigned=later,
            ),
        )

    async def retried_alone(
        self, channel_id: str, step: Callable[[bool], Awaitable[T]], private: bool = False
    ) -> T:
        """`step(later)`: `later` when the channel takes batch proofs of the kind (`private`: a
        private transaction's envelope; signed with the request's others); once more signed
        alone if the channel refused the proof (nothing was endorsed or ordered for it: refused
        at admission)."""
        if not self.signing.batches_on(channel_id, private):
            return await step(False)
        try:
            return await step(True)
        except grpc.aio.AioRpcError as exc:
            if reason_of(exc) != "CREATOR_BATCH_REFUSED":
                raise
        self.signing.signs_alone(channel_id, private)
        return await step(False)

    async def events(
        self,
        channel_id: str,
        start_block: int = 0,
        filters: Sequence[G.EventFilter] = (),
        private_transactions: bool = False,
    ) -> AsyncGenerator[G.EventsResponse, None]:
        """Follow committed blocks from `start_block` (the stream is cancelled when the caller
        stops iterating or closes the generator); `filters` leave out, on the node, the
        transactions without a wanted event (`rpc/events.py`). A negative `start_block` is a
        ValueError naming it (the wire's field is unsigned)."""
        if start_block < 0:
            raise ValueError(f"start_block {start_block} is negative")
        query, signature = self.signed_query(
            G.EventsQuery(
                channel_id=channel_id,
                start_block=start_block,
                filters=filters,
                private_transactions=private_transactions,
            )
        )
        call = self.stub.Events(G.EventsRequest(query=query, signature=signature))
        try:
            async for response in call:
                self.observe_block(channel_id, response.block_number)
                yield response
        finally:
            call.cancel()


def transaction_header(
    kind: common_pb2.HeaderType.ValueType, channel_id: str, creator: bytes, nonce: bytes
) -> common_pb2.Header:
    """The header of a client's transaction of `kind` (a proposal's, a private transaction's):
    its tx_id is fixed by the nonce and the creator (`compute_tx_id`), its timestamp is now."""
    header = common_pb2.Header(
        type=kind,
        channel_id=channel_id,
        tx_id=compute_tx_id(nonce, creator),
        creator=creator,
        nonce=nonce,
    )
    header.timestamp.FromDatetime(utc_now())
    return header


def _unsigned_proposal(proposal_bytes: bytes) -> proposal_pb2.SignedProposal:
    """A proposal whose signature the pipeline adds as it packs the request."""
    return proposal_pb2.SignedProposal(proposal_bytes=proposal_bytes)


def _tx_id_of(envelope: common_pb2.Envelope) -> str:
    """The tx id in an envelope's header ("" when it does not parse: the gateway will say why)."""
    try:
        payload = common_pb2.Payload.FromString(envelope.payload)
        return common_pb2.Header.FromString(payload.header).tx_id
    except DecodeError:
        return ""
