"""Replica messages serialised once, for every link that sends them.

Why: a replica broadcasts the same signed message to its n-1 peers (a pre-prepare, a vote
collector's certificates and, with dissemination, the batches of the envelopes its clients
sent), and each link used to build its own `ExchangeRequest` around it (a copy of the message),
wrap that in an `ExchangeStreamRequest` (another copy) and serialise the whole: ~200 µs per link
for a 48-envelope batch (115 KB), 12 times per batch at n = 13, where the primary is the origin
of every batch the bench's client sends (benchmarks/RESULTS.md, branch pbft7).

Protobuf encodes an embedded or repeated message field as its tag, its length and the message's
own bytes, so a link assembles its request from bytes made once per message (`frame`) with a
few concatenations: byte for byte what the generated code writes for the same request (fields
in number order, as `SerializeToString` emits them; tests/unit/test_replica_frame.py), so the
receiver sees no difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dltmw.v1 import replica_pb2

# Field numbers (protos/dltmw/v1/replica.proto).
_REQUEST_CHANNEL_ID = 1  # ExchangeRequest.channel_id
MESSAGES = 2  # ExchangeRequest.messages
BLOCK_SIGNATURES = 3  # ExchangeRequest.block_signatures
_STREAM_BATCH = 1  # ExchangeStreamRequest.batch
_STREAM_ANSWER_EVERY = 530  # ExchangeStreamRequest.answer_every

_LENGTH_DELIMITED = 2
_VARINT = 0

Outbound = replica_pb2.SignedReplicaMessage | replica_pb2.BlockSignature


@dataclass(frozen=True, slots=True)
class Framed:
    """One outbound message, serialised: `field` is the `ExchangeRequest` field it goes in
    (`MESSAGES` or `BLOCK_SIGNATURES`)."""

    field: int
    data: bytes


def frame(message: Outbound) -> Framed:
    """`message` serialised once, for any number of links."""
    if isinstance(message, replica_pb2.BlockSignature):
        return Framed(BLOCK_SIGNATURES, message.SerializeToString())
    return Framed(MESSAGES, message.SerializeToString())


def exchange_request(channel_id: str, items: Sequence[Framed]) -> bytes:
    """The serialised `ExchangeRequest` of `channel_id` carrying `items` (messages first, then
    block signatures, each kind in the order given: the request has one list of each)."""
    parts: list[bytes] = []
    if channel_id:
        name = channel_id.encode()
        parts += (_header(_REQUEST_CHANNEL_ID, len(name)), name)
    for field in (MESSAGES, BLOCK_SIGNATURES):
        for item in items:
            if item.field == field:
                parts += (_header(field, len(item.data)), item.data)
    return b"".join(parts)  # one copy of each message's bytes


def stream_request(request: bytes, answer_every: int = 0) -> bytes:
    """The serialised `ExchangeStreamRequest` carrying the serialised `ExchangeRequest`
    `request` (`answer_every`: the opening request's, 0 on the others)."""
    parts = [_header(_STREAM_BATCH, len(request)), request]
    if answer_every:
        parts += (_varint((_STREAM_ANSWER_EVERY << 3) | _VARINT), _varint(answer_every))
    return b"".join(parts)


def _header(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited field (bytes, string or embedded message)."""
    return _varint((number << 3) | _LENGTH_DELIMITED) + _varint(length)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class FrameOnce:
    """Frames for one send step: a message queued for several destinations (a broadcast queues
    the same object for each) is serialised once. Keyed by the object's identity, and keeps the
    object, so an id is never reused within the step."""

    def __init__(self) -> None:
        self._made: dict[int, tuple[Outbound, Framed]] = {}

    def __call__(self, message: Outbound) -> Framed:
        made = self._made.get(id(message))
        if made is None:
            made = self._made[id(message)] = (message, frame(message))
        return made[1]
