"""Deliver sends each stored block framed as a `DeliverResponse` without parsing it
(`rpc/orderer.deliver_frame`, `core/wire_field.py`, `rpc/boundary._serialize`).

The frame must be exactly what protobuf would write for `DeliverResponse(block=<the block>)`,
so a peer reads the block it would have read before, byte for byte as the orderer stored it (its
signatures and hash are checked over those bytes); the boundary must send bytes a servicer hands
it as they are, and still serialise messages.
"""

from __future__ import annotations

import pytest

from dltmw.core.block import make_block
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.wire_field import length_delimited, varint
from dltmw.rpc.boundary import _serialize
from dltmw.rpc.orderer import deliver_frame
from dltmw.v1 import block_pb2, orderer_service_pb2


@pytest.mark.parametrize(
    ("n", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
    ids=["zero", "one", "largest-one-byte", "smallest-two-bytes", "protobuf-guide-300"],
)
def test_varint_is_protobufs_base_128_encoding(n: int, encoded: bytes) -> None:
    assert varint(n) == encoded


def test_varint_refuses_a_negative_number() -> None:
    with pytest.raises(ValueError):
        varint(-1)


@pytest.mark.parametrize(
    "envelopes",
    [[], [b"e"], [b"x" * 200, b"y" * 70_000]],
    ids=["empty-block", "one-byte-envelope", "length-needs-three-varint-bytes"],
)
def test_a_deliver_frame_is_the_serialised_response_around_the_stored_block(
    envelopes: list[bytes],
) -> None:
    block = make_block("ch", 7, ZERO_HASH, envelopes)
    block.metadata.signatures.add(signer=b"orderer", signature=b"s" * 71)
    stored = block.SerializeToString()
    frame = deliver_frame(stored)
    expected = orderer_service_pb2.DeliverResponse(block=block).SerializeToString()
    assert frame == expected
    assert orderer_service_pb2.DeliverResponse.FromString(frame).block == block


def test_a_frame_carries_the_stored_bytes_as_they_are_not_reserialised() -> None:
    # fields in a non-canonical order (metadata first) and one unknown to this version: a
    # parse and a serialisation would reorder them; the peer must get the bytes as stored
    block = make_block("ch", 1, ZERO_HASH, [b"e"])
    fields = block_pb2.Block.DESCRIPTOR.fields_by_name
    stored = b"".join(
        length_delimited(fields[name].number, getattr(block, name).SerializeToString())
        for name in ("metadata", "data", "header")
    ) + length_delimited(99, b"newer")
    frame = deliver_frame(stored)
    assert frame.endswith(stored)
    got = orderer_service_pb2.DeliverResponse.FromString(frame).block
    assert got == block_pb2.Block.FromString(stored)
    assert got.header == block.header and got.data == block.data


def test_the_boundary_sends_bytes_as_they_are_and_serialises_messages() -> None:
    frame = deliver_frame(make_block("ch", 1, ZERO_HASH, [b"e"]).SerializeToString())
    assert _serialize(frame) is frame
    response = orderer_service_pb2.DeliverResponse(block=block_pb2.Block())
    assert _serialize(response) == response.SerializeToString()
