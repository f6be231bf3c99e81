"""Protobuf framing written by hand: a length-delimited field from bytes already serialised.

Why this exists. A message whose only content is one embedded message can be sent as the tag,
the length and the embedded message's bytes, without parsing those bytes into an object and
serialising them again. The orderer's Deliver sends each stored block this way (`rpc/orderer.py`:
one `DeliverResponse` per block and follower cost a parse, a copy and a serialisation of the whole
block); the byzantine envelope maker builds malformed messages field by field with the same two
functions. The bytes are the standard wire encoding (protobuf's encoding guide: tag = field
number << 3 | wire type 2, then the length as a varint), so any parser reads them as the message.

`canonical` is the other direction: whether received bytes are THE encoding of what they parse
to (a request is identified by its bytes, and nothing may ride along in clear), for the
envelope and the private transaction's data (`core/txcheck.py`) and a purge's
(`core/privacy/purge.py`).
"""

from __future__ import annotations

from google.protobuf.message import Message


def varint(n: int) -> bytes:
    """`n` (>= 0) as a protobuf base-128 varint, least significant group first."""
    if n < 0:
        raise ValueError(f"varint of a negative number {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, value: bytes) -> bytes:
    """Field `number` holding `value` (bytes, a string or an embedded message's serialisation)."""
    return varint(number << 3 | 2) + varint(len(value)) + value


def canonical(message: Message, data: bytes) -> bool:
    """Whether `data`, which `message` was parsed from, is the serialisation of `message`'s
    known fields (no unknown field at any depth, no duplicated or reordered field, no
    non-minimal varint, no explicitly encoded default). Strips `message`'s unknown fields.

    One serialisation of the parsed message once upb dropped its unknown fields, where the
    rule before rebuilt the message field by field and serialised that: the same verdict at a
    fraction of the cost (benchmarks/RESULTS.md, branch txc14)."""
    message.DiscardUnknownFields()
    return message.SerializeToString() == data
