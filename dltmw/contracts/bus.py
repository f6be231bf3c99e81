"""The message bus contract: topics on a channel, messages as contract events.

A message is a transaction of this contract that emits one event (contract "bus", name = the
topic, payload = a serialised `BusMessage`: headers + body). It is endorsed, ordered, signed and
committed like any transaction, so a subscriber reading the channel's blocks sees every message
once, in commit order, with the tx id as its identity (`sdk/bus.py`). Publishing writes
nothing: it only reads the topic's record, which never changes after `create_topic`, so
publishers never conflict with each other (no MVCC aborts however many publish at once).

A topic must be created before use, so a misspelt topic is refused (404) instead of silently
starting a stream nobody reads.

Written with the contract SDK like any user contract, so it may import only pure standard
library modules: a message is checked against the `BusMessage` wire format (protobuf: field 1,
repeated header entries {1: key, 2: value}; field 2, the payload) by the small reader below,
not by the protobuf runtime.
"""

from __future__ import annotations

import re

from dltmw.contract_sdk import Context, Contract, ContractError, query, transaction

MESSAGE_BYTES_MAX = 256 * 1024  # a serialised BusMessage; larger ones are refused
BATCH_BYTES_MAX = 1024 * 1024  # the messages of one publish_batch together
BATCH_MAX = 1000  # messages in one publish_batch
HEADERS_MAX = 32
TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
LEN = 2  # the protobuf wire type of strings, bytes and messages


def topic_key(topic: str) -> str:
    """The world-state key of a topic's record."""
    return f"topic/{topic}"


def _topic(topic: str) -> str:
    if not TOPIC.fullmatch(topic):
        raise ContractError(
            f"topic {topic[:64]!r} must be 1..128 characters of A-Z a-z 0-9 . _ / - "
            "starting with a letter or digit"
        )
    return topic


def _varint(raw: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while at < len(raw) and shift < 64:
        byte = raw[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    raise ValueError("truncated varint")


def _fields(raw: bytes) -> list[tuple[int, bytes]]:
    """(field number, bytes) of every length-delimited field; ValueError for anything else."""
    out: list[tuple[int, bytes]] = []
    at = 0
    while at < len(raw):
        tag, at = _varint(raw, at)
        if tag & 7 != LEN or tag >> 3 == 0:
            raise ValueError("unexpected field")
        size, at = _varint(raw, at)
        if at + size > len(raw):
            raise ValueError("truncated field")
        out.append((tag >> 3, raw[at : at + size]))
        at += size
    return out


def _check_message(raw: bytes) -> None:
    """Refuse anything but a BusMessage within the limits."""
    if len(raw) > MESSAGE_BYTES_MAX:
        raise ContractError(f"message of {len(raw)} bytes exceeds {MESSAGE_BYTES_MAX}", 413)
    try:
        fields = _fields(raw)
        headers = [value for number, value in fields if number == 1]
        if any(number not in (1, 2) for number, _ in fields):
            raise ValueError("unknown field")
        for entry in headers:
            for number, text in _fields(entry):
                if number not in (1, 2):
                    raise ValueError("unknown header field")
                text.decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ContractError("message is not a serialised BusMessage") from exc
    if len(headers) > HEADERS_MAX:
        raise ContractError(f"more than {HEADERS_MAX} headers")


def _known(ctx: Context, topic: str) -> None:
    if ctx.get(topic_key(topic)) is None:
        raise ContractError(f"unknown topic {topic!r}: create it first", 404)


class BusContract(Contract):
    """create_topic / publish / publish_batch / topic."""

    name = "bus"

    @transaction
    def create_topic(self, ctx: Context, topic: str) -> bytes:
        """create_topic(topic): declare a topic (409 if it exists)."""
        _topic(topic)
        if ctx.get(topic_key(topic)) is not None:
            raise ContractError(f"topic {topic!r} already exists", 409)
        ctx.put(topic_key(topic), b"1")
        ctx.emit("topic_created", topic.encode())
        return topic.encode()

    @transaction
    def publish(self, ctx: Context, topic: str, message: bytes) -> bytes:
        """publish(topic, message): `message` is a serialised BusMessage; emits it."""
        _topic(topic)
        _check_message(message)
        _known(ctx, topic)
        ctx.emit(topic, message)
        return b""

    @transaction
    def publish_batch(self, ctx: Context, topic: str, *messages: bytes) -> bytes:
        """publish_batch(topic, message...): up to BATCH_MAX messages in one transaction, each
        its own event (and its own position), in the order given."""
        _topic(topic)
        if not 1 <= len(messages) <= BATCH_MAX:
            raise ContractError(f"publish_batch takes 1..{BATCH_MAX} messages")
        total = sum(len(m) for m in messages)
        if total > BATCH_BYTES_MAX:
            raise ContractError(f"batch of {total} bytes exceeds {BATCH_BYTES_MAX}", 413)
        for raw in messages:
            _check_message(raw)
        _known(ctx, topic)
        for raw in messages:
            ctx.emit(topic, raw)
        return str(len(messages)).encode()

    @query
    def topic(self, ctx: Context, topic: str) -> bytes:
        """topic(name): "1" if the topic exists (404 otherwise)."""
        _topic(topic)
        if ctx.get(topic_key(topic)) is None:
            raise ContractError(f"unknown topic {topic!r}", 404)
        return b"1"
