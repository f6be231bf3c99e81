"""When a peer leaves a Deliver source that withholds blocks (`runtime/roles/peer/censor_watch.py`,
`deliver_watch.DeliverWatch.censored`), under virtual time: only a header beyond what the stream
delivered opens a suspicion; the stream delivering that block clears it; a suspicion older than
the timeout whose header is valid names the orderer to dial next (once per `REDIAL_EVERY_S`); a
forged one never causes a switch and silences its teller for the stream."""

from __future__ import annotations

import asyncio
import types
from typing import cast

from test_deliver_watch import Call

from dltmw.aio.tasks import TaskOwner, cancel_and_wait
from dltmw.core.channel import ChannelView
from dltmw.rpc.orderer import header_of
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.peer.censor_watch import PATIENCE, CensorWatch
from dltmw.runtime.roles.peer.deliver_watch import REDIAL_EVERY_S, STALL_S, DeliverWatch
from dltmw.runtime.roles.peer.header_monitor import HeaderMonitor, others_after, watched_count
from dltmw.v1 import block_pb2, identity_pb2

TIMEOUT_S = 3.0


def _header(number: int) -> block_pb2.Block:
    return block_pb2.Block(header=block_pb2.BlockHeader(channel_id="trades", number=number))


def _censor(timeout_s: float = TIMEOUT_S) -> tuple[CensorWatch, list[float]]:
    now = [100.0]
    censor = CensorWatch(timeout_s, lambda: now[0])
    censor.opened(5)  # the stream owes us block 5 next
    return censor, now


def test_a_header_the_stream_delivered_opens_no_suspicion() -> None:
    censor, now = _censor()
    assert not censor.header("orderer.b", _header(4))
    now[0] += 10 * TIMEOUT_S
    assert censor.due_in() is None and censor.suspicion is None


def test_the_stream_delivering_the_block_in_time_clears_the_suspicion() -> None:
    censor, now = _censor()
    assert censor.header("orderer.b", _header(6))  # opens one: wake the checker
    assert not censor.header("orderer.b", _header(6))  # already open
    due = censor.due_in()
    assert due is not None and due == TIMEOUT_S
    now[0] += TIMEOUT_S / 2
    censor.delivered(5)
    assert censor.suspicion is not None  # block 6 still owed
    censor.delivered(6)
    assert censor.suspicion is None and censor.due_in() is None


def test_a_valid_header_ahead_past_the_timeout_names_its_teller() -> None:
    censor, now = _censor()
    censor.header("orderer.b", _header(5))
    now[0] += TIMEOUT_S / 2
    censor.header("orderer.b", _header(7))  # newer evidence keeps the start time
    now[0] += TIMEOUT_S / 2
    suspicion = censor.suspicion
    assert suspicion is not None and suspicion.number == 7 and censor.due_in() == 0
    assert censor.verdict(suspicion, "") == "orderer.b"
    assert censor.switches == 1 and censor.suspicion is None


def test_a_stream_still_delivering_is_given_time_but_not_for_ever() -> None:
    censor, now = _censor()
    censor.header("orderer.b", _header(10_000))  # a peer far behind, catching up
    for number in range(5, 5 + 3 * PATIENCE):
        now[0] += TIMEOUT_S / 3
        censor.delivered(number)  # progress restarts the timer ...
        due = censor.due_in()
        assert due is not None and (due > 0) == (now[0] - 100.0 < PATIENCE * TIMEOUT_S)
    now[0] += TIMEOUT_S  # ... up to PATIENCE timeouts in all (a source trickling blocks)
    assert censor.due_in() is not None and censor.due_in() <= 0  # type: ignore[operator]


def test_a_stream_that_stops_delivering_is_due_one_timeout_after_its_last_block() -> None:
    censor, now = _censor()
    censor.header("orderer.b", _header(100))
    now[0] += TIMEOUT_S / 2
    censor.delivered(5)
    assert censor.due_in() == TIMEOUT_S
    now[0] += TIMEOUT_S
    assert censor.due_in() == 0


def test_a_verdict_after_the_block_arrived_switches_nothing() -> None:
    censor, now = _censor()
    censor.header("orderer.b", _header(5))
    now[0] += TIMEOUT_S
    suspicion = censor.suspicion
    assert suspicion is not None
    censor.delivered(5)  # while the signatures were being checked
    assert censor.verdict(suspicion, "") is None and censor.switches == 0
    censor.header("orderer.c", _header(9))
    now[0] += TIMEOUT_S
    forged = censor.suspicion
    assert forged is not None
    censor.delivered(6)  # progress during the check does not excuse a forgery
    assert censor.verdict(forged, "bad signature") is None
    assert censor.distrusts("orderer.c") and censor.forged == 1 and censor.suspicion is None


def test_a_forged_header_never_switches_and_silences_its_teller() -> None:
    censor, now = _censor()
    for _ in range(50):  # a forger that keeps showing headers ahead
        if censor.header("orderer.c", _header(9)):
            now[0] += TIMEOUT_S
            suspicion = censor.suspicion
            assert suspicion is not None
            assert censor.verdict(suspicion, "block 9 lacks 3 valid signature(s)") is None
        now[0] += TIMEOUT_S
    assert censor.switches == 0 and censor.forged == 1  # one failed check per stream
    assert censor.distrusts("orderer.c") and censor.suspicion is None
    assert censor.header("orderer.d", _header(9))  # an honest teller is still heard
    censor.opened(5)  # a new stream trusts everyone again
    assert not censor.distrusts("orderer.c")


def test_the_monitor_off_never_suspects() -> None:
    censor, now = _censor(timeout_s=0)
    assert not censor.enabled
    assert not censor.header("orderer.b", _header(50))
    now[0] += 100
    assert censor.due_in() is None


def test_a_censorship_redial_names_the_source_and_shares_the_redial_bound() -> None:
    now = [100.0]
    watch = DeliverWatch(clock=lambda: now[0])
    calls = [Call(), Call()]
    watch.opened(calls[0])
    assert watch.censored("orderer.c")
    assert calls[0].cancels == 1 and watch.take_stalled()
    assert watch.take_next_source() == "orderer.c" and watch.take_next_source() is None
    watch.closed()
    watch.opened(calls[1])
    now[0] += STALL_S  # within REDIAL_EVERY_S: neither signal re-dials again
    assert not watch.censored("orderer.d") and not watch.wanted(0)
    assert watch.take_next_source() is None
    now[0] += REDIAL_EVERY_S
    assert watch.censored("orderer.d") and calls[1].cancels == 1
    assert watch.take_next_source() == "orderer.d"


def test_a_header_only_block_keeps_what_its_signatures_cover() -> None:
    signature = identity_pb2.Signature(signer=b"orderer", signature=b"sig")
    block = _header(3)
    block.header.previous_hash, block.header.data_hash = b"p" * 32, b"d" * 32
    block.data.envelopes.append(b"x" * 1000)
    block.metadata.signatures.append(signature)
    block.metadata.validation_codes.append(1)
    header = header_of(block)
    assert header.header == block.header and list(header.metadata.signatures) == [signature]
    assert not header.data.envelopes and not header.metadata.validation_codes


def test_a_peer_watches_f_plus_1_others_starting_after_its_source() -> None:
    assert [watched_count(n) for n in (2, 3, 4, 7, 10)] == [1, 1, 2, 3, 4]
    orderers = ["a", "b", "c", "d"]
    assert others_after(orderers, "a") == ["b", "c", "d"]
    assert others_after(orderers, "b") == ["c", "d", "a"]  # the withholder a comes last
    assert others_after(orderers, "gone") == orderers  # a source a config update removed


class _Ctx:
    """What the monitor uses of a node context: its dialling fails with `error`."""

    def __init__(self, error: BaseException, tasks: TaskOwner) -> None:
        self.error, self.tasks, self.dials = error, tasks, 0

    async def channel_to(self, node_id: str) -> object:
        self.dials += 1
        raise self.error

    async def forget(self, node_id: str) -> None:
        pass


async def _monitor_with(error: BaseException) -> tuple[list[str], int]:
    """Run a monitor whose header streams fail with `error` for a while: (fatal tasks, dials)."""
    fatal: list[str] = []

    async def on_fatal(name: str, exc: BaseException | None) -> None:
        fatal.append(name)

    ctx = _Ctx(error, TaskOwner(on_fatal))
    view = types.SimpleNamespace(channel_id="trades", orderer_ids=lambda: ["a", "b", "c", "d"])
    censor = CensorWatch(TIMEOUT_S, lambda: 0.0)
    monitor = HeaderMonitor(
        cast(NodeContext, ctx),
        lambda: cast(ChannelView, view),
        "a",
        censor,
        DeliverWatch(),
        None,  # type: ignore[arg-type]
    )
    task = ctx.tasks.spawn("censor-monitor-trades", monitor.run())
    for _ in range(50):  # bounded: 50 x 20 ms
        if fatal or ctx.dials >= 4:
            break
        await asyncio.sleep(0.02)
    await cancel_and_wait(task)
    return fatal, ctx.dials


async def test_a_bug_in_the_monitor_stops_the_node_a_failing_header_stream_does_not() -> None:
    fatal, dials = await _monitor_with(ValueError("a bug"))
    assert fatal == ["censor-monitor-trades"] and dials >= 1
    fatal, dials = await _monitor_with(ConnectionResetError("orderer down"))
    assert fatal == [] and dials >= 4  # dialled again (and the next one), never fatal
    # a call cancelled under it (another user of the cached channel closed it): dialled again,
    # not a header stream that ended silently inside the monitor's task group
    fatal, dials = await _monitor_with(asyncio.CancelledError())
    assert fatal == [] and dials >= 4
