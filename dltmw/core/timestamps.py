"""Protobuf timestamps from the wire, checked before anything computes with them.

A `google.protobuf.Timestamp` on the wire can hold any int64 seconds and int32 nanos, but only
0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z with 0 <= nanos < 10^9 is a valid time
(`ToDatetime` raises ValueError outside it, and `datetime` arithmetic near the ends raises
OverflowError). Every timestamp that arrives from another party goes through this module first:
admission paths use `checked_datetime` (a ClientError the caller is told about); commit paths,
which must never raise, use `to_datetime` and turn None into a validation code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from dltmw.core.errors import ClientError
from dltmw.v1 import errors_pb2

SECONDS_MIN = -62_135_596_800  # 0001-01-01T00:00:00Z
SECONDS_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z
NANOS_LIMIT = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def in_range(ts: timestamp_pb2.Timestamp) -> bool:
    """Is `ts` a representable time (seconds and nanos both in range)?"""
    return SECONDS_MIN <= ts.seconds <= SECONDS_MAX and 0 <= ts.nanos < NANOS_LIMIT


def to_datetime(ts: timestamp_pb2.Timestamp) -> datetime | None:
    """`ts` as an aware UTC datetime, or None when it is out of range (never raises)."""
    if not in_range(ts):
        return None
    # `ToDatetime(tzinfo=UTC)`'s own arithmetic (epoch + timedelta, nanos truncated to
    # microseconds) without its range re-check and `astimezone` call, which is a no-op for UTC:
    # the same value, and every transaction's header goes through here on each peer twice.
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def checked_datetime(ts: timestamp_pb2.Timestamp, what: str) -> datetime:
    """`ts` as an aware UTC datetime; ClientError(INVALID_FIELD) naming `what` if out of range."""
    at = to_datetime(ts)
    if at is None:
        raise ClientError(
            errors_pb2.ERROR_REASON_INVALID_FIELD,
            f"{what} is not a valid time (seconds must be in [{SECONDS_MIN}, {SECONDS_MAX}],"
            f" nanos in [0, {NANOS_LIMIT}))",
        )
    return at
