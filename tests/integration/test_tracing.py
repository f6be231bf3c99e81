"""One OpenTelemetry trace covers every node a transaction touched (issue 15 item 2).

An OTLP collector runs in the test (a grpc server implementing opentelemetry-proto's
TraceService on 127.0.0.1). Every node of the two-organisation network exports to it
(`[tracing]` in node.toml) and so does the SDK client (`otlp_endpoint`). One transaction under
the AND(Org1, Org2) policy must leave, in the trace whose id is its tx id's first 128 bits
(`rpc/tracing.py`): the client's calls, the gateway's server spans as children of the client's
(W3C traceparent in gRPC metadata), an endorsement on both peers, its ordering on the orderer
and its commit on both peers (the context anchored on the tx id, which survives batching and
ordering). Waits are deadlines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from dltmw.client import GatewayClient
from dltmw.ops.trace_sink import TraceSink, trace_sink

pytestmark = pytest.mark.integration
WAIT_S = 30.0


@pytest.fixture
async def collector() -> AsyncIterator[tuple[TraceSink, str]]:
    async with trace_sink() as found:
        yield found


EXPECTED = {
    ("user1.org1", "Endorse"),
    ("user1.org1", "Submit"),
    ("user1.org1", "CommitStatus"),
    ("peer0.org1", "dltmw.v1.GatewayService/Endorse"),
    ("peer0.org1", "dltmw.v1.GatewayService/Submit"),
    ("peer0.org1", "dltmw.v1.GatewayService/CommitStatus"),
    ("peer0.org1", "endorse"),
    ("peer0.org2", "endorse"),
    ("orderer0", "order"),
    ("peer0.org1", "commit"),
    ("peer0.org2", "commit"),
}


async def test_one_trace_covers_every_node_a_transaction_touched(collector, network) -> None:
    # (the collector first: it outlives the nodes, which flush their last spans as they stop)
    found, endpoint = collector
    extra = f'\n[tracing]\notlp_endpoint = "{endpoint}"\nexport_delay_ms = 100\n'
    net, _ = network(batch_ms=200, node_toml_extra=extra)
    client = await GatewayClient.connect(net, "user1.org1", pipelined=False, otlp_endpoint=endpoint)
    try:
        done = await client.submit_transaction("trades", "bank", "open", "A", "100")
    finally:
        await client.close()  # flushes the client's spans
    trace_id = bytes.fromhex(done.tx_id[:32])

    deadline = time.monotonic() + WAIT_S
    while not {(s.service, s.name) for s in found.traces[trace_id]} >= EXPECTED:
        missing = EXPECTED - {(s.service, s.name) for s in found.traces[trace_id]}
        assert time.monotonic() < deadline, f"spans missing from the trace: {sorted(missing)}"
        await asyncio.sleep(0.1)

    spans = found.traces[trace_id]
    by_name = {(s.service, s.name): s for s in spans}
    for method in ("Endorse", "Submit", "CommitStatus"):
        client_span = by_name[("user1.org1", method)]
        server_span = by_name[("peer0.org1", f"dltmw.v1.GatewayService/{method}")]
        assert server_span.parent_span_id == client_span.span_id, "traceparent not followed"
    for peer in ("peer0.org1", "peer0.org2"):
        commit = dict(by_name[(peer, "commit")].attributes)
        assert commit["dltmw.validation_code"] == "VALID"
        assert commit["dltmw.block_number"] == str(done.status.block_number)
        assert commit["dltmw.tx_id"] == done.tx_id
    other_traces = [t for t, s in found.traces.items() if t != trace_id and s]
    assert all(
        dict(s.attributes).get("dltmw.tx_id") != done.tx_id
        for t in other_traces
        for s in found.traces[t]
    ), "a span of this transaction landed in another trace"
