"""OpenTelemetry tracing of a transaction across every node it touches (issue 15 item 2).

Off by default, at no cost: a `Tracer` made without an OTLP endpoint (`NO_TRACING`) holds
nothing, and every method returns at its first line; neither the OpenTelemetry API nor the SDK
is imported until a tracer is configured (`Tracer.otlp`). A configured tracer has its own
`TracerProvider` (never the process-global one: the simulator runs many nodes in one process,
each with its own `service.name`) that exports over OTLP/gRPC in batches.

How one trace covers a transaction. Two mechanisms, each where it fits:

1. W3C `traceparent` in gRPC metadata, for calls that carry one transaction: the SDK client sends
   its span's context on `Endorse`, `Submit` and `CommitStatus`, and the request boundary
   (`rpc/boundary.py`) makes the gateway's server span a child of it. Metadata belongs to a
   call, not to the items of a stream, so it cannot follow a transaction further.
2. From the gateway on, transactions travel in batches: many proposals in one
   `ProcessProposals` message, many envelopes in one `Broadcast` message, many transactions in
   one block delivered to and committed by every peer. There the transaction's context is
   anchored on its tx id: the trace id is the first 128 bits of the tx id, the parent span id the
   next 64 (`anchor`). The tx id is SHA-256 over at least 24 random bytes, so it is as random as a
   trace id must be; it is in the signed header every node already parses, so the context
   survives ordering, crashes and catch-up, and the wire contract is unchanged (no field added,
   nothing signed differs). The client's transaction span is itself a child of the anchor, so
   the client, the gateway (by metadata) and every endorser, orderer and committing peer (by
   the anchor) share one trace. A block's commit is one span per transaction of the block, with
   the block's commit times (`record`), tagged with the block number and validation code.

The anchor's own span is never exported (a trace viewer shows the spans under one missing
root). Pipelined clients (the `Transact` stream) carry no metadata per item: their gateway spans
are absent, the rest of the trace is the same.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)
TRACEPARENT = "traceparent"
TX_ID = re.compile(r"[0-9a-f]{64}")
Metadata = tuple[tuple[str, str], ...]
EXPORT_TIMEOUT_S = 5.0


class Tracer:
    """The spans of one node or client (see the module docstring). Without an OpenTelemetry
    tracer (the default) every method does nothing."""

    def __init__(self, provider: Any = None, tracer: Any = None) -> None:
        self._provider = provider
        self._tracer = tracer

    @property
    def enabled(self) -> bool:
        """True when spans are recorded and exported."""
        return self._tracer is not None

    @classmethod
    def otlp(cls, endpoint: str, service_name: str, export_delay_ms: int = 1000) -> Tracer:
        """A tracer exporting to the OTLP/gRPC collector at `endpoint` ("host:port", plaintext)
        as `service_name`; the SDK is imported here and only here."""
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=export_delay_ms)
        )
        return cls(provider, provider.get_tracer("dltmw"))

    def shutdown(self) -> None:
        """Export what is buffered and stop (blocking, at most ~EXPORT_TIMEOUT_S; idempotent)."""
        provider, self._provider, self._tracer = self._provider, None, None
        if provider is not None:
            provider.shutdown()

    @contextlib.contextmanager
    def transaction_span(self, name: str, tx_id: str) -> Iterator[Metadata | None]:
        """A client span in `tx_id`'s trace, current while the block runs; yields the metadata
        to send on the calls made for it (None when tracing is off)."""
        tracer = self._tracer
        parent = anchor(tx_id) if tracer is not None else None
        if tracer is None or parent is None:
            yield None
            return
        attributes = {"dltmw.tx_id": tx_id}
        with tracer.start_as_current_span(name, context=parent, attributes=attributes):
            yield current_metadata()

    @contextlib.contextmanager
    def server_span(self, path: str, metadata: Iterable[tuple[str, Any]] | None) -> Iterator[None]:
        """The server span of a unary call whose caller sent a `traceparent` (none otherwise:
        the nodes' own traffic is traced per transaction, not per call)."""
        tracer = self._tracer
        parent = extract(metadata) if tracer is not None and metadata else None
        if tracer is None or parent is None:
            yield
            return
        from opentelemetry.trace import SpanKind

        with tracer.start_as_current_span(path.lstrip("/"), context=parent, kind=SpanKind.SERVER):
            yield

    def record(
        self,
        name: str,
        tx_ids: Sequence[str],
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, str | int] | None = None,
        per_tx: Sequence[Mapping[str, str | int]] | None = None,
    ) -> None:
        """One span per transaction of a batch (a ProcessProposals message, a Broadcast
        message, a block), each in its transaction's trace, all with the batch's times
        (`time.time_ns()` values)."""
        tracer = self._tracer
        if tracer is None:
            return
        for i, tx_id in enumerate(tx_ids):
            parent = anchor(tx_id)
            if parent is None:
                continue  # no transaction id (a config block) or a malformed one
            attrs: dict[str, str | int] = {"dltmw.tx_id": tx_id, **(attributes or {})}
            if per_tx is not None:
                attrs.update(per_tx[i])
            span = tracer.start_span(name, context=parent, start_time=start_ns, attributes=attrs)
            span.end(end_time=end_ns)


NO_TRACING = Tracer()


def now_ns() -> int:
    """Wall-clock time for span timestamps (OpenTelemetry's unit: ns since the epoch)."""
    return time.time_ns()


def anchor(tx_id: str) -> Any:
    """The OpenTelemetry context every span of transaction `tx_id` descends from: trace id the
    first 32 hex digits of the tx id, span id the next 16 (None for a malformed tx id)."""
    if not TX_ID.fullmatch(tx_id):
        return None
    from opentelemetry import trace

    span_id = int(tx_id[32:48], 16) or 1  # (0 is the invalid span id)
    context = trace.SpanContext(
        trace_id=int(tx_id[:32], 16),
        span_id=span_id,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


def current_metadata() -> Metadata:
    """The W3C trace context of the current span as gRPC metadata (empty without one)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return tuple(carrier.items())


def extract(metadata: Iterable[tuple[str, Any]]) -> Any:
    """The remote context a call's metadata carries in `traceparent`, or None."""
    carrier = {k: v for k, v in metadata if k in (TRACEPARENT, "tracestate") and isinstance(v, str)}
    if TRACEPARENT not in carrier:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None
