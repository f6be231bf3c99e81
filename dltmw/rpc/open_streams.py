"""The server streams a node has open, so that stopping the node can end them at once.

Why: grpc's `server.stop(grace)` lets running calls finish within the grace period, but a
subscription (Deliver, Events, Resend) never finishes by itself while its caller lives. An
orderer stopped while its peers run used to wait the whole grace (5 s) for their Deliver
streams. On stop the node calls `end()`: every subscription still open ends now with
UNAVAILABLE / SHUTTING_DOWN (the caller reconnects, to this node after its restart or to
another), and a subscription asked for after that is refused the same way.

Server-streaming calls with one request are ended at any moment: each message they send is
complete in itself, so nothing is half done. Of the bidirectional streams, those a sender
leaves open while idle (`ENDED_WHILE_IDLE`: Push, NotariseStream) are held by the boundary
while they wait for a request, so they are ended there and read no request after the stop
began: the boundary raises the refusal where the request was awaited, so a servicer that
handles several requests at once (Push, `aio/coalesce.pipelined`) still answers those in
flight first. The others (Broadcast, Transact, ProcessProposals) keep the grace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from dltmw.core.errors import TransientError
from dltmw.v1 import errors_pb2

# Bidirectional methods ended while they wait for a request (module docstring): what they have
# in flight is answered, then the stream ends with SHUTTING_DOWN.
ENDED_WHILE_IDLE = frozenset(
    {"/dltmw.v1.PrivacyManagerService/Push", "/dltmw.v1.NotaryService/NotariseStream"}
)


def stopping() -> TransientError:
    """The refusal of a stream ended (or asked for) while its node stops."""
    return TransientError(errors_pb2.ERROR_REASON_SHUTTING_DOWN, "the node is stopping")


class OpenStreams:
    """The tasks serving open subscriptions of one server (see the module docstring)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._writing: set[asyncio.Task[object]] = set()
        self.ended = False

    @contextmanager
    def held(self) -> Iterator[None]:
        """Run one subscription; refused at once if the node already stops."""
        if self.ended:
            raise stopping()
        task = asyncio.current_task()
        if task is None:  # (grpc always runs a handler in a task)
            yield
            return
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A message of a held subscription is being written: `end()` does not cancel the task
        now, and the caller checks `ended` once the write is done. A cancel that lands inside
        grpc's write leaves its send operation in flight, and the abort that reports
        SHUTTING_DOWN then fails (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS): the call stayed open
        until the server's grace ran out (seen 1 run in ~20 under load)."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self._writing.add(task)
        try:
            yield
        finally:
            self._writing.discard(task)

    def ended_here(self) -> bool:
        """After a CancelledError in a held subscription: was it `end()`'s? Then the caller
        reports SHUTTING_DOWN instead of propagating the cancellation (and the task's cancel
        request is withdrawn so the report can be awaited)."""
        task = asyncio.current_task()
        if not self.ended or task is None or not task.cancelling():
            return False
        task.uncancel()
        return True

    def end(self) -> int:
        """End every open subscription now; refuse new ones. Returns how many were open."""
        self.ended = True
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            if task not in self._writing:  # a writing task stops after its write (`writing`)
                task.cancel()
        return len(tasks)
