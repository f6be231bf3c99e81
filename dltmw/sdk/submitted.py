"""`Submitted`: the handle of a transaction `Client.submit_async` endorsed and handed on.

Why a handle (Fabric Gateway's `SubmittedTransaction`): `await client.submit(...)` returns the
commit or a typed error, but a caller that cancels that wait — its own timeout, a shutdown —
after the envelope went to a gateway's order step loses the tx id with the frame, so it can no
longer learn whether its transaction committed (and a second `submit` would be a second
transaction). The handle exists, with its tx id, before anything is ordered, and the ordering
runs in a task the `Client` owns, not in the caller's frame: cancelling `committed()` cancels
the wait only (`asyncio.shield`); the transaction carries on, and `committed()` or `status()`
can be asked again. A failure nobody waits for is logged with its tx id (never lost silently).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from dltmw.sdk.errors import CommitFailed, CommitUnknown, Unavailable
from dltmw.sdk.results import Committed, TxStatus

__all__ = ["Endorsed", "Submitted"]
logger = logging.getLogger(__name__)

# `Client.commit_status(channel_id, tx_id, wait_s)`
StatusQuery = Callable[[str, str, float], Awaitable[TxStatus | None]]


class Endorsed(NamedTuple):
    """A transaction endorsed and ready to be ordered (what `resume_submit` needs too)."""

    tx_id: str
    payload: bytes  # the prepared transaction the gateway signs into its envelope
    result: bytes  # the contract function's answer at endorsement
    creator: bytes  # as the tx id names it (in full, or by reference)


class Submitted:
    """A transaction handed on by `Client.submit_async` (module docstring).

    `tx_id` never changes: what a caller stored is what `status()` and
    `Client.commit_status` report on, and a definite non-VALID status is final. A creator
    reference refused after the hand-off (docs/embedding.md "Creator by reference") ends the
    handle with that refusal, `reference_refused` set: nothing was applied, and the caller
    submits the intent again (a new transaction; `Client.submit` does so itself)."""

    def __init__(self, channel_id: str, endorsed: Endorsed, query: StatusQuery) -> None:
        self.channel_id = channel_id
        self.endorsed = endorsed
        self.final: TxStatus | None = None  # the commit status once the ordering task saw it
        self._query = query
        self._task: asyncio.Task[Committed] | None = None
        self._waiting = 0  # callers in `committed()` (a failure nobody awaits is logged)
        self._abandoned = False  # a wait was cancelled: the outcome is logged, VALID too
        self.reference_refused = False  # the creator reference was refused: nothing applied
        self._reported = False  # the outcome was logged (`_report`)

    @property
    def tx_id(self) -> str:
        """The tx id of the transaction in flight (class docstring)."""
        return self.endorsed.tx_id

    @property
    def result(self) -> bytes:
        """The contract function's answer at endorsement (what `Committed.payload` will be)."""
        return self.endorsed.result

    def start(self, task: asyncio.Task[Committed]) -> None:
        """Own the task that orders the transaction and waits for its commit (`Client`)."""
        self._task = task
        task.add_done_callback(self._ended)

    def done(self) -> bool:
        """Is the outcome known here (committed, failed, or given up as `CommitUnknown`)?"""
        return self._task is not None and self._task.done()

    async def committed(self) -> Committed:
        """Wait for the commit: `Committed` if VALID; `CommitFailed`, `CommitUnknown` (finish it
        with `Client.resume_submit`) or the refusal of a step otherwise, as `Client.submit`.
        Cancelling this wait leaves the transaction going; ask again. If the `Client` was
        closed before the outcome was known: `CommitUnknown` (it may be ordered)."""
        task = self._task
        if task is None:
            raise RuntimeError("the handle was not started by Client.submit_async")
        self._waiting += 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                self._abandoned = True
                if task.done() and self._waiting == 1:  # it ended in the loop turn this
                    # wait was cancelled in: nobody else waits for its outcome
                    self._report(task)  # (`_ended` may have run while this wait counted)
                raise  # this wait was cancelled: the transaction carries on
            raise self._unknown("the client was closed before its commit was seen") from None
        finally:
            self._waiting -= 1

    async def status(self, wait_s: float = 0.0) -> TxStatus | None:
        """The transaction's commit status: known here once the task saw it, else asked of a
        gateway (`Client.commit_status`: waits up to `wait_s` for a commit not seen yet).
        None is never final: not committed (yet) — it may still commit while the handle is not
        `done()`, or after a `CommitUnknown` until its envelope's timestamp window has passed
        (`Client.resume_submit` settles it)."""
        if self.final is not None:
            return self.final
        return await self._query(self.channel_id, self.tx_id, wait_s)

    def _unknown(self, message: str) -> CommitUnknown:
        e = self.endorsed
        cause = Unavailable(message, code="CANCELLED")
        return CommitUnknown(cause, self.channel_id, e.tx_id, e.payload, e.result, e.creator)

    def _ended(self, task: asyncio.Task[Committed]) -> None:
        """Retrieve the outcome; one nobody waits for is logged, with the tx id (the waiting
        caller, if any, gets it from `committed()`)."""
        if not self._waiting:
            self._report(task)
        elif not task.cancelled():
            task.exception()  # (retrieved: the waiter gets it)

    def _report(self, task: asyncio.Task[Committed]) -> None:
        """Log the outcome of `task` once, with the tx id: a failure, or a VALID commit whose
        wait was cancelled (its caller may have lost the tx id with its frame)."""
        if self._reported:
            return
        self._reported = True
        if task.cancelled():
            logger.warning(
                "transaction %s on %s: the client closed before its commit was seen",
                self.tx_id,
                self.channel_id,
            )
            return
        error = task.exception()
        if error is None:
            if self._abandoned:
                logger.info(
                    "transaction %s on %s committed VALID (its wait was cancelled)",
                    self.tx_id,
                    self.channel_id,
                )
            return
        level = logging.INFO if isinstance(error, CommitFailed) else logging.WARNING
        logger.log(
            level,
            "transaction %s on %s (nobody waits for it): %s",
            self.tx_id,
            self.channel_id,
            error,
        )
