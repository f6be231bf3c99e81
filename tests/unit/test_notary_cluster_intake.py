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
from dltmw.core.notary_cluster import unwrap, wrap
from dltmw.runtime.roles.notary.cluster import WRAP_BYTES_MAX, cluster_config
from dltmw.runtime.roles.notary.cluster_intake import (
    WRAP_BASE_BYTES,
    Item,
    Outcome,
    OwnWraps,
    SignedPart,
    groups_of,
    order_group,
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


# -- ordering a few at a time -------------------------------------------------------------------


class Fake:
    """The role's two dependencies: a spent-set of signed tx_ids and PBFT-lite's decision,
    which waits until the test releases it."""

    def __init__(self) -> None:
        self.signed: dict[str, bytes] = {}
        self.release = asyncio.Event()
        self.ordered: list[tuple[list[bytes], int]] = []

    async def signed_here(self, tx_ids: list[str]) -> dict[str, bytes]:
        return {t: self.signed[t] for t in tx_ids if t in self.signed}

    async def decide(
        self, raws: list[bytes], stamp_ns: int, _part: SignedPart | None
    ) -> Sequence[Outcome]:
        self.ordered.append((raws, stamp_ns))
        await self.release.wait()
        return [Decision(f"decided:{raw.hex()}") for raw in raws]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_at_most_limit_own_wraps_are_ordered_at_once() -> None:
    fake, turns = Fake(), OwnWraps(2)
    calls = [
        asyncio.ensure_future(
            order_group([item(k)], turns, fake.signed_here, fake.decide, lambda: 1, 5.0)
        )
        for k in range(6)
    ]
    await settle()
    assert len(fake.ordered) == 2 and turns.in_flight == 2
    fake.release.set()
    outcomes = await asyncio.gather(*calls)
    assert turns.peak == 2
    assert [o[0].tx_id for o in outcomes] == [f"decided:{bytes([k]).hex() * 10}" for k in range(6)]
    assert [raws[0][0] for raws, _ in fake.ordered] == list(range(6))  # in arrival order


async def test_a_request_signed_while_its_wrap_waited_is_answered_from_the_store() -> None:
    """Relay: the first member answered, this one's wrap still waited; the tx_id the store now
    holds is answered from it and is not ordered a second time."""
    fake, turns = Fake(), OwnWraps(1)
    first = asyncio.ensure_future(
        order_group([item(1)], turns, fake.signed_here, fake.decide, lambda: 1, 5.0)
    )
    await settle()
    second = asyncio.ensure_future(
        order_group([item(2), item(3)], turns, fake.signed_here, fake.decide, lambda: 1, 5.0)
    )
    await settle()
    fake.signed["tx2"] = b"stored-attestation"
    fake.release.set()
    await first
    outcomes = await second
    assert [raws for raws, _ in fake.ordered] == [[item(1).raw], [item(3).raw]]
    assert isinstance(outcomes[0], Decision) and outcomes[0].tx_id == "tx2"
    assert outcomes[0].signature == b"stored-attestation"
    assert isinstance(outcomes[1], Decision) and outcomes[1].tx_id.startswith("decided:")


async def test_a_wrap_all_of_whose_requests_were_decided_meanwhile_is_not_ordered() -> None:
    fake, turns = Fake(), OwnWraps(1)
    fake.signed["tx5"] = b"att"
    fake.release.set()
    outcomes = await order_group([item(5)], turns, fake.signed_here, fake.decide, lambda: 1, 5.0)
    assert fake.ordered == []
    assert isinstance(outcomes[0], Decision) and outcomes[0].signature == b"att"


async def test_the_stamp_is_read_when_the_wrap_leaves_not_when_it_arrived() -> None:
    fake, turns = Fake(), OwnWraps(1)
    now = [100]
    first = asyncio.ensure_future(
        order_group([item(1)], turns, fake.signed_here, fake.decide, lambda: now[0], 5.0)
    )
    await settle()
    second = asyncio.ensure_future(
        order_group([item(2)], turns, fake.signed_here, fake.decide, lambda: now[0], 5.0)
    )
    await settle()
    now[0] = 200
    fake.release.set()
    await asyncio.gather(first, second)
    assert [stamp for _, stamp in fake.ordered] == [100, 200]


async def test_the_wait_for_a_turn_counts_towards_the_deadline() -> None:
    """A wrap that never gets a turn (the one in flight is stuck) is answered WAIT_TIMEOUT
    within the one deadline, and gives its turn back to nobody it did not hold."""
    fake, turns = Fake(), OwnWraps(1)
    stuck = asyncio.ensure_future(
        order_group([item(1)], turns, fake.signed_here, fake.decide, lambda: 1, 5.0)
    )
    await settle()
    outcomes = await order_group(
        [item(2), item(3)], turns, fake.signed_here, fake.decide, lambda: 1, 0.05
    )
    assert all(isinstance(o, TransientError) for o in outcomes)
    assert {o.reason for o in outcomes if isinstance(o, TransientError)} == {
        R.ERROR_REASON_WAIT_TIMEOUT
    }
    assert len(fake.ordered) == 1 and turns.in_flight == 1
    fake.release.set()
    await stuck
    assert turns.in_flight == 0
