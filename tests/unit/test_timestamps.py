"""Wire timestamps are range-checked before use (core/timestamps.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

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


@given(
    seconds=st.integers(min_value=SECONDS_MIN - 10, max_value=SECONDS_MAX + 10),
    nanos=st.integers(min_value=-5, max_value=1_000_000_004),
)
@settings(max_examples=500, deadline=None)
def test_commit_path_conversion_is_protobufs_own(seconds: int, nanos: int) -> None:
    """`to_datetime` computes the conversion itself (one per header on every peer, the hot
    path); it must give exactly `ToDatetime(tzinfo=UTC)`'s value (nanos truncated to
    microseconds, aware UTC) for every representable time, and None for every other, so every
    peer still reaches the same certificate-validity verdict at the same header timestamp."""
    ts = Ts(seconds=seconds, nanos=nanos)
    try:
        expected: datetime | None = ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        expected = None
    got = to_datetime(ts)
    assert got == expected
    if got is not None and expected is not None:
        assert got.utcoffset() == expected.utcoffset() and got.microsecond == nanos // 1000
