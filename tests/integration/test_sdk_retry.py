"""The SDK's retries come from gRPC's own retry policy (`sdk/client.py` RETRY_POLICY, passed
by `Client` on every channel it makes): a gateway that answers UNAVAILABLE once and then
serves is retried by gRPC inside ONE call of the client — the server sees two calls, the caller
gets the result, and no fail-over happens (the profile has that one gateway only).

The gateway here is a real gRPC server on 127.0.0.1 (GatewayService.Evaluate only, without
TLS: the test gives the client a channel maker that dials it in clear with the options the
client passes); the client, its identity and its signing are the SDK's, as a program uses them.
The same call on a channel without the client's options fails UNAVAILABLE: the retry is the
policy's doing, not the server's.

Red when broken: drop "UNAVAILABLE" from RETRY_POLICY's retryableStatusCodes, or misspell its
service name, or stop `Client` passing CHANNEL_OPTIONS — the client raises `Unavailable` and
the server counts one call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import grpc

import dltmw
from dltmw.pki.network import init_network
from dltmw.rpc.tls import TlsMaterial
from dltmw.sdk.network import DEFAULT_TOPOLOGY
from dltmw.v1 import gateway_service_pb2, gateway_service_pb2_grpc, proposal_pb2

G = gateway_service_pb2


class RefusesFirst(gateway_service_pb2_grpc.GatewayServiceServicer):
    """Evaluate: UNAVAILABLE on the first call, then "ok"."""

    def __init__(self) -> None:
        self.calls = 0

    async def Evaluate(
        self, request: G.EvaluateRequest, context: grpc.aio.ServicerContext
    ) -> G.EvaluateResponse:
        self.calls += 1
        if self.calls == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "starting up, try again")
        return G.EvaluateResponse(result=proposal_pb2.ContractResponse(status=200, payload=b"ok"))


def _clear_channel(
    address: str,
    server_name: str,
    tls: TlsMaterial,
    max_message_bytes: int,
    *,
    extra: Sequence[tuple[str, str | int]] = (),
) -> grpc.aio.Channel:
    """`Client`'s channel maker, without TLS (the test server has none), options as given."""
    return grpc.aio.insecure_channel(address, options=list(extra))


def test_a_transient_unavailable_is_retried_by_grpcs_policy(tmp_path: Path) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(DEFAULT_TOPOLOGY)
    init_network(topology, tmp_path / "net")  # the client's identity and TLS files
    raw = dltmw.Profile.from_network(tmp_path / "net", "user1.org1").model_dump(mode="json")

    async def scenario() -> None:
        server = grpc.aio.server()
        servicer = RefusesFirst()
        gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            raw["gateways"] = [{"name": "peer0.org1", "address": f"127.0.0.1:{port}"}]
            profile = dltmw.Profile.from_dict(raw)
            async with dltmw.Client(profile, deadline_s=20, channels=_clear_channel) as client:
                assert await client.evaluate("main", "kv", "get", "k") == b"ok"
            assert servicer.calls == 2  # refused once, retried once, inside one client call

            # Control: without the client's options, the same refusal reaches the caller.
            servicer.calls = 0
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
                try:
                    await stub.Evaluate(G.EvaluateRequest(), timeout=10)
                    raise AssertionError("the first call should have been refused")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert servicer.calls == 1
        finally:
            await server.stop(None)

    asyncio.run(scenario())
