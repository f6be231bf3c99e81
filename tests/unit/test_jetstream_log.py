"""The stream adapter's framing (`runtime/roles/orderer/jetstream_log.py`): a Broadcast batch
becomes as few stream messages as the server's payload limit allows, in order, and a batch
message reads back as the same envelopes on every orderer."""

from __future__ import annotations

from dltmw.runtime.roles.orderer.jetstream_log import _batch_envelopes, _chunks
from dltmw.v1 import block_pb2


def test_a_batch_is_one_message_when_it_fits() -> None:
    envelopes = [bytes([i]) * 100 for i in range(10)]
    assert [list(c) for c in _chunks(envelopes, 10_000)] == [envelopes]


def test_a_batch_is_split_in_order_under_the_limit() -> None:
    envelopes = [bytes([i]) * 100 for i in range(10)]
    chunks = _chunks(envelopes, 350)  # three framed envelopes (108 bytes each) per message
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert [e for c in chunks for e in c] == envelopes
    assert all(sum(len(e) + 8 for e in c) <= 350 for c in chunks)


def test_an_envelope_over_the_limit_is_a_message_of_its_own() -> None:
    big, small = b"b" * 1000, b"s"
    assert [list(c) for c in _chunks([small, big, small], 100)] == [[small], [big], [small]]
    assert _chunks([], 100) == []


def test_a_batch_message_reads_back_as_its_envelopes() -> None:
    envelopes = (b"one", b"", b"three")
    data = block_pb2.BlockData(envelopes=envelopes).SerializeToString()
    assert _batch_envelopes(data) == envelopes


def test_a_batch_message_that_does_not_parse_is_no_envelopes_on_every_orderer() -> None:
    assert _batch_envelopes(b"\xff\xff\xff") == ()
