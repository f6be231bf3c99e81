"""SDK for the notarised-UTXO flow: a party's files, a notary client and a vault client.

A client (or a node acting for itself) loads its identity, TLS material, the address book and
the network map from a network directory made by `dltmw init`, connects to a node by id over
mTLS, and talks to its NotaryService (`NotaryClient`). Every request is signed by the caller's
own key; the SDK never signs on anyone's behalf.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from dltmw.aio.clock import utc_now
from dltmw.aio.rpc_errors import error_info
from dltmw.client.files import ClientFiles
from dltmw.core import request_batch
from dltmw.core.identity import SigningIdentity
from dltmw.core.utxo.build import notarisation_payload, sign_request
from dltmw.core.utxo.model import WireTx
from dltmw.net.addressbook import AddressBook
from dltmw.net.netmap import NetworkMap
from dltmw.rpc.tls import TlsMaterial, link_tls, secure_channel
from dltmw.v1 import (
    notarisation_pb2,
    notary_service_pb2,
    notary_service_pb2_grpc,
    utxo_pb2,
    vault_service_pb2,
    vault_service_pb2_grpc,
)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
RPC_TIMEOUT_S = 30.0
FLOW_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class PartyFiles:
    """What a client needs to act in the UTXO flow."""

    client_id: str
    signer: SigningIdentity
    tls: TlsMaterial
    addresses: AddressBook
    netmap: NetworkMap

    @staticmethod
    def load(network_dir: Path, client_id: str) -> PartyFiles:
        """Load `clients/<client_id>/client.toml` of a network directory."""
        loaded = ClientFiles.load(network_dir, client_id)
        return PartyFiles(
            client_id=client_id,
            signer=loaded.signer,
            tls=loaded.tls,
            addresses=loaded.addresses,
            netmap=NetworkMap.load(loaded.files["network_map"]),
        )

    async def channel_to(self, node_id: str, timeout_s: float = 10.0) -> grpc.aio.Channel:
        """An mTLS channel to a node (waits up to timeout_s for its address)."""
        address = await self.addresses.resolve(node_id, timeout_s)
        if address is None:
            raise ConnectionError(f"node {node_id} has not published an address")
        name, tls = link_tls(self.tls, self.addresses, node_id)
        return secure_channel(address, name, tls, MAX_MESSAGE_BYTES)


class NotaryClient:
    """Calls one notary's NotaryService."""

    def __init__(self, channel: grpc.aio.Channel, notary_id: str) -> None:
        self.channel = channel
        self.notary_id = notary_id
        self.stub = notary_service_pb2_grpc.NotaryServiceStub(channel)

    @staticmethod
    async def connect(party: PartyFiles, notary_id: str) -> NotaryClient:
        """Connect `party` to notary `notary_id`."""
        return NotaryClient(await party.channel_to(notary_id), notary_id)

    async def close(self) -> None:
        """Close the connection."""
        await self.channel.close(None)

    async def __aenter__(self) -> NotaryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def notarise(
        self, request: notarisation_pb2.NotarisationRequest, ordered_elsewhere: bool = False
    ) -> notarisation_pb2.NotarisationResponse:
        """Notarise one signed request; a refusal raises grpc.aio.AioRpcError with its status.
        `ordered_elsewhere` (cluster members): another member was asked to order it."""
        asked = notary_service_pb2.NotariseRequest(
            request=request, ordered_elsewhere=ordered_elsewhere
        )
        reply = await self.stub.Notarise(asked, timeout=RPC_TIMEOUT_S)
        return reply.response

    async def notarise_wire(
        self,
        wire: WireTx,
        signer: SigningIdentity,
        transaction: bytes = b"",
        dependencies: Sequence[bytes] = (),
    ) -> notarisation_pb2.NotarisationResponse:
        """Build, sign and send the request for `wire` (non-validating unless `transaction`)."""
        payload = notarisation_payload(wire, signer.identity_bytes, transaction, dependencies)
        return await self.notarise(sign_request(payload, signer))

    async def notarise_batches(
        self,
        batches: AsyncIterator[
            Sequence[notarisation_pb2.NotarisationRequest]
            | notary_service_pb2.NotariseStreamRequest
        ],
    ) -> AsyncIterator[list[notarisation_pb2.NotarisationResult]]:
        """Stream batches (of signed requests, or ready stream messages such as a batch-signed
        one from `signed_batch`); yields each batch's results in order."""

        async def requests() -> AsyncIterator[notary_service_pb2.NotariseStreamRequest]:
            async for batch in batches:
                if isinstance(batch, notary_service_pb2.NotariseStreamRequest):
                    yield batch
                else:
                    yield notary_service_pb2.NotariseStreamRequest(requests=list(batch))

        call = self.stub.NotariseStream(requests())
        try:
            async for reply in call:
                yield list(reply.results)
        finally:
            call.cancel()  # the caller stopped early: end the stream and its request reader


class BatchStreams:
    """Long-lived NotariseStream calls to one notary, each carrying one batch at a time: a
    caller that sends batch after batch (a coalescer with `max_concurrent` streams) pays the
    call's set-up and tear-down (~10 % of a benchmark client's CPU when every batch opened its
    own call, and a new handler on the notary) once per stream, not per batch. The notary
    answers a stream's batches in order, so one batch per stream at a time keeps each answer
    paired with its batch. A stream that fails or stays silent for RPC_TIMEOUT_S is dropped
    (the error reaches that batch's caller) and reopened for the next batch."""

    def __init__(self, client: NotaryClient, timeout_s: float = RPC_TIMEOUT_S) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._idle: list[_Stream] = []
        self._all: set[_Stream] = set()
        self.opened = 0  # streams opened so far (each reused until it fails)

    async def exchange(
        self, message: notary_service_pb2.NotariseStreamRequest
    ) -> list[notarisation_pb2.NotarisationResult]:
        """Send one batch on an idle stream (opened if none is) and return its results."""
        if self._idle:
            stream = self._idle.pop()
        else:
            stream = _Stream(self._client)
            self.opened += 1
        self._all.add(stream)
        try:
            async with asyncio.timeout(self._timeout_s):
                results = await stream.exchange(message)
        except BaseException:
            stream.close()
            self._all.discard(stream)
            raise
        self._idle.append(stream)
        return results

    def close(self) -> None:
        """End every stream."""
        for stream in self._all:
            stream.close()
        self._all.clear()
        self._idle.clear()


class _Stream:
    """One NotariseStream call fed from a queue (see `BatchStreams`)."""

    def __init__(self, client: NotaryClient) -> None:
        self._queue: asyncio.Queue[notary_service_pb2.NotariseStreamRequest | None]
        self._queue = asyncio.Queue()
        queue = self._queue

        async def requests() -> AsyncIterator[notary_service_pb2.NotariseStreamRequest]:
            while (message := await queue.get()) is not None:
                yield message

        self._call = client.stub.NotariseStream(requests())

    async def exchange(
        self, message: notary_service_pb2.NotariseStreamRequest
    ) -> list[notarisation_pb2.NotarisationResult]:
        self._queue.put_nowait(message)
        reply = await self._call.read()
        if not isinstance(reply, notary_service_pb2.NotariseStreamResponse):  # grpc.aio.EOF
            raise ConnectionError("the notary ended the stream")
        return list(reply.results)

    def close(self) -> None:
        self._queue.put_nowait(None)
        self._call.cancel()


def signed_batch(
    payloads: Sequence[notarisation_pb2.NotarisationPayload | bytes], signer: SigningIdentity
) -> notary_service_pb2.NotariseStreamRequest:
    """One NotariseStream message for `payloads` (each naming `signer` as requester) signed
    once for the whole batch (docs/utxo.md "Requester batch signatures"): the notary verifies
    one signature instead of one per request."""
    raw = [p if isinstance(p, bytes) else p.SerializeToString() for p in payloads]
    return request_batch.sign_batch(raw, signer)


class VaultClient:
    """A client of its own organisation's vault node: queries and flows."""

    def __init__(self, party: PartyFiles, channel: grpc.aio.Channel, node_id: str) -> None:
        self.party = party
        self.channel = channel
        self.node_id = node_id
        self.stub = vault_service_pb2_grpc.VaultServiceStub(channel)

    @staticmethod
    async def connect(party: PartyFiles, node_id: str) -> VaultClient:
        """Connect `party` to vault node `node_id` (of the party's own organisation)."""
        return VaultClient(party, await party.channel_to(node_id), node_id)

    async def close(self) -> None:
        """Close the connection."""
        await self.channel.close(None)

    async def __aenter__(self) -> VaultClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def identity_of(self, node_id: str) -> bytes:
        """Identity of a node of the network (to name owners and counterparties)."""
        return self.party.netmap.identity_of(node_id)

    async def query(
        self,
        contract: str = "",
        owner: bytes = b"",
        participant: bytes = b"",
        include_consumed: bool = False,
    ) -> list[vault_service_pb2.VaultState]:
        """States of the node's vault matching every given filter."""
        query = vault_service_pb2.VaultQuery(
            requester=self.party.signer.identity_bytes,
            contract=contract,
            owner=owner,
            participant=participant,
            include_consumed=include_consumed,
        )
        query.timestamp.FromDatetime(utc_now())
        raw = query.SerializeToString()
        reply = await self.stub.QueryStates(
            vault_service_pb2.QueryStatesRequest(query=raw, signature=self.party.signer.sign(raw)),
            timeout=RPC_TIMEOUT_S,
        )
        return list(reply.states)

    async def run(
        self, command: vault_service_pb2.FlowCommand
    ) -> vault_service_pb2.RunFlowResponse:
        """Sign and run a flow command (requester and timestamp are filled in)."""
        command.requester = self.party.signer.identity_bytes
        command.timestamp.FromDatetime(utc_now())
        raw = command.SerializeToString()
        return await self.stub.RunFlow(
            vault_service_pb2.RunFlowRequest(command=raw, signature=self.party.signer.sign(raw)),
            timeout=FLOW_TIMEOUT_S,
        )

    async def issue(
        self, contract: str, owner: bytes, asset: str, amount: int, **extra: Any
    ) -> vault_service_pb2.RunFlowResponse:
        """Issue cash ("cash", currency) or securities ("security", ISIN) to `owner`."""
        flow = vault_service_pb2.IssueFlow(
            contract=contract, owner=owner, asset=asset, amount=amount
        )
        return await self.run(vault_service_pb2.FlowCommand(issue=flow, **extra))

    async def move(
        self, contract: str, new_owner: bytes, asset: str, amount: int, **extra: Any
    ) -> vault_service_pb2.RunFlowResponse:
        """Move the node's own states to `new_owner`."""
        flow = vault_service_pb2.MoveFlow(
            contract=contract, new_owner=new_owner, asset=asset, amount=amount
        )
        return await self.run(vault_service_pb2.FlowCommand(move=flow, **extra))

    async def dvp(
        self, terms: utxo_pb2.DvpTerms, **extra: Any
    ) -> vault_service_pb2.RunFlowResponse:
        """Delivery versus payment; the node is the seller."""
        flow = vault_service_pb2.DvpFlow(terms=terms)
        return await self.run(vault_service_pb2.FlowCommand(dvp=flow, **extra))

    async def contract_command(
        self,
        contract: str,
        contract_hash: str,
        command: str,
        outputs: Sequence[tuple[bytes, Sequence[bytes]]] = (),
        inputs: Sequence[tuple[str, int]] = (),
        signers: Sequence[bytes] = (),
        command_data: bytes = b"",
        **extra: Any,
    ) -> vault_service_pb2.RunFlowResponse:
        """One command of any UTXO contract, e.g. one installed as a package (ContractFlow):
        consume the node's own `inputs` ((tx_id, index)), create `outputs` ((data,
        participant identities)); `signers` are the other nodes that must sign."""
        flow = vault_service_pb2.ContractFlow(
            contract=contract,
            contract_hash=contract_hash,
            command=command,
            command_data=command_data,
            inputs=[notarisation_pb2.StateRef(tx_id=t, index=i) for t, i in inputs],
            outputs=[
                vault_service_pb2.ContractState(data=d, participants=list(p)) for d, p in outputs
            ],
            signers=list(signers),
        )
        return await self.run(vault_service_pb2.FlowCommand(contract=flow, **extra))


def holdings_of(states: Sequence[vault_service_pb2.VaultState]) -> dict[tuple[str, str], int]:
    """Sum of unconsumed amounts per (contract, asset) among vault states (for display/tests)."""
    out: dict[tuple[str, str], int] = {}
    for st in states:
        if st.consumed_by:
            continue
        output = utxo_pb2.UtxoOutput.FromString(st.output)
        if output.contract == "cash":
            cash = utxo_pb2.CashState.FromString(output.data)
            key, n = ("cash", cash.currency), cash.amount
        elif output.contract == "security":
            sec = utxo_pb2.SecurityState.FromString(output.data)
            key, n = ("security", sec.isin), sec.quantity
        else:
            continue
        out[key] = out.get(key, 0) + n
    return out


def error_metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """ErrorInfo metadata of a failed call, e.g. `consuming_tx_id_hash` of a notary conflict."""
    info = error_info(error)
    return dict(info.metadata) if info is not None else {}
