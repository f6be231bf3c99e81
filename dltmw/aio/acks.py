"""Pairing a batched stream's responses with the callers waiting for them.

A `BatchedStream` (`aio/batched_stream.py`) sends many callers' items in one stream message and
must hand each caller its own result when the answer comes back. Two shapes of answer exist on
the dltmw wire, so there are two pairings:

* `InOrder` — ordered acks: the other side answers every stream message with exactly one
  response, in the order the messages were sent, holding one result per item of that message
  (Broadcast, Push, ProcessProposals). A FIFO of sent messages pairs them; a response that
  answers nothing, or holds the wrong number of results, is the other node breaking the
  protocol (`PeerError`), and ends the stream.
* `ByKey` — the other side names the item each outcome belongs to, answers as soon as each is
  ready (in any order and grouping), and may answer an item more than once (the gateway's
  Transact stream: a submission is answered when ordered and again when committed). A map from
  key to waiting future pairs them; `expect(key)` waits for an answer that no item of its own
  asked for (that second answer).

`outstanding` is what the stream's in-flight window bounds: sent messages not yet answered
(`InOrder`) or callers waiting for an outcome (`ByKey`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from dltmw.core.errors import PeerError
from dltmw.v1 import errors_pb2

Item = TypeVar("Item")
Result = TypeVar("Result")
Resp = TypeVar("Resp")
Resp_contra = TypeVar("Resp_contra", contravariant=True)


@dataclass(slots=True)
class Waiter(Generic[Item, Result]):
    """One caller's item and the future its result goes to."""

    item: Item
    future: asyncio.Future[Result]


class Acks(Protocol[Item, Result, Resp_contra]):
    """What a BatchedStream needs of a pairing (see the module docstring)."""

    @property
    def outstanding(self) -> int:
        """What the in-flight window counts."""
        ...

    def sent(self, batch: Sequence[Waiter[Item, Result]]) -> None:
        """`batch` left as one stream message."""

    def received(self, response: Resp_contra) -> int:
        """Settle the waiters `response` answers; returns how many it answered."""
        ...

    def discard(self, waiter: Waiter[Item, Result]) -> None:
        """The caller of `waiter` stopped waiting (deadline, cancelled)."""

    def drain(self) -> list[asyncio.Future[Any]]:
        """Every future still waiting for an answer, forgotten here (the stream broke)."""
        ...


def settle(future: asyncio.Future[Any], result: object) -> None:
    """Give `future` its result (an exception is raised to its caller), unless it is done."""
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class InOrder(Generic[Item, Result, Resp]):
    """Ordered acks: one response per stream message, in order (module docstring).

    `split(response, items)` returns one result (or exception) per item of the message.
    """

    def __init__(
        self, split: Callable[[Resp, Sequence[Item]], Sequence[Result | BaseException]]
    ) -> None:
        self._split = split
        self._sent: deque[Sequence[Waiter[Item, Result]]] = deque()

    @property
    def outstanding(self) -> int:
        """Stream messages sent and not answered yet."""
        return len(self._sent)

    def sent(self, batch: Sequence[Waiter[Item, Result]]) -> None:
        """Queue `batch` for the next response."""
        self._sent.append(batch)

    def received(self, response: Resp) -> int:
        """Settle the oldest unanswered message's waiters."""
        if not self._sent:
            raise PeerError(errors_pb2.ERROR_REASON_MALFORMED, "a response to no request")
        batch = self._sent[0]  # taken off only once answered: a bad answer leaves it waiting
        results = self._split(response, [w.item for w in batch])
        if len(results) != len(batch):
            raise PeerError(
                errors_pb2.ERROR_REASON_MALFORMED,
                f"{len(results)} results in the response to {len(batch)} items",
            )
        self._sent.popleft()
        for waiter, result in zip(batch, results, strict=True):
            settle(waiter.future, result)
        return len(batch)

    def discard(self, waiter: Waiter[Item, Result]) -> None:
        """Nothing to do: the entry keeps its place and leaves with its message's answer."""

    def drain(self) -> list[asyncio.Future[Any]]:
        """Every waiting future; forgotten here."""
        futures: list[asyncio.Future[Any]] = [w.future for b in self._sent for w in b]
        self._sent.clear()
        return futures


class ByKey(Generic[Item, Result, Resp]):
    """Acks by key (module docstring).

    `key(item)` names an item as the other side will; `split(response)` yields (key, result)
    for every outcome in a response. Outcomes for keys nobody waits for (late, forgotten) are
    ignored. The window counts sent items waiting for their answer; an expected second answer
    is not counted (its item was answered, and the other side bounds what it still holds).
    """

    def __init__(
        self,
        key: Callable[[Item], Hashable],
        split: Callable[[Resp], Iterable[tuple[Hashable, Result | BaseException]]],
    ) -> None:
        self._key = key
        self._split = split
        self._waiting: dict[Hashable, asyncio.Future[Any]] = {}  # sent items
        self._expected: dict[Hashable, asyncio.Future[Any]] = {}  # second answers

    @property
    def outstanding(self) -> int:
        """Sent items waiting for their outcome."""
        return len(self._waiting)

    def expect(self, key: Hashable) -> asyncio.Future[Any]:
        """A future for an outcome under `key` that no item asks for by itself."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._expected[key] = future
        return future

    def forget(self, future: asyncio.Future[Any]) -> None:
        """Stop waiting for the expected outcome `future` (its caller gave up)."""
        for key, expected in self._expected.items():
            if expected is future:
                del self._expected[key]
                return

    def sent(self, batch: Sequence[Waiter[Item, Result]]) -> None:
        """Wait for the outcomes of `batch`'s items (callers that gave up already are skipped)."""
        for waiter in batch:
            if not waiter.future.done():
                self._waiting[self._key(waiter.item)] = waiter.future

    def received(self, response: Resp) -> int:
        """Settle every outcome of `response` someone waits for."""
        answered = 0
        for key, result in self._split(response):
            future = self._waiting.pop(key, None) or self._expected.pop(key, None)
            if future is not None:
                settle(future, result)
                answered += 1
        return answered

    def discard(self, waiter: Waiter[Item, Result]) -> None:
        """Forget the waiter's key (if it still maps to the waiter's future)."""
        key = self._key(waiter.item)
        if self._waiting.get(key) is waiter.future:
            del self._waiting[key]

    def drain(self) -> list[asyncio.Future[Any]]:
        """Every waiting future, expected ones included; forgotten here."""
        futures = [*self._waiting.values(), *self._expected.values()]
        self._waiting.clear()
        self._expected.clear()
        return futures
