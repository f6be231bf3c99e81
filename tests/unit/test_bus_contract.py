"""The bus contract: a message is an event of a declared topic, publishing writes nothing (so
publishers never conflict), and bad input — unknown topic, bad topic name, oversized or
malformed message — is refused with nothing staged."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dltmw.contracts import builtin_contract
from dltmw.contracts.bus import MESSAGE_BYTES_MAX, BusContract, topic_key
from dltmw.core.contract import simulate
from dltmw.core.rwset import StateEntry, Version
from dltmw.v1 import bus_pb2, proposal_pb2


class State:
    def __init__(self, data: dict[str, bytes]) -> None:
        self.data = data

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        value = self.data.get(key) if namespace == "bus" else None
        return (value, Version(1, 0)) if value is not None else None

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        raise AssertionError("the bus never range-reads")


def call(function: str, args: Sequence[bytes], topics: Sequence[str] = ("trades",)):  # type: ignore[no-untyped-def]
    state = State({topic_key(t): b"1" for t in topics})
    invocation = proposal_pb2.ContractInvocation(contract="bus", function=function, args=args)
    return simulate(BusContract(), invocation, state)


def message(payload: bytes = b"hello", **headers: str) -> bytes:
    return bus_pb2.BusMessage(payload=payload, headers=headers).SerializeToString()


def test_publish_emits_the_message_and_writes_nothing() -> None:
    raw = message(b"fill 100 @ 9.5", kind="fill")
    result = call("publish", [b"trades", raw])
    assert result.response.status == 200
    assert [(e.contract, e.name, e.payload) for e in result.events] == [("bus", "trades", raw)]
    assert list(result.rwset.writes) == []
    assert [r.key for r in result.rwset.reads] == [topic_key("trades")]


def test_create_topic_writes_its_record_once() -> None:
    created = call("create_topic", [b"settlement/eur"], topics=())
    assert created.response.status == 200
    assert [(w.key, w.value) for w in created.rwset.writes] == [(topic_key("settlement/eur"), b"1")]
    again = call("create_topic", [b"trades"])
    assert again.response.status == 409 and not again.rwset.writes


@pytest.mark.parametrize(
    ("args", "status", "text"),
    [
        ([b"nope", message()], 404, "unknown topic"),
        ([b"", message()], 400, "must be 1..128"),
        ([b"-x", message()], 400, "must be 1..128"),
        ([b"a" * 129, message()], 400, "must be 1..128"),
        ([b"\xff", message()], 400, "UTF-8"),
        ([b"trades"], 400, "missing argument 2"),
        ([b"trades", b"\xff\xff\xff"], 400, "not a serialised BusMessage"),
        ([b"trades", message(b"x" * MESSAGE_BYTES_MAX)], 413, "exceeds"),
    ],
)
def test_bad_publish_is_refused_with_nothing_staged(
    args: list[bytes], status: int, text: str
) -> None:
    result = call("publish", args)
    assert result.response.status == status
    assert text in result.response.message
    assert not result.events and not result.rwset.writes


def test_bus_is_a_builtin() -> None:
    assert isinstance(builtin_contract("bus"), BusContract)


def test_publish_batch_emits_each_message_in_order() -> None:
    raws = [message(f"m{i}".encode()) for i in range(3)]
    result = call("publish_batch", [b"trades", *raws])
    assert result.response.status == 200 and result.response.payload == b"3"
    assert [e.payload for e in result.events] == raws
    assert list(result.rwset.writes) == []


@pytest.mark.parametrize(
    ("args", "status", "text"),
    [
        ([b"trades"], 400, "1..1000 messages"),
        ([b"trades", *[message()] * 1001], 400, "1..1000 messages"),
        ([b"trades", message(), b"\xff\xff"], 400, "not a serialised"),
        ([b"trades", *[message(b"x" * 200_000)] * 6], 413, "exceeds"),
        ([b"nope", message()], 404, "unknown topic"),
    ],
)
def test_bad_batch_is_refused_whole(args: list[bytes], status: int, text: str) -> None:
    result = call("publish_batch", args)
    assert result.response.status == status and text in result.response.message
    assert not result.events


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        message(),
        message(b""),
        message(b"x" * 1000, a="1", b="\u00e9"),
        bus_pb2.BusMessage(headers={"k": ""}).SerializeToString(),
    ],
)
def test_every_real_bus_message_is_accepted(raw: bytes) -> None:
    """The contract's own wire reader accepts what the protobuf runtime writes."""
    assert call("publish", [b"trades", raw]).response.status == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"\x08\x01",  # a varint field
        b"\x1a\x00",  # field 3
        b"\x0a\x05ab",  # truncated
        b"\x0a\x02\x0a\xff",  # a header entry with a truncated key
        b"\x0a\x03\x0a\x01\xff",  # a header key that is not UTF-8
        b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # a varint beyond 64 bits
    ],
)
def test_malformed_bus_messages_are_refused(raw: bytes) -> None:
    result = call("publish", [b"trades", raw])
    assert (
        result.response.status == 400 and "not a serialised BusMessage" in result.response.message
    )
