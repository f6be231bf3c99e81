"""`dltmw bench --experiment bus` runs end to end on a small configuration: every message
published is delivered (the throughput figure counts deliveries, not publishes), the stalled
subscriber's round completes, and the report names machine, command and figures."""

from __future__ import annotations

import asyncio

import pytest

from dltmw.bench.bus import TRANSPORTS, BusBenchConfig, report, run
from dltmw.sdk.network import TransportName


@pytest.mark.parametrize("transport", ["grpc", "inproc"])
def test_bus_bench_small_run(transport: TransportName) -> None:
    cfg = BusBenchConfig(
        latency_messages=5, interval_ms=1, publishers=2, batch=10, seconds=0.5, transport=transport
    )
    result = asyncio.run(run(cfg, rounds=1))
    assert result["latency"]["messages"] == 5
    assert result["throughput_per_s"]["median"] > 0
    assert result["throughput_with_stalled_subscriber_per_s"]["median"] > 0
    text = report(result, "dltmw bench --experiment bus")
    assert "command: dltmw bench --experiment bus" in text and "load average" in text
    assert "messages/s" in text and "p50" in text
    assert f"transport: {TRANSPORTS[transport]}" in text  # what was measured
