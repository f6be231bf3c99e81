"""The retry schedule shared by the vault's outbox and private queued delivery
(`aio/outbox_retry.py`): first sight waits, failures back off with jitter up to a ceiling,
memory stays bounded."""

from __future__ import annotations

import pytest

from dltmw.aio.outbox_retry import PAGE_S, RetrySchedule


def schedule(tracked_max: int = 100) -> RetrySchedule[str]:
    return RetrySchedule(
        first_delay_s=1.0, backoff_min_s=0.5, backoff_max_s=10.0, tracked_max=tracked_max
    )


def test_a_key_first_seen_waits_then_comes_due() -> None:
    s = schedule()
    assert s.due("a", 100.0) is None  # first sight: whoever queued it may still be sending
    assert s.due("a", 100.5) is None
    assert s.due("a", 101.0) == 0


@pytest.mark.parametrize("failures", [0, 1, 2, 3, 4, 5, 9])
def test_failures_back_off_exponentially_with_jitter_up_to_the_ceiling(failures: int) -> None:
    s = schedule()
    s.due("a", 0.0)
    ceiling = min(10.0, 0.5 * 2**failures)
    for _ in range(50):
        delay = s.failed("a", failures, 0.0)
        assert ceiling / 2 <= delay <= ceiling
        assert s.due("a", delay - 1e-6) is None
        assert s.due("a", delay) == failures + 1


def test_jitter_spreads_recipients_that_failed_together() -> None:
    s = schedule()
    delays = {s.failed(key, 3, 0.0) for key in "abcdefgh"}
    assert len(delays) > 1


def test_done_forgets_and_wait_is_until_the_soonest_key_within_bounds() -> None:
    s = schedule()
    assert s.wait_s(0.0, 30.0) == 30.0  # nothing pending: idle
    s.due("a", 0.0)  # due at 1.0
    s.due("b", 0.5)  # due at 1.5
    assert s.wait_s(0.0, 30.0) == 1.0
    assert s.wait_s(0.99, 30.0) == PAGE_S  # never a busy loop
    s.done("a")
    assert s.wait_s(0.0, 30.0) == 1.5
    s.done("b")
    s.done("b")  # idempotent
    assert len(s) == 0


def test_memory_stays_bounded_by_the_rows_seen() -> None:
    s = schedule(tracked_max=3)
    for key in "abcd":
        s.due(key, 0.0)
    s.keep_only(["c", "d"])
    assert len(s) == 2 and s.due("c", 1.0) == 0 and s.due("a", 1.0) is None
    s.keep_only(["x"])  # at or under the bound: nothing forgotten
    assert len(s) == 3


def test_hurry_brings_a_pending_key_due_within_the_bound_and_makes_no_entry_otherwise() -> None:
    s = schedule()
    s.due("a", 0.0)
    delay = s.failed("a", 5, 0.0)  # at the ceiling: due in [5, 10]
    assert s.hurry("a", 1.0, 0.5)  # heard from at 1.0: due at 1.5
    assert s.due("a", 1.49) is None and s.due("a", 1.5) == 6  # failures still counted
    assert not s.hurry("a", 1.2, 0.5)  # already due by then: unchanged
    assert not s.hurry("b", 1.0, 0.5) and len(s) == 1  # nothing owed to b: no entry
    assert s.hurry("c", 1.0, 0.0, add=True) and s.due("c", 1.0) == 0  # rows just queued
    assert delay >= 5.0


def test_retain_forgets_keys_a_whole_pass_did_not_see() -> None:
    s = schedule()
    for key in "abc":
        s.due(key, 0.0)
    s.retain(["b"])
    assert len(s) == 1 and s.due("b", 1.0) == 0
