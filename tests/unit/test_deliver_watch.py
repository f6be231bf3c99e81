"""When a peer dials Deliver again (`runtime/roles/peer/deliver_watch.py`): only a stream quiet
for `STALL_S` is cancelled when a block is wanted, at most once per `REDIAL_EVERY_S` (a client
may name any block), and only the stream the watch cancelled counts as stalled."""

from __future__ import annotations

from dltmw.runtime.roles.peer.deliver_watch import REDIAL_EVERY_S, STALL_S, DeliverWatch


class Call:
    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> bool:
        self.cancels += 1
        return True


def _watch() -> tuple[DeliverWatch, list[float]]:
    now = [100.0]
    return DeliverWatch(clock=lambda: now[0]), now


def test_a_stream_that_delivered_recently_is_left_alone() -> None:
    watch, now = _watch()
    call = Call()
    watch.opened(call)
    now[0] += STALL_S / 2
    assert not watch.wanted(0)
    now[0] += STALL_S
    watch.committed()  # a commit is progress too
    now[0] += STALL_S / 2
    assert not watch.wanted(0)
    assert call.cancels == 0 and not watch.take_stalled()


def test_a_quiet_stream_is_cancelled_once_and_counts_as_stalled_once() -> None:
    watch, now = _watch()
    call = Call()
    watch.opened(call)
    now[0] += STALL_S
    assert watch.wanted(0)
    assert call.cancels == 1 and watch.redials == 1
    assert watch.take_stalled() and not watch.take_stalled()
    assert not watch.wanted(0)  # nothing open to cancel until the next stream


def test_redials_are_rate_limited_whatever_blocks_are_claimed() -> None:
    watch, now = _watch()
    calls = [Call() for _ in range(3)]
    watch.opened(calls[0])
    now[0] += STALL_S
    assert watch.wanted(0)
    watch.closed()
    watch.opened(calls[1])
    now[0] += STALL_S  # quiet again, but within REDIAL_EVERY_S of the last re-dial
    assert REDIAL_EVERY_S > STALL_S and not watch.wanted(0)
    now[0] += REDIAL_EVERY_S
    assert watch.wanted(0)
    assert [c.cancels for c in calls] == [1, 1, 0]


def test_a_stream_that_ended_by_itself_is_not_stalled() -> None:
    watch, now = _watch()
    watch.opened(Call())
    watch.closed()
    now[0] += 10 * STALL_S
    assert not watch.wanted(0) and not watch.take_stalled()


def test_a_peer_still_committing_what_its_stream_brought_is_busy_not_behind() -> None:
    """Blocks 5..7 delivered, the commit of 5 stalls on storage retries (height stays 5): the
    stream is quiet but the peer is not behind it; once 7 is committed (height 8) and the
    stream stays quiet, a wanted block re-dials."""
    watch, now = _watch()
    call = Call()
    watch.opened(call)
    for number in (5, 6, 7):
        watch.delivered(number)
    now[0] += 10 * STALL_S
    assert not watch.wanted(5) and not watch.wanted(7)
    assert call.cancels == 0
    assert watch.wanted(8)
    assert call.cancels == 1
