"""A private transaction's Submit and CommitStatus travel on the gateway's Transact stream
(`GatewayClient.submit_and_wait`, used by `PrivacyClient.submit_invocation`), as the kv path's
do: concurrent private submissions share its messages and need no signed CommitStatus query.
A gateway of an older release without Transact answers UNIMPLEMENTED: the client then uses the
unary Submit and CommitStatus.

A real grpc.aio server on 127.0.0.1 plays the gateway (only what a gateway answers here is a
stand-in: accepted, then committed VALID); the client is the real GatewayClient with a real
signer, talking over real gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from local_grpc import client_signer, serve_local

from dltmw.client.gateway import GatewayClient
from dltmw.v1 import common_pb2
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import gateway_service_pb2_grpc as svc

VALID = 1


class OlderGateway(svc.GatewayServiceServicer):
    """Answers the unary Submit and CommitStatus; knows nothing of Transact."""

    def __init__(self) -> None:
        self.unary: list[str] = []

    async def Submit(self, request: G.SubmitRequest, context: object) -> G.SubmitResponse:
        self.unary.append("Submit")
        return G.SubmitResponse(tx_id="t")

    async def CommitStatus(
        self, request: G.CommitStatusRequest, context: object
    ) -> G.CommitStatusResponse:
        self.unary.append("CommitStatus")
        return G.CommitStatusResponse(result=VALID, block_number=7)  # type: ignore[arg-type]


class StreamGateway(OlderGateway):
    """Also answers Transact: each submission accepted, then committed VALID in block 9."""

    def __init__(self) -> None:
        super().__init__()
        self.streamed = 0

    async def Transact(
        self, request_iterator: AsyncIterator[G.TransactRequest], context: object
    ) -> AsyncIterator[G.TransactResponse]:
        async for request in request_iterator:
            self.streamed += len(request.submit)
            yield G.TransactResponse(
                submitted=[
                    G.SubmitOutcome(ref=s.ref, response=G.SubmitResponse(tx_id="t"))
                    for s in request.submit
                ]
            )
            status = G.CommitStatusResponse(result=VALID, block_number=9)  # type: ignore[arg-type]
            yield G.TransactResponse(
                committed=[G.CommitOutcome(ref=s.ref, status=status) for s in request.submit]
            )


async def _submit_four(gateway: OlderGateway) -> tuple[GatewayClient, list[int]]:
    server, address = await serve_local(
        lambda s: svc.add_GatewayServiceServicer_to_server(gateway, s)
    )
    client = GatewayClient(client_signer(), grpc.aio.insecure_channel(address), pipelined=True)
    try:
        envelope = common_pb2.Envelope(payload=b"p", signature=b"s")
        statuses = await asyncio.wait_for(
            asyncio.gather(*(client.submit_and_wait("ch", f"t{i}", envelope) for i in range(4))),
            20,
        )
    finally:
        await client.close()
        await server.stop(None)
    return client, [s.block_number for s in statuses]


async def test_private_submissions_share_the_transact_stream_and_make_no_unary_call() -> None:
    gateway = StreamGateway()
    client, blocks = await _submit_four(gateway)
    assert blocks == [9, 9, 9, 9]
    assert gateway.streamed == 4
    assert gateway.unary == []  # no Submit, no signed CommitStatus query
    assert client.seen_block("ch") == 9


async def test_a_gateway_without_transact_is_used_by_the_unary_calls() -> None:
    gateway = OlderGateway()
    client, blocks = await _submit_four(gateway)
    assert blocks == [7, 7, 7, 7]
    assert sorted(gateway.unary) == ["CommitStatus"] * 4 + ["Submit"] * 4
    assert client.pipeline is None  # the stream is not tried again
