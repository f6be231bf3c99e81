"""Requests assembled from messages serialised once (`replica_frame`) are byte for byte what
the generated code serialises for the same request, so a receiver cannot tell them apart."""

from __future__ import annotations

from dltmw.runtime.replica_frame import FrameOnce, exchange_request, frame, stream_request
from dltmw.v1 import replica_pb2


def messages() -> list[replica_pb2.SignedReplicaMessage | replica_pb2.BlockSignature]:
    big = replica_pb2.ReplicaMessage()
    big.batch.envelopes.extend(bytes([i]) * 2400 for i in range(48))  # lengths of 3 bytes
    return [
        replica_pb2.SignedReplicaMessage(payload=b"p" * 5, replica=3, signature=b"s" * 72),
        replica_pb2.BlockSignature(number=7, block_hash=b"h" * 32, replica=1, signature=b"t"),
        replica_pb2.SignedReplicaMessage(
            payload=big.SerializeToString(), replica=12, signature=b"u" * 71
        ),
        replica_pb2.SignedReplicaMessage(),  # empty: a zero-length field
        replica_pb2.BlockSignature(number=300, replica=2),
    ]


def generated(
    channel_id: str, batch: list[replica_pb2.SignedReplicaMessage | replica_pb2.BlockSignature]
) -> replica_pb2.ExchangeRequest:
    request = replica_pb2.ExchangeRequest(channel_id=channel_id)
    for message in batch:
        if isinstance(message, replica_pb2.BlockSignature):
            request.block_signatures.append(message)
        else:
            request.messages.append(message)
    return request


def test_a_request_is_byte_for_byte_the_generated_one() -> None:
    batch = messages()
    for channel_id in ("", "ch", "c" * 200):
        for cut in range(len(batch) + 1):
            part = batch[:cut]
            request = generated(channel_id, part)
            ours = exchange_request(channel_id, [frame(m) for m in part])
            assert ours == request.SerializeToString()
            assert replica_pb2.ExchangeRequest.FromString(ours) == request


def test_a_stream_request_is_byte_for_byte_the_generated_one() -> None:
    request = generated("ch", messages())
    raw = request.SerializeToString()
    for every in (0, 1, 4, 64, 200):
        expected = replica_pb2.ExchangeStreamRequest(batch=request, answer_every=every)
        assert stream_request(raw, every) == expected.SerializeToString()
        assert replica_pb2.ExchangeStreamRequest.FromString(stream_request(raw, every)) == expected


def test_a_message_sent_to_every_link_is_serialised_once() -> None:
    frames = FrameOnce()
    first, second = messages()[:2]
    made = [frames(first) for _ in range(12)]
    assert all(item is made[0] for item in made)  # one serialisation, shared
    assert frames(second) is not made[0]
    assert made[0].data == first.SerializeToString()
