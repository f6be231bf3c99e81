"""Write transactions that survive transient storage faults: retried whole, then a loud stop.

Why at the store, not in the loops above it. Every durable write of a node is ONE sqlite
transaction (`BEGIN IMMEDIATE` … `COMMIT`). When one fails, it is rolled back here before anything
else happens, so the database is exactly as before and running the same transaction again is safe;
nobody above has been told anything yet (persist, then send, then reply). Retrying a whole driver
loop instead would be wrong: its core has already moved on to the state the failed write was to
make durable. So the retry lives here, around the one transaction, and the loops above see a write
that was slow — or, once the budget is spent, `StorageUnavailable`, which stops the node (see
`aio/tasks.py`); its keeper restarts it from what is durable.

Transient: sqlite busy/locked (another process holds the write lock longer than the connection's
busy timeout), I/O errors that may pass, and a full disk (someone may free space). Everything else
(a constraint violation, a corrupt file, a programming error) is not retried.

Attempts back off exponentially with jitter (tenacity), capped at `RetryPolicy.max_s`, for at most
`RetryPolicy.budget_s`; each failure is logged as a warning at once, then at most once per
`LOG_EVERY_S` per transaction name (with the number suppressed), so a long outage cannot flood
the log. Failpoints (`failpoints.py`) fire inside the transaction, before COMMIT.

Reads are not retried here: a read has no effect to keep, and whoever asked for it — a client,
through a servicer; a node's loop — is the one to try again. So a read that fails with a fault
that may pass (`read_sync`) is surfaced as `TransientError(STORAGE_UNAVAILABLE)`: a client gets
UNAVAILABLE with that reason (retryable, nothing changed) instead of a bare UNKNOWN, and a node's
loop treats it as any transient failure. Failpoints `<store>.read` fire before each read.

An ambiguous COMMIT failure (an I/O error after the data reached the disk) makes the retry hit
the transaction's own primary key (a block number, a queue sequence, a spent state) — an
IntegrityError, which is not transient, so the node stops and restarts from what is durable.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from dltmw.aio.throttle import LogThrottle
from dltmw.core.errors import TransientError
from dltmw.ledger import failpoints
from dltmw.v1 import errors_pb2

logger = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_CODES = frozenset({5, 6, 10, 13})  # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL
TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
)


class StorageUnavailable(Exception):
    """A write kept failing with transient errors for the whole retry budget: stop the node."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a store retries one write transaction (from node.toml `[storage]`)."""

    first_s: float = 0.05
    max_s: float = 2.0
    budget_s: float = 60.0


DEFAULT_RETRY = RetryPolicy()


def is_transient_storage_error(exc: BaseException) -> bool:
    """Is `exc` a sqlite failure that may pass (busy/locked, I/O, disk full)?"""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in TRANSIENT_CODES
    return str(exc).lower().startswith(TRANSIENT_MESSAGES)


_THROTTLE = LogThrottle()


def _warn(name: str, state: RetryCallState) -> None:
    suppressed = _THROTTLE.admit(name)
    if suppressed is None or state.outcome is None:
        return
    exc = state.outcome.exception()
    delay = state.upcoming_sleep
    more = f" ({suppressed} similar warnings suppressed)" if suppressed else ""
    logger.warning(
        "storage write %s failed: %s; retrying in %.2f s (attempt %d, %.1f s so far)%s",
        name,
        exc,
        delay,
        state.attempt_number,
        state.seconds_since_start or 0.0,
        more,
    )


def _settings(
    name: str, policy: RetryPolicy, transient: Callable[[BaseException], bool]
) -> dict[str, object]:
    return {
        "retry": retry_if_exception(transient),
        "stop": stop_after_delay(policy.budget_s),
        "wait": wait_exponential_jitter(
            multiplier=policy.first_s, max=policy.max_s, jitter=policy.first_s
        ),
        "before_sleep": lambda state: _warn(name, state),
        "reraise": True,
    }


def _exhausted(name: str, policy: RetryPolicy, exc: BaseException) -> StorageUnavailable:
    return StorageUnavailable(
        f"storage write {name} kept failing for {policy.budget_s:.0f} s: {exc}"
    )


def write_sync(
    conn: sqlite3.Connection,
    name: str,
    body: Callable[[sqlite3.Connection], T],
    policy: RetryPolicy = DEFAULT_RETRY,
) -> T:
    """`body` inside BEGIN IMMEDIATE … COMMIT on a sqlite3 connection (a store's own thread),
    retried whole on transient errors; raises StorageUnavailable when the budget is spent."""

    def attempt() -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
            failpoints.hit(name)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                    conn.execute("ROLLBACK")
            raise
        return result

    return retried(name, attempt, policy, is_transient_storage_error)


def retried(
    name: str,
    attempt: Callable[[], T],
    policy: RetryPolicy,
    transient: Callable[[BaseException], bool],
) -> T:
    """`attempt()` (one whole transaction that rolls itself back when it fails), retried while
    it fails with an error `transient` accepts; StorageUnavailable once the budget is spent.
    The one retry loop of every store, whatever its database (`pg_database.py` too).

    The first attempt runs before any retry machinery is built: tenacity's objects cost ~25-50
    µs per call on this host, on a store's thread that holds the GIL meanwhile, for every write
    of every store (three per lone bus message, benchmarks/RESULTS.md, branch bus7), and nearly
    every write succeeds at once. A first attempt that fails with a transient error enters the
    tenacity loop as its attempt 1 (replayed, not run again): the same waits and warnings; the
    budget counts from that first failure (the attempt's own duration is not measured: a write
    that succeeds reads no clock, so a simulated run's stores read none either)."""
    try:
        return attempt()
    except Exception as exc:
        if not transient(exc):
            raise
        first: BaseException | None = exc

    def again() -> T:
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return attempt()

    try:
        for tried in Retrying(**_settings(name, policy, transient)):  # type: ignore[arg-type]
            with tried:
                return again()
    except Exception as exc:
        if transient(exc):
            raise _exhausted(name, policy, exc) from exc
        raise
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


def read_sync(
    store: str,
    read: Callable[[], T],
    transient: Callable[[BaseException], bool] = is_transient_storage_error,
) -> T:
    """`read()` (on the store's thread); a failure `transient` accepts becomes
    `TransientError(STORAGE_UNAVAILABLE)` naming `store` (see the module docstring)."""
    try:
        failpoints.hit(f"{store}.read")
        return read()
    except Exception as exc:
        if not transient(exc):
            raise
        raise TransientError(
            errors_pb2.ERROR_REASON_STORAGE_UNAVAILABLE,
            f"storage read of {store} failed: {exc}",
            {"store": store},
        ) from exc
