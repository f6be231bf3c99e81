"""Typed errors that say whose fault a failure was (h11 style).

Every error carries an `ErrorReason` from the wire contract. Subclasses separate caller misuse
(`ClientError`: the request is wrong and retrying it unchanged will fail again), misbehaviour of
another node (`PeerError`) and passing trouble (`TransientError`: retry later).
`dltmw/rpc/status.py`
alone maps reasons to gRPC status codes. Domain outcomes that are not failures of a request —
a transaction that commits as MVCC_READ_CONFLICT — are values, never exceptions. Broken
invariants are `InvariantViolation`, which nothing may catch and map to a status.
"""

from __future__ import annotations

from collections.abc import Mapping

from dltmw.v1 import errors_pb2

Reason = errors_pb2.ErrorReason


class DltmwError(Exception):
    """Base of every expected failure; `reason` is an `ErrorReason` value, `metadata` goes into
    the ErrorInfo of the status (e.g. which limit was exceeded)."""

    def __init__(
        self, reason: int, message: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})

    @property
    def reason_name(self) -> str:
        """Short reason name, e.g. "BAD_SIGNATURE"."""
        return Reason.Name(self.reason).removeprefix("ERROR_REASON_")  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.reason_name}: {self.message}"


class ClientError(DltmwError):
    """The caller sent something wrong; the same request will fail again."""


class PeerError(DltmwError):
    """Another node answered wrongly (bad signature, mismatching result)."""


class TransientError(DltmwError):
    """Overload, shutdown or an unreachable node; the request may be retried."""


class Overloaded(TransientError):
    """A bounded queue of this node is full: the caller may retry later (RESOURCE_EXHAUSTED).
    Whoever raises it also counts it (`runtime.driver.Driver.overloaded`)."""

    def __init__(self, message: str) -> None:
        super().__init__(errors_pb2.ERROR_REASON_OVERLOADED, message)


class LimitExceeded(ClientError):
    """A request exceeds one of the node's input bounds (`runtime.config.Limits`), found before any
    work was done on it. The status names the bound: metadata {"limit": name, "max": value}."""

    def __init__(self, limit: str, maximum: int, message: str) -> None:
        super().__init__(
            errors_pb2.ERROR_REASON_LIMIT_EXCEEDED,
            f"{message} (limit {limit} = {maximum})",
            {"limit": limit, "max": str(maximum)},
        )
        self.limit = limit
        self.maximum = maximum


class InvariantViolation(Exception):
    """A broken internal invariant: the node must stop rather than continue wrongly."""


def reason_value(name: str) -> int:
    """ErrorReason value for a short name such as "NOT_A_MEMBER"."""
    return int(Reason.Value("ERROR_REASON_" + name))
