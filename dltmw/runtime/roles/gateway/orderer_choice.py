"""Which orderer takes a transaction: the first, from the last one that worked, that answers it.

With several orderers of a channel (PBFT-lite replicas, JetStream orderers) any one of them can
order a transaction, so one that cannot must not fail the submission while another can. Three
kinds of "cannot" move the gateway on to further orderers:
- the link to it fails (TransientError from the Broadcast stream: down, restarting, overloaded);
- it answers, but refuses with a reason that is about *it*, not about the transaction
  (`NEXT_ORDERER`): a PBFT-lite replica removed from (or not yet in) the set in force, or a
  JetStream orderer cut off from the majority of its nats-servers, both ORDERING_UNAVAILABLE;
- it does not answer within the ordering deadline (`Widening.deadline_s`). A PBFT-lite replica
  answers a Broadcast once the request's block is committed there. A primary that censors
  (admits requests and never proposes them) or is cut off from the backups but not from the
  gateways would hold the submission for ever: a request the primary admits is not relayed, so
  no backup times it and no view change comes. So, as a PBFT client does (Castro and Liskov: a
  client not answered in time sends its request to every replica), at the deadline the same
  envelope also goes to the next `Widening.widen` orderers, and the gateway keeps waiting for
  whichever answers first, the first one included. A backup that admits it relays it to every
  replica, so every correct replica times the primary and f+1 of them ask for a view change;
  the new primary orders it. f more orderers (f+1 in all) hold at least one correct one. The
  copies are the same envelope (same tx_id, same request id): PBFT-lite orders a request id
  once, and a copy that reaches the ledger anyway is marked DUPLICATE_TXID, never applied
  twice; CommitStatus reports the first, VALID one (`ledger`: the tx index keeps the first).
Any other refusal is the transaction's own (malformed, not admitted) and is final: the next
orderer would refuse it alike. One exception (`COPY_MAY_CAUSE`): a config update is judged at
Broadcast against the config in force there, so a copy sent at a deadline reaches an orderer
that may already have applied the very update an earlier attempt handed in, and it answers
CONFIG_SEQUENCE_STALE while the first orderer's acceptance is still on its way (seen on a loaded
host: `tests/integration/test_pbft_rekey.py`, the removal's submit refused although it was
applied). Such a refusal is held while other attempts still wait, for one more deadline at
most and with no further widening; an acceptance meanwhile wins, else the refusal is returned.
When every orderer asked failed, the last trouble is raised as a TransientError, so the client
retries later (UNAVAILABLE), never a final refusal.

The hot path (one orderer answers in time) costs one future, one done-callback and one entry in
the gateway's `FifoDeadlines` (`aio/deadlines.py`: one timer per timeout value), no task and no
timer handle per transaction.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from dltmw.aio.deadlines import FifoDeadlines
from dltmw.core.errors import TransientError
from dltmw.v1 import config_pb2, errors_pb2, orderer_service_pb2

Result = orderer_service_pb2.BroadcastResult
R = errors_pb2

# Refusals about the orderer, not the transaction: ORDERING_UNAVAILABLE (removed replica,
# JetStream orderer cut off) and WAIT_TIMEOUT (a PBFT-lite replica that held the request for its
# whole wait without ordering it: a censoring or cut-off primary again, or a channel that stalls;
# another replica may still order it, and a copy already in flight may still answer).
NEXT_ORDERER = frozenset({R.ERROR_REASON_ORDERING_UNAVAILABLE, R.ERROR_REASON_WAIT_TIMEOUT})
# Refusals a copy of the same transaction can cause at another orderer: the update an earlier
# attempt handed in was applied there first, so this one is stale (module docstring).
COPY_MAY_CAUSE = frozenset({R.ERROR_REASON_CONFIG_SEQUENCE_STALE})
# Send an envelope to one orderer: the future of its result (raises TransientError when it
# cannot even be queued: the stream's queue is full).
Send = Callable[[str], "asyncio.Future[Result]"]


@dataclass(frozen=True)
class Widening:
    """When and how far a submission spreads beyond its first orderer (module docstring).

    `deadline_s` None: never (one orderer, or the deadline is switched off). Otherwise, every
    `deadline_s` without an answer, `widen` more orderers are asked."""

    deadline_s: float | None = None
    widen: int = 1


def widening_for(ordering: int, orderers: int, deadline_s: float) -> Widening:
    """The channel's widening: none for one orderer (solo: nobody to widen to) or a deadline of
    0 (off); else f more orderers at each deadline (f = (n-1)//3, at least 1: for PBFT-lite f+1
    hold at least one correct replica; JetStream orderers fail by crashing, one more is enough)."""
    if orderers <= 1 or deadline_s <= 0 or ordering == config_pb2.ORDERING_TYPE_NONE:
        return Widening()
    return Widening(deadline_s, max(1, (orderers - 1) // 3))


class _Late(Exception):
    """The ordering deadline passed (internal: never leaves this module)."""


async def first_accepting(
    orderers: Sequence[str],
    start: int,
    send: Send,
    widening: Widening = Widening(),
    deadlines: FifoDeadlines | None = None,
    on_widen: Callable[[int], None] | None = None,
    stretch: Callable[[float], float] | None = None,
) -> tuple[int, Result]:
    """Submit to `orderers` from index `start` until one accepts or refuses the transaction
    itself; that orderer's index and result. Each orderer is asked at most once: the next one
    when an attempt fails, `widening.widen` more at each deadline (`on_widen(count)` is told).
    `stretch(deadline_s)` is the deadline in force, asked again whenever one passes, so a
    channel that slowed down meanwhile (`patience.py`) gets the rest of its longer deadline
    instead of a copy. Raises TransientError when none could take it."""
    if not orderers:
        raise TransientError(R.ERROR_REASON_ORDERING_UNAVAILABLE, "the channel names no orderer")
    race = _Race(orderers, start, send, asyncio.get_running_loop())
    race.launch(1)
    while race.flying:
        wait_s: float | None = None
        if race.held is not None:
            wait_s = race.held_until - race.loop.time()
            if wait_s <= 0:
                break
        elif widening.deadline_s is not None and race.untried:
            deadline_s = widening.deadline_s
            if stretch is not None:
                deadline_s = stretch(deadline_s)
            wait_s = race.since + deadline_s - race.loop.time()
            if wait_s <= 0:  # the deadline passed with every attempt still waiting
                widened = race.launch(widening.widen)
                if widened and on_widen is not None:
                    on_widen(widened)
                continue
        done = await _first_done(race.flying, wait_s, deadlines)
        if not done:
            continue  # (at the deadline: judged again above, maybe longer by now)
        answer = race.settle(done, widening.deadline_s or 0.0)
        if answer is not None:
            _leave(race.flying)
            return answer
    if race.held is not None:
        _leave(race.flying)
        return race.held
    raise (
        race.trouble[-1]
        if race.trouble
        else TransientError(R.ERROR_REASON_ORDERING_UNAVAILABLE, "no orderer answered")
    )


class _Race:
    """The attempts of one submission (`first_accepting`): who was asked, who still may be."""

    def __init__(
        self, orderers: Sequence[str], start: int, send: Send, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.orderers, self.send, self.loop = orderers, send, loop
        self.untried = deque((start + k) % len(orderers) for k in range(len(orderers)))
        self.flying: dict[asyncio.Future[Result], int] = {}
        self.trouble: list[TransientError] = []
        self.since = loop.time()  # of the last launch: each gets a whole deadline
        self.held: tuple[int, Result] | None = None  # a refusal a copy may have caused
        self.held_until = 0.0

    def launch(self, count: int) -> int:
        """Ask up to `count` more orderers; how many were asked."""
        launched = 0
        while self.untried and launched < count:
            index = self.untried.popleft()
            try:
                self.flying[self.send(self.orderers[index])] = index
                launched += 1
            except TransientError as exc:
                self.trouble.append(exc)
        if launched:
            self.since = self.loop.time()
        return launched

    def settle(
        self, done: list[asyncio.Future[Result]], hold_s: float
    ) -> tuple[int, Result] | None:
        """Judge settled attempts: the answer to return, or None to go on waiting (a failed
        attempt is replaced, unless a refusal is held: `COPY_MAY_CAUSE`)."""
        failed = 0
        for future in done:
            index = self.flying.pop(future)
            answer = orderer_answer(future, self.orderers[index])
            if isinstance(answer, TransientError):
                self.trouble.append(answer)
                failed += 1
            elif answer.accepted or answer.reason not in COPY_MAY_CAUSE:
                return index, answer
            elif self.held is None:
                self.held = index, answer
                self.held_until = self.loop.time() + hold_s
        if self.held is None:
            self.launch(failed)
        return None


def orderer_answer(future: asyncio.Future[Result], orderer_id: str) -> Result | TransientError:
    """A settled attempt's result, or why it moves the submission on."""
    try:
        result = future.result()
    except TransientError as exc:
        return exc
    if not result.accepted and result.reason in NEXT_ORDERER:
        return TransientError(
            result.reason, f"orderer {orderer_id} cannot order now: {result.message}"
        )
    return result


def _leave(flying: Collection[asyncio.Future[Any]]) -> None:
    """Stop waiting for `flying`: nobody will look at how they end."""
    for other in flying:
        other.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # (marks a failure seen: asyncio would log it as never retrieved)


async def _first_done(
    futures: Collection[asyncio.Future[Any]],
    timeout_s: float | None,
    deadlines: FifoDeadlines | None,
) -> list[asyncio.Future[Any]]:
    """The settled ones of `futures` once one is settled, or [] once `timeout_s` passed
    (through `deadlines`: one FIFO entry, not a timer handle)."""
    settled = [f for f in futures if f.done()]
    if settled:
        return settled
    woke: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_future: asyncio.Future[Any]) -> None:
        if not woke.done():
            woke.set_result(None)

    for future in futures:
        future.add_done_callback(wake)
    if timeout_s is not None:
        if deadlines is None:
            deadlines = FifoDeadlines()
        deadlines.add(woke, timeout_s, _Late)
    try:
        await woke
    except _Late:
        return []
    finally:
        for future in futures:
            future.remove_done_callback(wake)
    return [f for f in futures if f.done()]
