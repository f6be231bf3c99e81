"""Unit tier for the hot-path helpers: coalescing, ordered pipelining, verify-once, policy memo."""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest

from dltmw.aio.coalesce import Coalescer, pipelined
from dltmw.core import identity as identity_mod
from dltmw.core import verified_memo
from dltmw.core.identity import BadSignature, Membership, NotAMember, SigningIdentity
from dltmw.core.policy import PolicyResult, Signer, evaluate, parse_policy
from dltmw.pki.ca import FRESH, issue_cert, make_ca

NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs


async def test_concurrent_calls_become_one_batch_with_per_item_errors() -> None:
    batches: list[list[int]] = []

    async def batch(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(batch, batch_max=4)
    results = await asyncio.gather(*(c.call(i) for i in range(6)), return_exceptions=True)
    await c.close()
    assert batches == [[0, 1, 2, 3], [4, 5]]
    assert results[0] == 0 and results[2] == 20 and results[4] == 40
    assert [str(r) for r in results[1::2]] == ["odd 1", "odd 3", "odd 5"]


async def test_a_failing_batch_fails_every_caller_of_it_and_the_next_batch_runs() -> None:
    calls = 0

    async def batch(items: Sequence[str]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("storage down")
        return [s.upper() for s in items]

    c: Coalescer[str, str] = Coalescer(batch)
    first = await asyncio.gather(c.call("a"), c.call("b"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in first)
    assert await c.call("c") == "C"
    await c.close()


async def test_a_size_bound_cuts_batches_by_the_sum_of_their_items_sizes() -> None:
    batches: list[list[int]] = []

    async def batch(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return list(items)

    c: Coalescer[int, int] = Coalescer(batch, batch_max=10, size=lambda i: i, size_max=10)
    await asyncio.gather(*(c.call(i) for i in [4, 5, 2, 12, 3]))
    await c.close()
    assert batches == [[4, 5], [2], [12], [3]]  # 4+5+2 > 10; 12 alone although over the bound


async def test_an_item_whose_caller_gave_up_before_its_batch_started_is_not_processed() -> None:
    release = asyncio.Event()
    batches: list[list[str]] = []

    async def batch(items: Sequence[str]) -> list[str]:
        batches.append(list(items))
        await release.wait()
        return list(items)

    c: Coalescer[str, str] = Coalescer(batch, name="t", max_concurrent=1)
    first = asyncio.create_task(c.call("first"))
    await asyncio.sleep(0)
    late = asyncio.create_task(c.call("late"))
    kept = asyncio.create_task(c.call("kept"))
    await asyncio.sleep(0)
    late.cancel()
    release.set()
    assert await first == "first" and await kept == "kept"
    await c.close()
    assert batches == [["first"], ["kept"]]


async def test_pipelined_runs_requests_concurrently_but_answers_in_order() -> None:
    running = 0
    most = 0

    async def requests() -> AsyncIterator[int]:
        for i in range(5):
            yield i

    async def handle(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02 * (5 - i))  # later requests finish first
        running -= 1
        return i

    out = [r async for r in pipelined(requests(), handle, depth=8)]
    assert out == [0, 1, 2, 3, 4]
    assert most == 5, "requests were not handled concurrently"


async def test_pipelined_reraises_what_broke_the_request_stream() -> None:
    async def requests() -> AsyncIterator[int]:
        yield 1
        raise ConnectionError("peer went away")

    async def handle(i: int) -> int:
        return i

    with pytest.raises(ConnectionError):
        _ = [r async for r in pipelined(requests(), handle)]


def _signer() -> tuple[Membership, SigningIdentity]:
    ca = make_ca("Org1", material=AT_NOW)
    issued = issue_cert(ca, "Org1", "peer0.Org1", "peer", material=AT_NOW)
    return Membership({"Org1": ca.cert_pem}), SigningIdentity.from_pem(
        "Org1", issued.cert_pem, issued.key_pem
    )


def test_each_signature_is_verified_once_and_only_the_same_triple_hits() -> None:
    membership, me = _signer()
    data = b"endorsed payload"
    sig = me.sign(data)
    real = identity_mod.verify_signature
    with mock.patch.object(identity_mod, "verify_signature", side_effect=real) as spy:
        membership.verify(me.identity_bytes, data, sig, NOW)
        membership.verify(me.identity_bytes, data, sig, NOW)
        assert spy.call_count == 1
        # Other data or another signature is never taken from the memo.
        with pytest.raises(BadSignature):
            membership.verify(me.identity_bytes, data + b"!", sig, NOW)
        with pytest.raises(BadSignature):
            membership.verify(me.identity_bytes, data, me.sign(b"other"), NOW)
    # The time-dependent identity check still runs on a memo hit.
    with pytest.raises(NotAMember):
        membership.verify(me.identity_bytes, data, sig, NOW + timedelta(days=36500))


def test_failed_verifications_are_not_remembered() -> None:
    membership, me = _signer()
    bad = me.sign(b"something else")
    for _ in range(2):
        with pytest.raises(BadSignature):
            membership.verify(me.identity_bytes, b"data", bad, NOW)


def test_policy_memo_gives_the_solver_answers() -> None:
    policy = parse_policy("AND(Org1.peer, Org2.peer)")
    p1 = Signer(b"1" * 32, "Org1", frozenset({"peer"}))
    p2 = Signer(b"2" * 32, "Org2", frozenset({"peer"}))
    client = Signer(b"3" * 32, "Org2", frozenset({"client"}))
    for _ in range(2):  # the second round is answered from the memo
        assert evaluate(policy, [p1, p2]) is PolicyResult.SATISFIED
        assert evaluate(policy, [p1], [p2]) is PolicyResult.PENDING
        assert evaluate(policy, [p1, client]) is PolicyResult.UNSATISFIABLE


def test_own_signature_is_remembered_but_not_a_forgery() -> None:
    membership, me = _signer()
    data = b"payload||endorser"
    sig = me.sign(data)
    membership.remember_own_signature(me, data, sig)
    with mock.patch.object(identity_mod, "verify_signature", side_effect=AssertionError) as spy:
        membership.verify(me.identity_bytes, data, sig, NOW)
        assert spy.call_count == 0
    with pytest.raises(BadSignature):
        membership.verify(me.identity_bytes, data, b"\x30\x06\x02\x01\x01\x02\x01\x01", NOW)


async def test_a_stuck_batch_does_not_hold_up_later_items_when_concurrent() -> None:
    release = asyncio.Event()

    async def batch(items: Sequence[str]) -> list[str | BaseException]:
        if "slow" in items:
            await release.wait()
        return list(items)

    c: Coalescer[str, str] = Coalescer(batch, name="t", max_concurrent=2)
    slow = asyncio.create_task(c.call("slow"))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(c.call("fast"), 5) == "fast"
    assert not slow.done()
    release.set()
    assert await slow == "slow"
    await c.close()


async def test_items_arriving_while_a_held_batch_runs_leave_together_as_the_next_batch() -> None:
    # Natural batching with concurrency allowed (the gateway's Endorse): items that arrive one
    # by one while a batch is in progress wait for it and then go as ONE batch, in arrival
    # order, each with its own result; without `hold_s` each would start a batch of its own.
    batches: list[list[str]] = []
    release = asyncio.Event()

    async def batch(items: Sequence[str]) -> list[str | BaseException]:
        batches.append(list(items))
        if "first" in items:
            await release.wait()
        return [ValueError(i) if i == "bad" else i.upper() for i in items]

    c: Coalescer[str, str] = Coalescer(batch, name="t", max_concurrent=4, hold_s=60.0)
    first = asyncio.create_task(c.call("first"))
    later = []
    for item in ("b", "bad", "d"):
        await asyncio.sleep(0.01)  # spread out: each arrives alone
        later.append(asyncio.create_task(c.call(item)))
    await asyncio.sleep(0.01)
    assert batches == [["first"]]  # held behind the batch in progress
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*later, return_exceptions=True), 5)
    assert batches == [["first"], ["b", "bad", "d"]]
    assert results[0] == "B" and results[2] == "D"
    assert isinstance(results[1], ValueError)  # one refused item fails alone
    assert await first == "FIRST"
    await c.close()


async def test_a_lone_item_is_not_held_when_nothing_is_in_progress() -> None:
    async def batch(items: Sequence[int]) -> list[int | BaseException]:
        return [i + 1 for i in items]

    c: Coalescer[int, int] = Coalescer(batch, max_concurrent=4, hold_s=60.0)
    for i in range(3):  # one after the other: each finds nothing in progress
        assert await asyncio.wait_for(c.call(i), 5) == i + 1
    await c.close()


async def test_a_held_batch_stuck_longer_than_hold_s_lets_the_next_one_start() -> None:
    release = asyncio.Event()
    batches: list[list[str]] = []

    async def batch(items: Sequence[str]) -> list[str | BaseException]:
        batches.append(list(items))
        if "slow" in items:
            await release.wait()
        return list(items)

    c: Coalescer[str, str] = Coalescer(batch, name="t", max_concurrent=2, hold_s=0.05)
    slow = asyncio.create_task(c.call("slow"))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(c.call("fast"), 5) == "fast"
    assert not slow.done()
    # `max_concurrent` still bounds: with two batches in progress (one stuck), the next waits.
    blocked = asyncio.create_task(c.call("slow"))
    await asyncio.sleep(0.01)
    third = asyncio.create_task(c.call("third"))
    await asyncio.sleep(0.2)
    assert not third.done()
    release.set()
    assert await asyncio.wait_for(third, 5) == "third"
    assert await slow == "slow" and await blocked == "slow"
    await c.close()


async def test_close_cancels_callers_of_a_running_batch() -> None:
    async def batch(items: Sequence[int]) -> list[int | BaseException]:
        await asyncio.Event().wait()  # never finishes
        return list(items)

    for concurrent in (1, 2):
        c: Coalescer[int, int] = Coalescer(batch, max_concurrent=concurrent)
        waiting = asyncio.create_task(c.call(1))
        await asyncio.sleep(0.01)
        await c.close()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 5)


def test_the_verified_signature_memo_stays_within_its_memory_budget_under_steady_churn() -> None:
    # A node under load adds signatures to a full memo for good (a peer: ~2 per transaction).
    # Its memory must stay bounded at every moment, not only right after filling: an
    # insertion-ordered dict that dropped its oldest entry held 4.7 MB and peaked at 7.4 MB
    # while its table (bloated by the dropped entries' slots) was copied. Each entry is one
    # digest, whatever the signature's size (ML-DSA-65: 3.3 KB).
    membership, me = _signer()
    big_signature = bytes(identity_mod.ML_DSA_65_SIGNATURE_SIZE)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(4 * verified_memo.VERIFIED_CACHE_SIZE):
            membership.remember_own_signature(me, i.to_bytes(8, "big"), big_signature + b"%d" % i)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    held = len(membership._verified)
    assert verified_memo.VERIFIED_GENERATION <= held <= verified_memo.VERIFIED_CACHE_SIZE
    assert peak < 4 * 1024 * 1024, f"{peak / 2**20:.1f} MB at the peak"


def test_the_memo_keeps_at_least_the_newest_generation_of_signatures() -> None:
    # What the memo is for: a signature checked once hits while it is among the newest
    # VERIFIED_GENERATION (the hits measured under load came within 4,096). A remembered but
    # invalid signature proves the hit: verifying it for real would fail.
    membership, me = _signer()
    count = verified_memo.VERIFIED_GENERATION * 5 // 2 + 1000
    for i in range(count):
        membership.remember_own_signature(me, b"data %d" % i, b"not a signature %d" % i)
    for i in range(count - verified_memo.VERIFIED_GENERATION, count):
        membership.verify(me.identity_bytes, b"data %d" % i, b"not a signature %d" % i, NOW)
    with pytest.raises(BadSignature):  # dropped with its generation: verified for real
        membership.verify(me.identity_bytes, b"data 0", b"not a signature 0", NOW)


async def test_settled_waits_for_every_outcome_and_withdraws_all_when_cancelled() -> None:
    from dltmw.aio.coalesce import settled

    loop = asyncio.get_running_loop()
    failed, ok, withdrawn = (loop.create_future() for _ in range(3))
    waiter = asyncio.ensure_future(settled([withdrawn, failed, ok]))
    await asyncio.sleep(0)  # the waiter now awaits `withdrawn`
    withdrawn.cancel()  # cancelled by its owner: not the waiter's cancellation
    failed.set_exception(ValueError("one item's error"))
    await asyncio.sleep(0)
    assert not waiter.done(), "settled before every future settled"
    ok.set_result(1)
    await asyncio.wait_for(waiter, 5)  # an item's error or cancellation is not raised here
    pending = [loop.create_future() for _ in range(2)]
    waiter = asyncio.ensure_future(settled(pending))
    await asyncio.sleep(0)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled() and all(f.cancelled() for f in pending)
