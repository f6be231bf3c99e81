"""Input bounds before work (finding F4): a member client cannot make a node allocate or compute
in proportion to what it sends beyond the node's limits, and a node serves only the services of
the roles it hosts.

F4 on the old main: one 586 KB Broadcast of 200,000 one-byte envelopes cost the orderer +300 MB
RSS (never returned) and ~6 s of CPU, and was refused only because its reply exceeded 4 MiB;
peers served OrdererService too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import gateway_service_pb2_grpc, orderer_service_pb2_grpc
from dltmw.v1 import orderer_service_pb2 as O
from integration.wire import (
    TWO_ORG_SERVICES,
    channel_to,
    client_tls,
    cpu_s,
    edit_node_toml,
    error_info,
    listed_services,
    rss_mb,
    started_network,
)

pytestmark = pytest.mark.integration
S = grpc.StatusCode
TWO_ORG = (Path(__file__).parent / "conftest.py").read_text().split('TWO_ORG = """')[1]
TWO_ORG = TWO_ORG.split('"""')[0].replace("BATCH_MS", "100")
ITEMS_MAX = 1000  # Limits.items_per_request_max default
ROUNDS = 3


async def _broadcast(channel: grpc.aio.Channel, request: O.BroadcastRequest) -> O.BroadcastResponse:
    call = orderer_service_pb2_grpc.OrdererServiceStub(channel).Broadcast()
    try:
        await call.write(request)
        response = await call.read()
        await call.done_writing()
        assert isinstance(response, O.BroadcastResponse), response
        return response
    finally:
        call.cancel()


async def test_huge_broadcast_is_refused_before_any_work(network) -> None:
    net, sup = network()
    tls = client_tls(net, "user1.org1")
    orderer = channel_to(net, "orderer0", tls)
    try:
        async with await GatewayClient.connect(net, "user1.org1") as c:
            await c.submit_transaction("trades", "kv", "put", "warm", "up")
        # At the bound: every entry is answered (here: refused one by one as MALFORMED).
        at_bound = await _broadcast(orderer, O.BroadcastRequest(envelopes=[b"\xff"] * ITEMS_MAX))
        assert len(at_bound.results) == ITEMS_MAX
        assert {r.accepted for r in at_bound.results} == {False}
        baseline_mb, cpu_before = rss_mb(sup, "orderer0"), cpu_s(sup, "orderer0")
        # 200,000 one-byte envelopes (~600 KB), four at once, three times. (Refusals must not
        # keep the decoded request alive: before rpc/status.detached each refusal's traceback
        # cycle held it until a full garbage collection, +37 MB per round here.)
        huge = O.BroadcastRequest(envelopes=[b"x"] * 200_000)
        assert huge.ByteSize() < 1024 * 1024
        for _ in range(ROUNDS):
            outcomes = await asyncio.gather(
                *(_broadcast(orderer, huge) for _ in range(4)), return_exceptions=True
            )
            for outcome in outcomes:
                assert isinstance(outcome, grpc.aio.AioRpcError), outcome
                assert outcome.code() == S.RESOURCE_EXHAUSTED, outcome.details()
                reason, metadata = error_info(outcome)
                assert reason == "LIMIT_EXCEEDED", outcome.details()
                assert metadata == {"limit": "items_per_request_max", "max": str(ITEMS_MAX)}
        grown_mb = rss_mb(sup, "orderer0") - baseline_mb
        spent_s = cpu_s(sup, "orderer0") - cpu_before
        refused = 4 * ROUNDS
        assert grown_mb < 50, f"orderer RSS grew {grown_mb:.0f} MB for {refused} refused requests"
        assert spent_s < 4.0, f"orderer spent {spent_s:.1f} s of CPU refusing {refused} requests"
        # One over the bound is refused too; the node still orders.
        with pytest.raises(grpc.aio.AioRpcError) as over:
            await _broadcast(orderer, O.BroadcastRequest(envelopes=[b"x"] * (ITEMS_MAX + 1)))
        assert error_info(over.value)[0] == "LIMIT_EXCEEDED"
        async with await GatewayClient.connect(net, "user1.org1") as c:
            done = await c.submit_transaction("trades", "kv", "put", "after", "burst")
            assert done.status.result == 1
    finally:
        await orderer.close()


async def test_each_node_serves_only_its_roles_services(network) -> None:
    net, _ = network()
    tls = client_tls(net, "user1.org1")
    for node_id, services in TWO_ORG_SERVICES.items():
        channel = channel_to(net, node_id, tls)
        try:
            assert await listed_services(channel) == services, node_id
        finally:
            await channel.close()
    # A peer refuses every orderer RPC: it orders nothing.
    peer = channel_to(net, "peer0.org1", tls)
    try:
        # (Deliver: a client-streaming write that races the server's answer fails on the client
        # side with INTERNAL, whatever the server said.)
        call = orderer_service_pb2_grpc.OrdererServiceStub(peer).Deliver(O.DeliverRequest())
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
        assert refused.value.code() == S.UNIMPLEMENTED
    finally:
        await peer.close()


async def test_in_flight_calls_are_bounded_per_connection_and_per_identity(tmp_path) -> None:
    def configure(net: Path) -> None:
        limits = {"inflight_rpcs_per_connection_max": 2, "inflight_rpcs_per_identity_max": 3}
        edit_node_toml(net, "peer0.org1", {"limits": limits})

    with started_network(tmp_path, TWO_ORG, configure) as (net, _):
        # (unary calls only: the SDK's pipelined client would hold a Transact stream open)
        c = await GatewayClient.connect(net, "user1.org1", pipelined=False)
        other = await GatewayClient.connect(net, "user1.org2", gateway="peer0.org1")
        tls = client_tls(net, "user1.org1")
        first, second = (channel_to(net, "peer0.org1", tls, own_connection=True) for _ in "ab")
        streams: list[grpc.aio.UnaryStreamCall] = []
        try:
            await c.submit_transaction("trades", "kv", "put", "k", "v")

            def events(channel: grpc.aio.Channel) -> grpc.aio.UnaryStreamCall:
                query, signature = c.signed_query(G.EventsQuery(channel_id="trades"))
                stub = gateway(channel)
                call = stub.Events(G.EventsRequest(query=query, signature=signature))
                streams.append(call)
                return call

            async def refused(channel: grpc.aio.Channel) -> dict[str, str]:
                signed, _ = c.proposal("trades", "kv", "get", ["k"])
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await gateway(channel).Evaluate(G.EvaluateRequest(signed_proposal=signed))
                assert err.value.code() == S.RESOURCE_EXHAUSTED, err.value.details()
                reason, metadata = error_info(err.value)
                assert reason == "LIMIT_EXCEEDED"
                return metadata

            for call in (events(first), events(first)):
                await call.read()  # open: the first block's events arrive
            assert (await refused(first))["limit"] == "inflight_rpcs_per_connection_max"
            await events(second).read()  # a second connection of the same client: 3 in flight
            identity_limit = {"limit": "inflight_rpcs_per_identity_max", "max": "3"}
            assert (await refused(second)) == identity_limit
            # Another identity on the same node is not affected.
            assert (await other.evaluate("trades", "kv", "get", "k")).payload == b"v"
            # Ending a stream returns its slot.
            streams.pop().cancel()
            signed, _ = c.proposal("trades", "kv", "get", ["k"])
            evaluate = G.EvaluateRequest(signed_proposal=signed)
            for _ in range(200):
                try:
                    reply = await gateway(second).Evaluate(evaluate)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert error_info(exc)[0] == "LIMIT_EXCEEDED"
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the cancelled stream's slot was never returned")
            assert reply.result.payload == b"v"
        finally:
            for call in streams:
                call.cancel()
            for channel in (first, second):
                await channel.close()
            await c.close()
            await other.close()


def gateway(channel: grpc.aio.Channel) -> gateway_service_pb2_grpc.GatewayServiceStub:
    return gateway_service_pb2_grpc.GatewayServiceStub(channel)
