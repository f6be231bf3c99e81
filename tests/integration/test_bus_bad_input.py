"""Bad input to the message bus: each refused with a specific gRPC status and ErrorInfo reason,
through the SDK's typed exceptions (`.code`, `.reason`) and through a raw gateway client that
bypasses the SDK — and nothing stored (the channel's height does not move).

Unknown topic: the bus contract's 404 → FAILED_PRECONDITION / NOT_FOUND. Oversized message:
the SDK refuses it before sending with the reason the node gives for the contract's 413 →
RESOURCE_EXHAUSTED / MESSAGE_TOO_LARGE (`core/contract.py` `refusal_error`). A negative
checkpoint or start block → INVALID_ARGUMENT / INVALID_FIELD. A checkpoint beyond the channel's
height → UNAVAILABLE / HEIGHT_NOT_REACHED once the client's deadline passed, never a silent wait
(docs/embedding.md "Bad input").

Red when broken: drop the 404 or 413 entry of `REASON_OF_STATUS` (the raw stub then gets
ABORTED / CONTRACT_FAILED); make `_too_large` an InvalidRequest without a reason; remove the
negative checks (a protobuf ValueError escapes); remove `_checkpoint_block_first` (the far
checkpoint waits until the test's own bound fails it).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

import dltmw
from dltmw.aio.rpc_errors import reason_of
from dltmw.client.gateway import GatewayClient
from dltmw.sdk.bus import Bus
from dltmw.sdk.network import TransportName
from dltmw.v1 import bus_pb2, gateway_service_pb2

G = gateway_service_pb2
TEST_BOUND_S = 60.0  # the test's own bound on every wait (a broken mechanism fails, not hangs)


@pytest.fixture(params=["grpc", "inproc"])
def transport(request: pytest.FixtureRequest) -> TransportName:
    """The SDK's answers are the same over both transports of `dltmw.open`."""
    return request.param  # type: ignore[no-any-return]


def _height(net: dltmw.Network) -> int:
    return net.nodes["peer0.org1"].peers["main"].ledger.height


async def _settled(net: dltmw.Network) -> int:
    """Both peers' common height (bounded wait until they agree)."""
    for _ in range(500):
        a, b = (net.nodes[n].peers["main"].ledger.height for n in ("peer0.org1", "peer0.org2"))
        if a == b:
            return a
        await asyncio.sleep(0.01)
    raise AssertionError("the peers did not reach the same height")


def test_sdk_bad_input_has_a_specific_code_and_reason(
    tmp_path: Path, transport: TransportName
) -> None:
    async def scenario() -> None:
        async with dltmw.open(tmp_path / "net", synchronous="NORMAL", transport=transport) as net:
            bus = net.bus("user1.org1")
            await bus.create_topic("trades")
            await bus.publish("trades", b"one")
            height = await _settled(net)

            with pytest.raises(dltmw.NotFound) as unknown:
                await bus.publish("nosuchtopic", b"x")
            assert (unknown.value.code, unknown.value.reason) == (
                "FAILED_PRECONDITION",
                "NOT_FOUND",
            )

            for too_large in (
                lambda: bus.publish("trades", b"x" * 300_000),
                lambda: bus.publish_batch("trades", [(b"x" * 300_000, None)]),
                lambda: bus.publish_batch("trades", [(b"x" * 200_000, None)] * 6),
            ):
                with pytest.raises(dltmw.LimitExceeded) as large:
                    await too_large()
                assert (large.value.code, large.value.reason) == (
                    "RESOURCE_EXHAUSTED",
                    "MESSAGE_TOO_LARGE",
                )

            with pytest.raises(dltmw.InvalidRequest) as negative:
                bus.subscribe("trades", from_block=-1)
            assert (negative.value.code, negative.value.reason) == (
                "INVALID_ARGUMENT",
                "INVALID_FIELD",
            )
            client = net.client("user1.org1")
            with pytest.raises(dltmw.InvalidRequest) as raw_start:
                async for _ in client.blocks("main", -5):
                    pass
            assert raw_start.value.reason == "INVALID_FIELD"

            checkpoints = tmp_path / "checkpoints"
            checkpoints.mkdir()
            saved = dltmw.FileCheckpointer(checkpoints)
            position = {"block": -1, "tx_index": 0, "event_index": 0}
            (checkpoints / "negative.json").write_text(json.dumps(position))
            with pytest.raises(dltmw.InvalidRequest) as bad:
                async with bus.subscribe("trades", "negative", saved) as sub:
                    await asyncio.wait_for(anext(sub), TEST_BOUND_S)
            assert (bad.value.code, bad.value.reason) == ("INVALID_ARGUMENT", "INVALID_FIELD")

            # Far beyond the ledger: refused once the client's deadline passed (2 s here).
            position = {"block": 10**9, "tx_index": 0, "event_index": 0}
            (checkpoints / "far.json").write_text(json.dumps(position))
            impatient = Bus(net.client("user1.org1", deadline_s=2.0), "main")
            with pytest.raises(dltmw.Unavailable) as far:
                async with impatient.subscribe("trades", "far", saved) as sub:
                    await asyncio.wait_for(anext(sub), TEST_BOUND_S)
            assert (far.value.code, far.value.reason) == ("UNAVAILABLE", "HEIGHT_NOT_REACHED")
            assert far.value.metadata == {"min_block_number": str(10**9)}

            assert await _settled(net) == height  # nothing was ordered
            # The checkpoints are left as they were: a refusal never rewrites them.
            assert json.loads((checkpoints / "far.json").read_text())["block"] == 10**9

    asyncio.run(scenario())


def test_raw_gateway_client_gets_the_same_status_and_reason(tmp_path: Path) -> None:
    """A client that bypasses the SDK (raw Endorse over gRPC) gets the node's own answers."""

    async def scenario() -> None:
        async with dltmw.open(tmp_path / "net", synchronous="NORMAL", transport="grpc") as net:
            await net.bus("user1.org1").create_topic("trades")
            height = await _settled(net)
            gw = await GatewayClient.connect(net.directory, "user1.org1", pipelined=False)
            async with gw:
                small = bus_pb2.BusMessage(payload=b"x").SerializeToString()
                large = bus_pb2.BusMessage(payload=b"x" * 300_000).SerializeToString()
                cases = [
                    (("nosuchtopic", small), grpc.StatusCode.FAILED_PRECONDITION, "NOT_FOUND"),
                    (("trades", large), grpc.StatusCode.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE"),
                ]
                for args, code, reason in cases:
                    signed, _ = gw.proposal("main", "bus", "publish", list(args))
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await gw.stub.Endorse(G.EndorseRequest(signed_proposal=signed), timeout=30)
                    assert (err.value.code(), reason_of(err.value)) == (code, reason)
                with pytest.raises(ValueError, match="negative"):
                    async for _ in gw.events("main", -1):
                        pass
            assert await _settled(net) == height

    asyncio.run(scenario())
