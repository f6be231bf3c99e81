"""Wire timestamps are range-checked before use (core/timestamps.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2

from dltmw.core.errors import ClientError
from dltmw.core.timestamps import SECONDS_MAX, SECONDS_MIN, checked_datetime, to_datetime

Ts = timestamp_pb2.Timestamp


@pytest.mark.parametrize(
    "seconds,nanos",
    [
        (0, 1_000_000_000),
        (0, -1),
        (SECONDS_MAX + 1, 0),
        (SECONDS_MIN - 1, 0),
        (2**62, 0),
        (-(2**63), 0),
    ],
    ids=["nanos-1e9", "nanos-negative", "after-9999", "before-0001", "2^62", "int64-min"],
)
def test_out_of_range_is_none_and_invalid_field(seconds: int, nanos: int) -> None:
    ts = Ts(seconds=seconds, nanos=nanos)
    assert to_datetime(ts) is None
    with pytest.raises(ClientError) as exc:
        checked_datetime(ts, "header.timestamp")
    assert exc.value.reason_name == "INVALID_FIELD"
    assert "header.timestamp" in str(exc.value)


@pytest.mark.parametrize(
    "seconds,nanos", [(0, 0), (SECONDS_MAX, 999_999_999), (SECONDS_MIN, 0), (1_700_000_000, 5)]
)
def test_in_range_converts(seconds: int, nanos: int) -> None:
    ts = Ts(seconds=seconds, nanos=nanos)
    at = to_datetime(ts)
    assert at is not None and at.tzinfo is UTC
    assert at == checked_datetime(ts, "t")
    assert at == ts.ToDatetime(tzinfo=UTC)


def test_now_round_trips() -> None:
    ts = Ts()
    now = datetime.now(UTC)
    ts.FromDatetime(now)
    assert to_datetime(ts) == now
