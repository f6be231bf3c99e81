"""Errors at the boundary (finding F5): bad values from the wire are the caller's fault and are
answered as such — INVALID_ARGUMENT with an ErrorInfo reason, never UNKNOWN with Python exception
text — and undecodable requests cost one log line per caller per interval, never a traceback.

F5 on the old main: out-of-range timestamps came back as UNKNOWN with the text of protobuf's
ValueError on 25 methods (a signed query with nanos = -1 too, and an OverflowError for a UTXO time
window near 2^62 s); every undecodable request wrote a ~1 KB traceback to the node's log.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from dltmw.client.files import ClientFiles
from dltmw.rpc.status import reason_of
from dltmw.v1 import errors_pb2
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import notary_service_pb2 as N
from dltmw.v1 import orderer_service_pb2 as O
from integration.fuzz_requests import (
    BAD_TIMESTAMPS,
    GENERATORS,
    Party,
    Tweak,
    World,
    parties,
    timestamps_of,
)
from integration.test_fuzz_rpc import LEDGER, _ledger_parties, _ledger_world
from integration.wire import channel_to, client_tls, node_log

pytestmark = pytest.mark.integration
S = grpc.StatusCode
# Streams that answer each item (or request) with its own reason instead of ending the call.
PER_ITEM = {
    "/dltmw.v1.OrdererService/Broadcast",
    "/dltmw.v1.EndorserService/ProcessProposals",
    "/dltmw.v1.GatewayService/Transact",
    "/dltmw.v1.NotaryService/NotariseStream",
}
TARGET = {
    "/dltmw.v1.OrdererService/": "orderer0",
    "/dltmw.v1.NotaryService/": "notary0",
}


def stamped_methods(world: World, party: Party) -> list[str]:
    """Methods whose signed request body carries at least one Timestamp."""
    found: list[str] = []
    for path, build in sorted(GENERATORS.items()):
        seen: list[bool] = []

        def probe(body: Message, seen: list[bool] = seen) -> None:
            seen.append(bool(timestamps_of(body)))

        try:
            build(party, world, probe)
        except (AssertionError, ValueError):
            continue  # needs a world of the notary cluster (Exchange): no timestamps there
        if any(seen) and path.startswith("/dltmw.v1."):
            found.append(path)
    return found


def out_of_range(seconds: int, nanos: int) -> Tweak:
    def tweak(body: Message) -> None:
        for ts in timestamps_of(body):
            ts.seconds, ts.nanos = seconds, nanos

    return tweak


def item_reasons(path: str, response: Message) -> list[int]:
    """The reasons of a per-item stream response's items."""
    if isinstance(response, O.BroadcastResponse):
        return [r.reason for r in response.results]
    if isinstance(response, G.TransactResponse):
        return [o.error.reason for o in [*response.endorsed, *response.submitted]]
    if isinstance(response, N.NotariseStreamResponse):
        return [r.reason for r in response.results]
    return [o.error.reason for o in response.outcomes]  # ProcessProposalsResponse


async def test_out_of_range_timestamps_are_invalid_argument_everywhere(network) -> None:
    net, _ = network(LEDGER, batch_ms=50)
    world = await _ledger_world(net)
    party_of = _ledger_parties(net)
    stamped = stamped_methods(world, party_of("/dltmw.v1.GatewayService/Evaluate", "peer0.org1")[0])
    assert len(stamped) >= 25, stamped
    pool = descriptor_pool.Default()
    channels: dict[tuple[str, bytes], grpc.aio.Channel] = {}
    try:
        for path in stamped:
            node = next((n for p, n in TARGET.items() if path.startswith(p)), "peer0.org1")
            member = party_of(path, node)[0]
            key = (node, member.tls.cert_pem)
            channel = channels.get(key) or channels.setdefault(
                key, channel_to(net, node, member.tls)
            )
            service, name = path[1:].split("/")
            method = pool.FindServiceByName(service).methods_by_name[name]
            for seconds, nanos in BAD_TIMESTAMPS:
                requests = GENERATORS[path](member, world, out_of_range(seconds, nanos))
                where = f"{path} with timestamp ({seconds}, {nanos})"
                if path in PER_ITEM:
                    call = channel.stream_stream(path, response_deserializer=None)(
                        iter([r.SerializeToString() for r in requests])
                    )
                    out_type = message_factory.GetMessageClass(method.output_type)
                    response = out_type.FromString(await call.read())
                    call.cancel()
                    reasons = item_reasons(path, response)
                    assert reasons, where
                    assert set(reasons) == {errors_pb2.ERROR_REASON_INVALID_FIELD}, where
                    continue
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    raw = requests[0].SerializeToString()
                    if method.client_streaming:
                        call = channel.stream_stream(path)(iter([raw]))
                        await call.read()
                    elif method.server_streaming:
                        await channel.unary_stream(path)(raw).read()
                    else:
                        await channel.unary_unary(path)(raw)
                assert refused.value.code() == S.INVALID_ARGUMENT, (where, refused.value.details())
                assert reason_of(refused.value) == "INVALID_FIELD", where
                assert "ValueError" not in (refused.value.details() or ""), where
    finally:
        for channel in channels.values():
            await channel.close()


async def test_undecodable_requests_are_malformed_and_logged_once_per_caller(network) -> None:
    net, _ = network()
    methods = ["/dltmw.v1.GatewayService/Evaluate", "/dltmw.v1.GatewayService/CommitStatus"]
    for client in ("user1.org1", "user1.org2"):
        channel = channel_to(net, "peer0.org1", client_tls(net, client))
        try:
            for i in range(40):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await channel.unary_unary(methods[i % 2])(b"\xff\xff\xff" + bytes([i]))
                assert refused.value.code() == S.INVALID_ARGUMENT
                assert reason_of(refused.value) == "MALFORMED"
                assert "DecodeError" not in (refused.value.details() or "")
        finally:
            await channel.close()
    log = node_log(net, "peer0.org1")
    assert "Traceback" not in log and "Exception deserializing" not in log
    lines = [line for line in log.splitlines() if "bad input from" in line]
    assert len(lines) == 2, lines  # one per caller (interval 60 s), not one per request


async def test_numeric_extremes_are_answered_not_crashed(network) -> None:
    net, _ = network()
    c = ClientFiles.load(net, "user1.org1")
    member = parties(net, "user1.org1", c.signer)[0]
    world = World(tx_id="0" * 64)
    channel = channel_to(net, "orderer0", member.tls)
    gateway = channel_to(net, "peer0.org1", member.tls)
    try:
        for start, stop in [(2**64 - 1, 2**64 - 1), (2**63, 0), (5, 2), (0, 2**64 - 1)]:

            def seek(body: Message, start: int = start, stop: int = stop) -> None:
                body.start_block, body.stop_block = start, stop  # type: ignore[attr-defined]

            (request,) = GENERATORS["/dltmw.v1.OrdererService/Deliver"](member, world, seek)
            call = channel.unary_stream("/dltmw.v1.OrdererService/Deliver")(
                request.SerializeToString(), timeout=5
            )
            try:
                async for _ in call:
                    break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() not in (S.UNKNOWN, S.INTERNAL), (start, stop, exc.details())

        def far(body: Message) -> None:
            body.start_block = 2**64 - 1  # type: ignore[attr-defined]

        (events,) = GENERATORS["/dltmw.v1.GatewayService/Events"](member, world, far)
        call = gateway.unary_stream("/dltmw.v1.GatewayService/Events")(
            events.SerializeToString(), timeout=2
        )
        with pytest.raises(grpc.aio.AioRpcError) as waited:
            async for _ in call:
                break
        assert waited.value.code() in (S.DEADLINE_EXCEEDED, S.INVALID_ARGUMENT)
    finally:
        await channel.close()
        await gateway.close()
