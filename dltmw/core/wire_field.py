"""Protobuf framing written by hand: a length-delimited field from bytes already serialised.

Why this exists. A message whose only content is one embedded message can be sent as the tag,
the length and the embedded message's bytes, without parsing those bytes into an object and
serialising them again. The orderer's Deliver sends each stored block this way (`rpc/orderer.py`:
one `DeliverResponse` per block and follower cost a parse, a copy and a serialisation of the whole
block); the byzantine envelope maker builds malformed messages field by field with the same two
functions. The bytes are the standard wire encoding (protobuf's encoding guide: tag = field
number << 3 | wire type 2, then the length as a varint), so any parser reads them as the message.
"""

from __future__ import annotations


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
