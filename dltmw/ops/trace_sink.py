"""An OTLP/gRPC trace collector in the calling process: every exported span, kept by trace id.

Why: reading the spans the nodes and the SDK export (docs/operations.md "Tracing") needs no
OpenTelemetry collector to install and run — opentelemetry-proto's `TraceService` (a dependency
already, through the OTLP exporter) is all an exporter talks to. The tracing integration test
checks one trace's shape with it, and `benchmarks/latency_trace.py` splits transactions' latency
at their spans. Local diagnosis only: plaintext on 127.0.0.1, and it keeps every span it is
sent (a test's or a benchmark's, bounded by the run that produces them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class Seen:
    """One span as exported: its service (the node or client id), name, ids, times (Unix ns)
    and attributes (values as text)."""

    service: str
    name: str
    span_id: bytes
    parent_span_id: bytes
    start_ns: int
    end_ns: int
    attributes: tuple[tuple[str, str], ...]


class TraceSink(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every exported span, by trace id."""

    def __init__(self) -> None:
        self.traces: dict[bytes, list[Seen]] = defaultdict(list)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attrs = tuple(
                        (a.key, a.value.string_value or str(a.value.int_value))
                        for a in span.attributes
                    )
                    self.traces[span.trace_id].append(
                        Seen(
                            service,
                            span.name,
                            span.span_id,
                            span.parent_span_id,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            attrs,
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


@asynccontextmanager
async def trace_sink() -> AsyncIterator[tuple[TraceSink, str]]:
    """A running sink on 127.0.0.1 and its "host:port" (an `otlp_endpoint`); stopped on exit."""
    server = grpc.aio.server()
    sink = TraceSink()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield sink, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)
