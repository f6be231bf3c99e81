"""A replica link's batches stay under the receiver's message limit (a call over it is refused
whole, again at every retransmission), keep the queue's order and lose nothing."""

from __future__ import annotations

from types import SimpleNamespace

from dltmw.runtime.replica_link import ENVELOPE_BYTES, REQUEST_BYTES_MAX, ReplicaLink
from dltmw.v1 import replica_pb2

LIMIT = 256 * 1024


def message(i: int, size: int) -> replica_pb2.SignedReplicaMessage:
    return replica_pb2.SignedReplicaMessage(payload=i.to_bytes(4, "big") + b"x" * size)


async def test_batches_fit_the_message_limit_in_order_and_a_large_message_goes_alone() -> None:
    ctx = SimpleNamespace(limits=SimpleNamespace(max_message_bytes=LIMIT))
    link = ReplicaLink(ctx, "ch", "orderer.b")  # type: ignore[arg-type]
    sizes = [60_000] * 7 + [400_000] + [1_000] * 300 + [150_000, 150_000]
    for i, size in enumerate(sizes):
        link.send(message(i, size))
    batches = []
    while sum(len(b) for b in batches) < len(sizes):
        batches.append(await link._take())
    parsed = [[replica_pb2.SignedReplicaMessage.FromString(m.data) for m in b] for b in batches]
    sent = [int.from_bytes(m.payload[:4], "big") for b in parsed for m in b]
    assert sent == list(range(len(sizes)))  # order kept, nothing lost or repeated
    budget = LIMIT - ENVELOPE_BYTES
    for batch in batches:
        total = sum(len(m.data) for m in batch)
        assert total <= budget or len(batch) == 1, (len(batch), total)
        assert len(batch) <= 256
    assert [len(b) for b in batches if any(len(m.data) > budget for m in b)] == [1]


async def test_batches_stay_under_the_request_bound_below_a_large_message_limit() -> None:
    """With the default 4 MiB message limit a batch is still at most REQUEST_BYTES_MAX (what a
    receiver holds per stream while its core catches up); red with the limit alone."""
    ctx = SimpleNamespace(limits=SimpleNamespace(max_message_bytes=4 << 20))
    link = ReplicaLink(ctx, "ch", "orderer.b")  # type: ignore[arg-type]
    sizes = [100_000] * 40 + [2_000_000]
    for i, size in enumerate(sizes):
        link.send(message(i, size))
    batches = []
    while sum(len(b) for b in batches) < len(sizes):
        batches.append(await link._take())
    totals = [sum(len(m.data) for m in b) for b in batches]
    assert all(t <= REQUEST_BYTES_MAX for t, b in zip(totals, batches, strict=True) if len(b) > 1)
    assert len(batches) >= 5  # 4 MB of 100 KB messages in batches of at most 1 MiB, and the big one
    assert [len(b) for b in batches][-1] == 1  # a message over the bound still goes, alone
