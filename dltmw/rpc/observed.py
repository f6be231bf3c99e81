"""How the request boundary reports each RPC: final status code and duration, however it ends.

Kept apart from `boundary.py` (which enforces bounds) because it only watches: the boundary wraps
every servicer call in `Observed`, which tells the node's metrics (`runtime/metrics.py`, through
the `RpcObserver` protocol declared here, on the consumer's side) the method, the status code
the caller saw and the time from the request's arrival to that status.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


class RpcObserver(Protocol):
    """Where the boundary reports each RPC's end (the node's metrics, `runtime/metrics.py`;
    declared here, on the consumer's side, like `Limits`)."""

    def observe_rpc(self, path: str, code: str, seconds: float) -> None:
        """One call of `path` ended with status `code` (a grpc.StatusCode name)."""
        ...


class Observed:
    """Reports one call's final status code and duration to the observer, however it ends:
    returned (the code the servicer set, else OK), aborted (the abort's code), cancelled or left
    by the client (CANCELLED), or a bug's exception (UNKNOWN, which grpc answers too)."""

    def __init__(self, observer: RpcObserver | None, path: str, context: Ctx) -> None:
        self._observer = observer
        self._path = path
        self._context = context
        self._start = time.perf_counter()

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if self._observer is not None:
            seconds = time.perf_counter() - self._start
            self._observer.observe_rpc(self._path, final_code(self._context, exc), seconds)


def final_code(context: Ctx, exc: BaseException | None) -> str:
    """The status code name a call ends with, `exc` being what left its handler (if anything)."""
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        code: Any = context.code()
        if code is None:
            return "OK"
        if isinstance(code, grpc.StatusCode):
            return code.name
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "UNKNOWN"
