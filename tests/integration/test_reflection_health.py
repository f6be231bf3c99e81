"""Generic tools see exactly what a node serves: reflection on both protocols, health per service.

grpcurl-style clients ask `grpc.reflection.v1` (newer) or `grpc.reflection.v1alpha` (older) for
the services, then health for one service by name. A node registers only the services of its
roles (`runtime/node.py`), so both reflection protocols must list exactly those, and health must
answer SERVING for each of them by name and NOT_FOUND for a service the node does not serve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from integration.wire import TWO_ORG_SERVICES, channel_to, client_tls

pytestmark = pytest.mark.integration
V1_PATH = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA_PATH = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
EXPECTED = TWO_ORG_SERVICES


async def _ask(
    channel: grpc.aio.Channel, path: str, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    """One reflection request over `path`, read with the v1alpha classes (v1 has the same bytes,
    so a client of either protocol reads these answers alike)."""
    call = channel.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def one() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield request

    async for response in call(one(), timeout=10):
        assert isinstance(response, reflection_pb2.ServerReflectionResponse)
        return response
    raise AssertionError(f"{path} answered nothing")


async def test_reflection_lists_exactly_the_registered_services_on_v1_and_v1alpha(
    network,
) -> None:
    net, _ = network()
    tls = client_tls(net, "user1.org1")
    for node, expected in EXPECTED.items():
        channel = channel_to(net, node, tls)
        try:
            for path in (V1_PATH, V1ALPHA_PATH):
                listed = await _ask(
                    channel, path, reflection_pb2.ServerReflectionRequest(list_services="")
                )
                names = {s.name for s in listed.list_services_response.service}
                assert names == expected, (node, path)
            # v1 serves descriptors too: a client in another language can build requests.
            found = await _ask(
                channel,
                V1_PATH,
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="dltmw.v1.Header"),
            )
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in found.file_descriptor_response.file_descriptor_proto
            ]
            assert "dltmw/v1/common.proto" in {f.name for f in files}, node
            # Health by service name: every listed service, and NOT_FOUND for others.
            health = health_pb2_grpc.HealthStub(channel)
            for name in sorted(expected):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (node, name)
            for name in sorted(EXPECTED["peer0.org1"] - expected):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND, (node, name)
        finally:
            await channel.close()
