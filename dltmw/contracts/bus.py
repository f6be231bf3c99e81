"""The message bus contract: topics on a channel, messages as contract events.

A message is a transaction of this contract that emits one event (contract "bus", name = the
topic, payload = a serialised `BusMessage`: headers + body). It is endorsed, ordered, signed and
committed like any transaction, so a subscriber reading the channel's blocks sees every message
once, in commit order, with the tx id as its identity (`sdk/bus.py`). Publishing writes
nothing: it only reads the topic's record, which never changes after `create_topic`, so
publishers never conflict with each other (no MVCC aborts however many publish at once).

A topic must be created before use, so a misspelt topic is refused (404) instead of silently
starting a stream nobody reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from dltmw.core.contract import Context, Contract, ContractError
from dltmw.v1 import bus_pb2

MESSAGE_BYTES_MAX = 256 * 1024  # a serialised BusMessage; larger ones are refused
BATCH_BYTES_MAX = 1024 * 1024  # the messages of one publish_batch together
BATCH_MAX = 1000  # messages in one publish_batch
HEADERS_MAX = 32
TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")


def topic_key(topic: str) -> str:
    """The world-state key of a topic's record."""
    return f"topic/{topic}"


def _topic(args: Sequence[bytes]) -> str:
    if not args:
        raise ContractError("missing argument 1: topic")
    try:
        topic = args[0].decode()
    except UnicodeDecodeError as exc:
        raise ContractError("topic is not UTF-8") from exc
    if not TOPIC.fullmatch(topic):
        raise ContractError(
            f"topic {topic[:64]!r} must be 1..128 characters of A-Z a-z 0-9 . _ / - "
            "starting with a letter or digit"
        )
    return topic


def _check_message(raw: bytes) -> None:
    if len(raw) > MESSAGE_BYTES_MAX:
        raise ContractError(f"message of {len(raw)} bytes exceeds {MESSAGE_BYTES_MAX}", 413)
    try:
        message = bus_pb2.BusMessage.FromString(raw)
    except DecodeError as exc:
        raise ContractError("message is not a serialised BusMessage") from exc
    if len(message.headers) > HEADERS_MAX:
        raise ContractError(f"more than {HEADERS_MAX} headers")


def _known(ctx: Context, topic: str) -> None:
    if ctx.get(topic_key(topic)) is None:
        raise ContractError(f"unknown topic {topic!r}: create it first", 404)


class BusContract(Contract):
    """create_topic / publish / publish_batch / topic."""

    name = "bus"

    def create_topic(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """create_topic(topic): declare a topic (409 if it exists)."""
        topic = _topic(args)
        if ctx.get(topic_key(topic)) is not None:
            raise ContractError(f"topic {topic!r} already exists", 409)
        ctx.put(topic_key(topic), b"1")
        ctx.emit("topic_created", topic.encode())
        return topic.encode()

    def publish(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """publish(topic, message): `message` is a serialised BusMessage; emits it."""
        topic = _topic(args)
        if len(args) != 2:
            raise ContractError("publish takes 2 arguments: topic, message")
        _check_message(args[1])
        _known(ctx, topic)
        ctx.emit(topic, args[1])
        return b""

    def publish_batch(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """publish_batch(topic, message...): up to BATCH_MAX messages in one transaction, each
        its own event (and its own position), in the order given."""
        topic = _topic(args)
        messages = args[1:]
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

    def topic(self, ctx: Context, args: Sequence[bytes]) -> bytes:
        """topic(name): "1" if the topic exists (404 otherwise)."""
        topic = _topic(args)
        if ctx.get(topic_key(topic)) is None:
            raise ContractError(f"unknown topic {topic!r}", 404)
        return b"1"
