"""What one server lets each caller have in flight: calls per connection and per TLS identity,
request bytes per identity (the boundary's budget, `rpc/boundary.py`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from dltmw.core.errors import LimitExceeded
from dltmw.rpc.tls import caller_tls_cert

Ctx = grpc.aio.ServicerContext[Any, Any]


class BudgetLimits(Protocol):
    """The in-flight bounds (names as LIMIT_EXCEEDED reports them)."""

    @property
    def inflight_rpcs_per_connection_max(self) -> int:
        """Bound: calls at once from one connection."""
        ...

    @property
    def inflight_rpcs_per_identity_max(self) -> int:
        """Bound: calls at once from one TLS identity."""
        ...

    @property
    def inflight_bytes_per_identity_max(self) -> int:
        """Bound: request bytes in progress per TLS identity."""
        ...


@dataclass(frozen=True)
class Caller:
    """Who a call comes from, as the boundary counts it."""

    connection: str  # grpc's peer string: address and port of this connection
    identity: bytes  # SHA-256 of the caller's TLS certificate (b"" without one)

    @staticmethod
    def of(context: Ctx) -> Caller:
        """The caller of `context`'s call."""
        cert = caller_tls_cert(context)
        return Caller(context.peer(), hashlib.sha256(cert).digest() if cert else b"")

    def __str__(self) -> str:
        return f"{self.connection} (tls {self.identity[:6].hex() or 'none'})"


class Budget:
    """In-flight calls per connection and per identity, and request bytes per identity.

    Counters exist only while something is in flight, so the maps are bounded by the server's
    `maximum_concurrent_rpcs`. Single-threaded (the event loop): no lock.
    """

    def __init__(self, limits: BudgetLimits) -> None:
        self._limits = limits
        self._calls_of_connection: dict[str, int] = {}
        self._calls_of_identity: dict[bytes, int] = {}
        self._bytes_of_identity: dict[bytes, int] = {}

    def open_call(self, caller: Caller) -> None:
        """Count one more call of `caller`, or raise LimitExceeded (nothing counted)."""
        lim = self._limits
        if self._calls_of_connection.get(caller.connection, 0) >= (
            lim.inflight_rpcs_per_connection_max
        ):
            raise LimitExceeded(
                "inflight_rpcs_per_connection_max",
                lim.inflight_rpcs_per_connection_max,
                "too many calls in progress on this connection",
            )
        if self._calls_of_identity.get(caller.identity, 0) >= lim.inflight_rpcs_per_identity_max:
            raise LimitExceeded(
                "inflight_rpcs_per_identity_max",
                lim.inflight_rpcs_per_identity_max,
                "too many calls in progress for this TLS identity",
            )
        _add(self._calls_of_connection, caller.connection, 1)
        _add(self._calls_of_identity, caller.identity, 1)

    def close_call(self, caller: Caller) -> None:
        """Undo `open_call`."""
        _add(self._calls_of_connection, caller.connection, -1)
        _add(self._calls_of_identity, caller.identity, -1)

    def take_bytes(self, caller: Caller, size: int) -> None:
        """Charge `size` request bytes to `caller`'s identity, or raise LimitExceeded."""
        cap = self._limits.inflight_bytes_per_identity_max
        if self._bytes_of_identity.get(caller.identity, 0) + size > cap:
            raise LimitExceeded(
                "inflight_bytes_per_identity_max",
                cap,
                "too many request bytes in progress for this TLS identity",
            )
        _add(self._bytes_of_identity, caller.identity, size)

    def give_bytes(self, caller: Caller, size: int) -> None:
        """Undo `take_bytes`."""
        _add(self._bytes_of_identity, caller.identity, -size)

    @property
    def idle(self) -> bool:
        """Nothing is in flight (every counter returned to zero)."""
        return not (self._calls_of_connection or self._calls_of_identity or self._bytes_of_identity)


def _add(counters: dict[Any, int], key: Any, delta: int) -> None:
    value = counters.get(key, 0) + delta
    if value > 0:
        counters[key] = value
    else:
        counters.pop(key, None)


class Charged:
    """One call (and its request bytes) charged to a caller for the duration of a `with`."""

    def __init__(self, budget: Budget, caller: Caller, size: int) -> None:
        self._budget = budget
        self._caller = caller
        self._size = size

    def __enter__(self) -> None:
        self._budget.open_call(self._caller)
        try:
            self._budget.take_bytes(self._caller, self._size)
        except LimitExceeded:
            self._budget.close_call(self._caller)
            raise

    def __exit__(self, *exc: object) -> None:
        self._budget.give_bytes(self._caller, self._size)
        self._budget.close_call(self._caller)
