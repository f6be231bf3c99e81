"""A notary-cluster member's intake (`runtime/roles/notary/cluster_intake.py`): wraps that fit
the replicas' request limit, a few own wraps ordered at once, requests decided meanwhile
answered from the store, the stamp taken when a wrap leaves, one deadline for the whole wait."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

from hypothesis import example, given, settings
from hypothesis import strategies as st

from dltmw.core.errors import TransientError
from dltmw.core.handlers.notary import Decision
from dltmw.core.notary_cluster import Part, unwrap, wrap, wrap_parts
from dltmw.runtime.roles.notary.cluster import WRAP_BYTES_MAX, cluster_config
from dltmw.runtime.roles.notary.cluster_intake import (
    WRAP_BASE_BYTES,
    Group,
    Item,
    Outcome,
    OwnWraps,
    SignedPart,
    groups_of,
    own_wraps_max,
)
from dltmw.v1 import errors_pb2, identity_pb2

R = errors_pb2


def item(k: int, size: int = 10) -> Item:
    return Item(k, f"tx{k}", bytes([k % 256]) * size)


def part(hashes: int) -> SignedPart:
    signature = identity_pb2.Signature(signer=b"c" * 650, signature=b"s" * 72)
    return SignedPart(
        signature, tuple(hashlib.sha256(bytes([i % 256])).digest() for i in range(hashes))
    )


# -- wraps fit ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=300),
    hashes=st.sampled_from([0, 1, 500, 1500]),
)
@example(sizes=[766] * 500, hashes=500)  # the benchmark's batch-signed client message
@example(sizes=[100] * 1000, hashes=0)
def test_every_wrap_formed_fits_the_replicas_request_limit(sizes: list[int], hashes: int) -> None:
    """Counted with their framing, the wraps of a call never exceed WRAP_BYTES_MAX serialised,
    so no replica refuses one as too large (with the framing uncounted, wraps of ~100
    batch-signed requests passed the limit and every one was refused INVALID_REQUEST)."""
    signed = part(hashes) if hashes else None
    base = WRAP_BASE_BYTES + (signed.overhead if signed else 0)
    items = [item(k, size) for k, size in enumerate(sizes)]
    limit = cluster_config(4).request_bytes_max
    for group in groups_of(items, base, WRAP_BYTES_MAX):
        raws = [i.raw for i in group]
        if signed is None:
            raw = wrap(raws, 2**62, 3)
        else:
            raw = wrap(raws, 2**62, 3, signed.signature, signed.hashes)
        assert len(raw) <= WRAP_BYTES_MAX < limit
        assert unwrap(raw, 4) is not None


def test_groups_keep_the_call_order_and_every_item() -> None:
    items = [item(k, 30_000) for k in range(7)]
    groups = groups_of(items, WRAP_BASE_BYTES, WRAP_BYTES_MAX)
    assert [i for g in groups for i in g] == items
    assert [len(g) for g in groups] == [3, 3, 1]


def test_all_members_together_keep_at_most_one_window_of_wraps_ordered() -> None:
    config = cluster_config(4)
    assert own_wraps_max(config) * config.n <= config.window * config.batch_size_max
    assert own_wraps_max(config) >= 1


def test_a_new_view_of_full_wraps_fits_one_grpc_message() -> None:
    """The bound `cluster_config` is sized by: 2f+1 view changes, each with the window's
    prepared pre-prepares of full wraps, plus the new view's own, under 4 MiB."""
    config = cluster_config(4)
    wraps = config.window * config.batch_size_max
    assert wraps * WRAP_BYTES_MAX * (config.quorum + 1) <= 4 * 1024 * 1024 - 64 * 1024


def test_decided_batches_in_memory_are_a_few_windows_of_full_wraps() -> None:
    """A member's decided batches kept in memory (catch-up answered without a read) cost their
    wraps' bytes: 32 of them were ~7 MB of peak RSS at 2,048 in flight (RESULTS.md, ncl6).
    Two windows of full slots of full wraps stay under 4 MiB; older ones come from the records."""
    config = cluster_config(4)
    assert config.window <= config.kept <= 2 * config.window
    assert config.kept * config.batch_size_max * WRAP_BYTES_MAX <= 4 * 1024 * 1024


# -- ordering a few at a time, merged -----------------------------------------------------------


class Fake:
    """The role's dependencies: a spent-set of signed tx_ids and PBFT-lite's decision, which
    waits until the test releases it; `intake` is the OwnWraps under test."""

    def __init__(self, limit: int, now: list[int] | None = None) -> None:
        self.signed: dict[str, bytes] = {}
        self.release = asyncio.Event()
        self.ordered: list[tuple[list[Part], int]] = []
        clock = now if now is not None else [1]
        self.intake = OwnWraps(
            limit, self.signed_here, self.decide, lambda: clock[0], WRAP_BYTES_MAX
        )

    async def signed_here(self, tx_ids: list[str]) -> dict[str, bytes]:
        return {t: self.signed[t] for t in tx_ids if t in self.signed}

    async def decide(self, parts: Sequence[Part], stamp_ns: int) -> Sequence[Outcome]:
        self.ordered.append((list(parts), stamp_ns))
        await self.release.wait()
        return [Decision(f"decided:{raw.hex()}") for p in parts for raw in p.requests]

    def raws(self) -> list[list[list[bytes]]]:
        """Per wrap ordered, per part, its raw requests."""
        return [[list(p.requests) for p in parts] for parts, _ in self.ordered]

    def order(self, *items: Item, wait_s: float = 5.0) -> asyncio.Future[list[Outcome]]:
        return asyncio.ensure_future(self.intake.order(Group(items), wait_s))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def decided(raw: bytes) -> str:
    return f"decided:{raw.hex()}"


async def test_at_most_limit_own_wraps_are_ordered_at_once() -> None:
    """Groups too large to share a wrap (60 KB each): two wraps at once, in arrival order."""
    fake = Fake(2)
    calls = [fake.order(item(k, 60_000)) for k in range(6)]
    await settle()
    assert len(fake.ordered) == 2 and fake.intake.in_flight == 2
    fake.release.set()
    outcomes = await asyncio.gather(*calls)
    assert fake.intake.peak == 2
    assert [o[0].tx_id for o in outcomes] == [decided(item(k, 60_000).raw) for k in range(6)]
    assert fake.raws() == [[[item(k, 60_000).raw]] for k in range(6)]  # one each, FIFO


async def test_groups_that_waited_for_a_turn_leave_merged_in_one_wrap() -> None:
    """While the one turn is taken, three calls' groups wait; they leave together as ONE wrap
    of three parts (in arrival order), and each call gets its own items' decisions."""
    fake = Fake(1)
    first = fake.order(item(1))
    await settle()
    waiting = [fake.order(item(2), item(3)), fake.order(item(4)), fake.order(item(5))]
    await settle()
    fake.release.set()
    await first
    outcomes = await asyncio.gather(*waiting)
    assert fake.raws() == [
        [[item(1).raw]],
        [[item(2).raw, item(3).raw], [item(4).raw], [item(5).raw]],
    ]
    assert [[o.tx_id for o in out if isinstance(o, Decision)] for out in outcomes] == [
        [decided(item(2).raw), decided(item(3).raw)],
        [decided(item(4).raw)],
        [decided(item(5).raw)],
    ]


async def test_a_merged_wrap_keeps_each_calls_signed_part() -> None:
    fake = Fake(1)
    first = fake.order(item(1))
    await settle()
    signed = part(2)
    a = asyncio.ensure_future(fake.intake.order(Group((item(2),), signed), 5.0))
    b = fake.order(item(3))
    await settle()
    fake.release.set()
    await asyncio.gather(first, a, b)
    parts = fake.ordered[1][0]
    assert parts[0].batch_signature == signed.signature
    assert tuple(parts[0].batch_hashes) == signed.hashes
    assert parts[1].batch_signature is None and not parts[1].batch_hashes


@settings(max_examples=40, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=120),
            st.sampled_from([0, 1, 500, 1400]),
        ),
        min_size=1,
        max_size=12,
    )
)
@example(calls=[([766] * 100, 500)] * 6)  # the benchmark's shape, calls waiting
@example(calls=[([700] * 19, 19)] * 12)  # ... and its ~19-request calls
@example(calls=[([1531], 0)] * 64)  # 64 one-request parts filling a wrap: parts' framing counts
async def test_every_merged_wrap_fits_the_replicas_request_limit(
    calls: list[tuple[list[int], int]],
) -> None:
    """Groups of many calls merged while they waited never make a wrap larger than
    WRAP_BYTES_MAX serialised (parts' framing and signed parts counted), and every wrap
    is well formed."""
    fake = Fake(1)
    first = fake.order(item(0))
    await settle()
    waiting = []
    k = 1
    for sizes, hashes in calls:
        signed = part(hashes) if hashes else None
        base = WRAP_BASE_BYTES + (signed.overhead if signed else 0)
        items = [item(k + j, size) for j, size in enumerate(sizes)]
        k += len(sizes)
        for group in groups_of(items, base, WRAP_BYTES_MAX):
            call = fake.intake.order(Group(tuple(group), signed), 5.0)
            waiting.append(asyncio.ensure_future(call))
    await settle()
    fake.release.set()
    await asyncio.gather(first, *waiting)
    for parts, _ in fake.ordered:
        raw = wrap_parts(parts, 2**62, 3)
        assert len(raw) <= WRAP_BYTES_MAX < cluster_config(4).request_bytes_max
        assert unwrap(raw, 4) is not None


async def test_a_request_signed_while_its_wrap_waited_is_answered_from_the_store() -> None:
    """Relay: the first member answered, this one's wrap still waited; the tx_id the store now
    holds is answered from it and is not ordered a second time."""
    fake = Fake(1)
    first = fake.order(item(1))
    await settle()
    second = fake.order(item(2), item(3))
    await settle()
    fake.signed["tx2"] = b"stored-attestation"
    fake.release.set()
    await first
    outcomes = await second
    assert fake.raws() == [[[item(1).raw]], [[item(3).raw]]]
    assert isinstance(outcomes[0], Decision) and outcomes[0].tx_id == "tx2"
    assert outcomes[0].signature == b"stored-attestation"
    assert isinstance(outcomes[1], Decision) and outcomes[1].tx_id.startswith("decided:")


async def test_a_wrap_all_of_whose_requests_were_decided_meanwhile_is_not_ordered() -> None:
    fake = Fake(1)
    fake.signed["tx5"] = b"att"
    fake.release.set()
    outcomes = await fake.order(item(5))
    assert fake.ordered == []
    assert isinstance(outcomes[0], Decision) and outcomes[0].signature == b"att"


async def test_the_stamp_is_read_when_the_wrap_leaves_not_when_it_arrived() -> None:
    now = [100]
    fake = Fake(1, now)
    first = fake.order(item(1))
    await settle()
    second = fake.order(item(2))
    await settle()
    now[0] = 200
    fake.release.set()
    await asyncio.gather(first, second)
    assert [stamp for _, stamp in fake.ordered] == [100, 200]


async def test_the_wait_for_a_turn_counts_towards_the_deadline() -> None:
    """A group that never gets a turn (the wrap in flight is stuck) is answered WAIT_TIMEOUT
    within the one deadline, and is not ordered once the turn frees."""
    fake = Fake(1)
    stuck = fake.order(item(1))
    await settle()
    outcomes = await fake.order(item(2), item(3), wait_s=0.05)
    assert all(isinstance(o, TransientError) for o in outcomes)
    assert {o.reason for o in outcomes if isinstance(o, TransientError)} == {
        R.ERROR_REASON_WAIT_TIMEOUT
    }
    assert len(fake.ordered) == 1 and fake.intake.in_flight == 1
    fake.release.set()
    await stuck
    await settle()
    assert fake.intake.in_flight == 0 and len(fake.ordered) == 1


def test_the_simulator_shapes_slots_as_the_real_cluster_does() -> None:
    """`sim/notary_cluster` restates the cluster's slot shape (it does not import the runtime's
    config): the two must not drift apart, or the simulator checks a shape nothing runs."""
    from dltmw.sim.notary_cluster import CLUSTER_BATCH_SIZE_MAX, CLUSTER_CHECKPOINT_INTERVAL

    config = cluster_config(4)
    assert (config.checkpoint_interval, config.batch_size_max) == (
        CLUSTER_CHECKPOINT_INTERVAL,
        CLUSTER_BATCH_SIZE_MAX,
    )
