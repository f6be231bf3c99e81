"""`LateSignatures` (core/handlers/pbft_late.py): which late block signatures are answered, and
its memory stays bounded by the blocks committed within one window."""

from __future__ import annotations

from dltmw.core.handlers.pbft_late import LateSignatures

WINDOW = 20


def test_first_late_hearing_within_the_window_is_not_answered_the_second_is() -> None:
    late = LateSignatures(WINDOW)
    late.committed(5, now=100)
    assert not late.answer(3, 5, now=101)
    assert late.answer(3, 5, now=102)
    assert not late.answer(2, 5, now=102)  # another replica's first hearing


def test_a_signature_that_made_our_quorum_is_answered_when_resent() -> None:
    late = LateSignatures(WINDOW)
    late.heard(1, 5)
    late.committed(5, now=100)
    assert late.answer(1, 5, now=101)


def test_blocks_unknown_or_older_than_the_window_are_answered_at_once() -> None:
    late = LateSignatures(WINDOW)
    assert late.answer(3, 4, now=0)  # never committed here while remembered
    late.committed(5, now=100)
    assert late.answer(3, 5, now=100 + WINDOW)


def test_memory_holds_only_the_last_window_of_blocks() -> None:
    late = LateSignatures(WINDOW)
    for number in range(1, 1001):
        now = number  # one block per tick
        late.heard(0, number)
        late.committed(number, now)
        late.answer(3, number, now)
        late.heard(1, number + 5)  # an early signature of a block not committed yet
        if now % WINDOW == 0:
            late.forget_old(now, height=number + 1)
    # the window's 20 blocks and 3 signatures of each, plus the 5 early ones: not 1000s
    assert len(late) <= WINDOW * 4 + 5


def test_clear_forgets_everything() -> None:
    late = LateSignatures(WINDOW)
    late.committed(5, now=1)
    late.heard(1, 6)
    late.clear()
    assert len(late) == 0 and late.answer(1, 5, now=2)
