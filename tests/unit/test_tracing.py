"""Tracing is off by default at no cost, and a transaction's spans share one trace
(`rpc/tracing.py`; the whole path over real nodes: tests/integration/test_tracing.py)."""

from __future__ import annotations

import subprocess
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dltmw.rpc.tracing import NO_TRACING, TRACEPARENT, Tracer, anchor, extract

TX = "ab" * 32


def test_off_by_default_imports_no_opentelemetry() -> None:
    """A node and a client built without an endpoint never import OpenTelemetry at all."""
    code = (
        "import sys\n"
        "import dltmw.runtime.node, dltmw.client.gateway\n"
        "from dltmw.rpc.tracing import NO_TRACING\n"
        "with NO_TRACING.transaction_span('x', 'ab' * 32) as md: assert md is None\n"
        "with NO_TRACING.server_span('/s/m', [('traceparent', 'x')]): pass\n"
        "NO_TRACING.record('commit', ['ab' * 32], 1, 2)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert not NO_TRACING.enabled


def memory_tracer() -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracer(provider, provider.get_tracer("test")), exporter


def test_the_spans_of_one_transaction_share_the_trace_its_tx_id_names() -> None:
    tracer, exporter = memory_tracer()
    with tracer.transaction_span("Endorse", TX) as metadata:
        assert metadata is not None
        sent = dict(metadata)
    assert sent[TRACEPARENT].startswith(f"00-{TX[:32]}-")
    with tracer.server_span("/dltmw.v1.GatewayService/Endorse", list(sent.items())):
        pass
    tracer.record("commit", [TX, "", "not-hex"], 10, 20, {"dltmw.block_number": 3})
    client, server, commit = exporter.get_finished_spans()  # none for the bad tx ids
    assert {s.context.trace_id for s in (client, server, commit)} == {int(TX[:32], 16)}
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert commit.parent is not None and commit.parent.span_id == int(TX[32:48], 16)
    assert (commit.start_time, commit.end_time) == (10, 20)
    assert commit.attributes is not None and commit.attributes["dltmw.tx_id"] == TX


def test_a_call_without_a_traceparent_gets_no_server_span() -> None:
    tracer, exporter = memory_tracer()
    with tracer.server_span("/dltmw.v1.OrdererService/Deliver", [("other", "x")]):
        pass
    with tracer.server_span("/dltmw.v1.OrdererService/Deliver", [(TRACEPARENT, "garbage")]):
        pass
    assert exporter.get_finished_spans() == ()
    assert anchor("ABC") is None
    assert extract([(TRACEPARENT, "00-" + "0" * 32 + "-" + "0" * 16 + "-01")]) is None
