"""A recipient's Push stream stores the batches a sender pipelines at once, acknowledged in order
(`PrivacyManagerServicer.Push`), and pushes naming the same payload keep their arrival order
(`aio/key_order.KeyOrder`): the copy with more recipients is never lost to a
race between a re-push and an AddRecipients push.

Why: stored one at a time, a sender's pipelined PushBatches queued behind each other at the
recipient (benchmarks/RESULTS.md, branch priv6: the Push leg was the largest part of a private
transaction's latency, the recipient's own work a third of it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from dltmw.aio.key_order import KeyOrder
from dltmw.core.errors import ClientError
from dltmw.rpc.privacy import PrivacyManagerServicer
from dltmw.v1 import config_pb2, errors_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P

LATE_S = 10.0  # a deadline for what must happen, never a measured duration


class Manager:
    """Stand-in privacy manager: each push waits for its gate; refuses the channel "bad"."""

    def __init__(self, count: int) -> None:
        self.entered = [asyncio.Event() for _ in range(count)]
        self.gates = [asyncio.Event() for _ in range(count)]
        self.stored: list[int] = []

    async def accept_push(self, push: P.PushBatch, sender: config_pb2.NodeConfig) -> P.PushResponse:
        index = int(push.payload_hashes[0][0])
        self.entered[index].set()
        await self.gates[index].wait()
        if push.channel_id == "bad":
            raise ClientError(errors_pb2.ERROR_REASON_NOT_AUTHORIZED, "refused")
        self.stored.append(index)
        return P.PushResponse(stored=10 + index)


def _servicer(manager: Manager) -> PrivacyManagerServicer:
    servicer = PrivacyManagerServicer(manager, "Org1", 900.0, 1000)  # type: ignore[arg-type]
    node = config_pb2.NodeConfig(node_id="peer0.org2")

    def admitted(*_: Any) -> tuple[None, config_pb2.NodeConfig]:
        return None, node  # admission (signature, TLS) is not what this file tests

    servicer._node = admitted  # type: ignore[method-assign,assignment]
    return servicer


def _request(index: int, channel: str = "ch") -> P.PushRequest:
    batch = P.PushBatch(channel_id=channel, payload_hashes=[bytes([index]) * 32])
    return P.PushRequest(batch=batch.SerializeToString(), signature=b"s")


async def _requests(items: Sequence[P.PushRequest]) -> AsyncIterator[P.PushRequest]:
    for item in items:
        yield item


async def _collect(stream: AsyncIterator[P.PushResponse], out: list[int]) -> None:
    async for response in stream:
        out.append(response.stored)


async def test_a_stream_stores_its_next_batch_before_the_first_is_stored() -> None:
    manager = Manager(2)
    servicer = _servicer(manager)
    acks: list[int] = []
    stream = servicer.Push(_requests([_request(0), _request(1)]), None)  # type: ignore[arg-type]
    reading = asyncio.ensure_future(_collect(stream, acks))
    await asyncio.wait_for(manager.entered[0].wait(), LATE_S)
    # the first batch is still being stored: the second is handled all the same
    await asyncio.wait_for(manager.entered[1].wait(), LATE_S)
    manager.gates[1].set()  # the second is stored first ...
    await asyncio.sleep(0)
    assert acks == []  # ... but not acknowledged before the first
    manager.gates[0].set()
    await asyncio.wait_for(reading, LATE_S)
    assert manager.stored == [1, 0]
    assert acks == [10, 11]  # acknowledged in request order


class Aborted(Exception):
    pass


class Context:
    async def abort_with_status(self, status: Any) -> None:
        raise Aborted(status.details)


async def test_a_refused_batch_ends_the_stream_after_the_acks_before_it() -> None:
    manager = Manager(3)
    for gate in manager.gates:
        gate.set()
    servicer = _servicer(manager)
    acks: list[int] = []
    requests = [_request(0), _request(1, "bad"), _request(2)]
    stream = servicer.Push(_requests(requests), Context())  # type: ignore[arg-type]
    with pytest.raises(Aborted, match="refused"):
        await asyncio.wait_for(_collect(stream, acks), LATE_S)
    assert acks == [10]


class Store:
    """Stand-in private store: `held` of the first call waits for the gate."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.gate = asyncio.Event()
        self.calls = 0

    async def held(self, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        self.calls += 1
        call = self.calls
        self.log.append(f"held {call}")
        if call == 1:
            await self.gate.wait()
        return {}

    async def store_payloads(self, payloads: Sequence[Any]) -> int:
        self.log.append(f"store {len(payloads)}")
        return len(payloads)


class Channel:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.redelivery = None  # nothing owed by this node

    def check_push(self, push: P.PushBatch, sender: Any, held: Any) -> list[bytes]:
        return list(push.payload_hashes)


class Executor:
    def payloads_arrived(self) -> None:
        pass


async def test_the_manager_checks_a_push_of_the_same_payload_after_the_earlier_is_stored() -> None:
    from dltmw.runtime.roles.privacy.manager import PrivacyManager

    store = Store()
    manager = PrivacyManager.__new__(PrivacyManager)
    manager.channels = {"ch": Channel(store)}  # type: ignore[dict-item]
    manager.executors = {"ch": Executor()}  # type: ignore[dict-item]
    manager._push_order = KeyOrder()
    same = P.PushBatch(channel_id="ch", payload_hashes=[b"a" * 32])
    other = P.PushBatch(channel_id="ch", payload_hashes=[b"b" * 32])
    node = config_pb2.NodeConfig(node_id="peer0.org2")
    first = asyncio.ensure_future(manager.accept_push(same, node))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(manager.accept_push(same, node))
    third = asyncio.ensure_future(manager.accept_push(other, node))
    await asyncio.wait_for(third, LATE_S)  # another payload: not held back
    assert store.log == ["held 1", "held 2", "store 1"]
    store.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), LATE_S)
    # the second push of the same payload read what is held only once the first was stored
    assert store.log == ["held 1", "held 2", "store 1", "store 1", "held 3", "store 1"]
