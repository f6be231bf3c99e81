"""The boundary every request crosses before a servicer sees it: bounds first, then parsing.

Why this exists. With the generated `add_*Servicer_to_server`, grpc parses each request before any
dltmw code runs. Bytes that do not parse cost a ~1 KB traceback in the log per request (grpc logs
"Exception deserializing request!") and the caller gets no dltmw reason; a well-formed request of
200,000 one-byte envelopes reaches the servicer whole, which then allocates, parses and checks
every item (+300 MB and seconds of CPU for one 586 KB message). So services are registered here,
from their descriptors, with a deserializer that never raises (it keeps the raw bytes), and every
call goes through one wrapper that, in this order and before any work on the request's content:

1. refuses a request larger than its method's cap (`Limits.query_bytes_max` for RPCs that carry
   only a signed query; grpc's own `max_message_bytes` for the rest);
2. charges the caller's in-flight budget (`rpc/budget.Budget`): calls at once per connection
   and per caller identity (the SHA-256 of its TLS certificate, so one client cannot hide
   behind several connections), and request bytes in progress per identity;
3. parses the request: bytes that do not parse are INVALID_ARGUMENT / MALFORMED, logged as ONE
   line per caller per `Limits.malformed_log_interval_s` (with a count of what was suppressed),
   never with a traceback;
4. bounds every repeated field of the request (`items_per_request_max` entries of at most
   `item_bytes_max` bytes each) — counting entries of an already decoded message costs nothing,
   parsing or verifying them is what costs, and that happens only after this check.

A bound that is exceeded is RESOURCE_EXHAUSTED / LIMIT_EXCEEDED with ErrorInfo metadata
{"limit": <Limits field name>, "max": <value>}. Messages of a request stream go through steps 1,
3 and 4 one by one; the stream as a whole holds one call of the budget for its life, and each
message's bytes from when the servicer takes it until it asks for the next one (how many a
servicer works on at once is its own pipelining depth). Unexpected exceptions are NOT caught
here: they are bugs, surface as UNKNOWN, and the fuzzer (tests/integration/test_fuzz_rpc.py)
fails on them. When the node stops, open subscriptions (and sequential bidirectional streams
waiting for a request) end at once with SHUTTING_DOWN (`rpc/open_streams.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import DecodeError, Message

from dltmw.aio.throttle import LogThrottle
from dltmw.core.errors import ClientError, DltmwError, LimitExceeded
from dltmw.rpc.budget import Budget, BudgetLimits, Caller, Charged
from dltmw.rpc.observed import Observed, RpcObserver
from dltmw.rpc.open_streams import ENDED_WHILE_IDLE, OpenStreams, stopping
from dltmw.rpc.status import abort, detached
from dltmw.rpc.tracing import NO_TRACING, Tracer
from dltmw.v1 import errors_pb2

logger = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]

# RPCs whose request is only a signed query or a status request: capped at query_bytes_max.
QUERY_METHODS = frozenset(
    {
        "/dltmw.v1.GatewayService/CommitStatus",
        "/dltmw.v1.GatewayService/Events",
        "/dltmw.v1.OrdererService/Deliver",
        "/dltmw.v1.AdminService/NodeStatus",
        "/dltmw.v1.AdminService/ListInstalledContracts",
        "/dltmw.v1.PrivacyManagerService/Receive",
        "/dltmw.v1.PrivacyManagerService/Resend",
        "/dltmw.v1.PrivacyManagerService/PrivateStateHash",
        "/dltmw.v1.PrivacyManagerService/ValidatePrivateState",
        "/dltmw.v1.PrivacyManagerService/Recover",
        "/dltmw.v1.PrivacyManagerService/PendingDeliveries",
        "/dltmw.v1.PrivacyManagerService/AbandonDelivery",
        "/dltmw.v1.VaultService/QueryStates",
        "/dltmw.v1.FlowService/FetchTransaction",
        "/dltmw.v1.CrossChainService/GetCommitProof",
        "/dltmw.v1.CrossChainService/GetConfigBlocks",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)
CALLERS_REMEMBERED_MAX = 1024  # callers the malformed-input log keeps a last-report time for


class Limits(BudgetLimits, Protocol):
    """The input bounds the boundary enforces (the node's `runtime.config.Limits` has them;
    declared here, on the consumer's side, so the boundary does not depend on the runtime).
    Their names are what LIMIT_EXCEEDED errors report."""

    @property
    def max_message_bytes(self) -> int:
        """Bound: one gRPC message."""
        ...

    @property
    def query_bytes_max(self) -> int:
        """Bound: the request of an RPC carrying only a signed query."""
        ...

    @property
    def items_per_request_max(self) -> int:
        """Bound: entries of any repeated field of a request."""
        ...

    @property
    def item_bytes_max(self) -> int:
        """Bound: one such entry."""
        ...

    @property
    def malformed_log_interval_s(self) -> float:
        """Bound: one malformed-input log line per caller per interval."""
        ...


class RateLimitedLog:
    """Bad-input warnings, at most one per caller per interval (`aio/throttle.LogThrottle`);
    what was suppressed is counted in the next."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._throttle = LogThrottle(interval_s, CALLERS_REMEMBERED_MAX, clock)

    def warn(self, caller: Caller, what: str) -> bool:
        """Log `what` about `caller` unless it was logged within the interval; True if logged."""
        suppressed = self._throttle.admit(caller.identity or caller.connection)
        if suppressed is None:
            return False
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        logger.warning("bad input from %s: %s%s", caller, what, more)
        return True


@dataclass(frozen=True)
class MethodRule:
    """The bounds of one method's request messages."""

    path: str  # "/package.Service/Method"
    request_type: type[Message]
    request_bytes_max: int
    request_bytes_limit: str  # the Limits field name of request_bytes_max
    repeated: tuple[tuple[str, bool], ...]  # (repeated field, entries are messages)


class Boundary:
    """The request bounds, budget and malformed-input log of one server."""

    def __init__(
        self, limits: Limits, observer: RpcObserver | None = None, tracer: Tracer = NO_TRACING
    ) -> None:
        self.limits = limits
        self.budget = Budget(limits)
        self.log = RateLimitedLog(limits.malformed_log_interval_s)
        self.observer = observer
        self.tracer = tracer  # server spans of unary calls that carry a traceparent
        # Asked with each path before the request is read; raises to refuse (runtime/standby.py)
        self.gate: Callable[[str], None] = _open
        self.streams = OpenStreams()  # subscriptions, ended at once when the node stops

    def rule(
        self, service: descriptor.ServiceDescriptor, method: descriptor.MethodDescriptor
    ) -> MethodRule:
        """The bounds of `method`'s requests."""
        path = f"/{service.full_name}/{method.name}"
        query = path in QUERY_METHODS
        repeated = tuple(
            (f.name, f.message_type is not None) for f in method.input_type.fields if f.is_repeated
        )
        return MethodRule(
            path=path,
            request_type=message_factory.GetMessageClass(method.input_type),
            request_bytes_max=self.limits.query_bytes_max
            if query
            else self.limits.max_message_bytes,
            request_bytes_limit="query_bytes_max" if query else "max_message_bytes",
            repeated=repeated,
        )

    def admit(self, rule: MethodRule, raw: bytes, caller: Caller) -> Message:
        """Steps 1, 3 and 4 of the module docstring for one request message."""
        if len(raw) > rule.request_bytes_max:
            raise LimitExceeded(
                rule.request_bytes_limit,
                rule.request_bytes_max,
                f"{rule.path} request of {len(raw)} bytes",
            )
        request = rule.request_type()
        try:
            request.ParseFromString(raw)
        except DecodeError as exc:
            self.log.warn(caller, f"{rule.path}: request does not parse ({exc})")
            malformed = f"request does not parse as {rule.request_type.__name__}"
        else:
            problem = self._entries_problem(rule, request, len(raw))
            if problem is None:
                return request
            del request  # no frame of the error's traceback may hold the refused message
            raise problem
        raise ClientError(errors_pb2.ERROR_REASON_MALFORMED, malformed)

    def _entries_problem(
        self, rule: MethodRule, request: Message, raw_bytes: int
    ) -> LimitExceeded | None:
        """The first bound the repeated fields of `request` exceed, if any (returned, not raised:
        see `admit`)."""
        lim = self.limits
        for name, is_message in rule.repeated:
            entries = getattr(request, name)
            if len(entries) > lim.items_per_request_max:
                return LimitExceeded(
                    "items_per_request_max",
                    lim.items_per_request_max,
                    f"{rule.path}: {len(entries)} entries in {name}",
                )
            if raw_bytes <= lim.item_bytes_max:
                continue  # no entry can be larger than the whole request
            for i, entry in enumerate(entries):
                size = entry.ByteSize() if is_message else len(entry)
                if size > lim.item_bytes_max:
                    return LimitExceeded(
                        "item_bytes_max",
                        lim.item_bytes_max,
                        f"{rule.path}: {name}[{i}] of {size} bytes",
                    )
        return None

    def handler(
        self,
        service: descriptor.ServiceDescriptor,
        method: descriptor.MethodDescriptor,
        behaviour: Callable[..., Any],
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The grpc method handler that puts `behaviour` (a servicer method) behind the boundary."""
        rule = self.rule(service, method)
        options: dict[str, Any] = {
            "request_deserializer": _keep_bytes,
            "response_serializer": _serialize,
        }
        if method.client_streaming and method.server_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._stream_stream(rule, behaviour), **options
            )
        if method.client_streaming:
            raise NotImplementedError(f"{rule.path}: client-streaming RPCs are not used by dltmw")
        if method.server_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(rule, behaviour), **options
            )
        return grpc.unary_unary_rpc_method_handler(self._unary_unary(rule, behaviour), **options)

    def _unary_unary(
        self, rule: MethodRule, behaviour: Callable[[Any, Ctx], Awaitable[Any]]
    ) -> Callable[[bytes, Ctx], Awaitable[Any]]:
        async def call(raw: bytes, context: Ctx) -> Any:
            with Observed(self.observer, rule.path, context):
                caller = Caller.of(context)
                try:
                    self.gate(rule.path)
                    with Charged(self.budget, caller, len(raw)):
                        request = self.admit(rule, raw, caller)
                        tracer = self.tracer
                        metadata = context.invocation_metadata() if tracer.enabled else None
                        with tracer.server_span(rule.path, metadata):
                            return await behaviour(request, context)
                except DltmwError as exc:
                    refused = detached(exc)
                await abort(context, refused)  # outside the except block: see status.detached

        return call

    def _unary_stream(
        self, rule: MethodRule, behaviour: Callable[[Any, Ctx], Any]
    ) -> Callable[[bytes, Ctx], Any]:
        if not inspect.isasyncgenfunction(behaviour):  # writes with context.write (grpc health)
            return self._unary_unary(rule, behaviour)

        async def call(raw: bytes, context: Ctx) -> None:
            # Written with context.write, not yielded: a caller that leaves while a message is
            # on its way (a stalled or cancelled subscriber) fails that write, and only here can
            # it be told from a real failure — yielded, grpc core logs it as an ERROR.
            with Observed(self.observer, rule.path, context):
                caller = Caller.of(context)
                try:
                    self.gate(rule.path)
                    with Charged(self.budget, caller, len(raw)), self.streams.held():
                        request = self.admit(rule, raw, caller)
                        async for response in behaviour(request, context):
                            with self.streams.writing():
                                if not await _written(context, response):
                                    return
                            if self.streams.ended:  # the stop came during the write
                                raise stopping()
                    return
                except DltmwError as exc:
                    refused = detached(exc)
                except asyncio.CancelledError:
                    if not self.streams.ended_here():
                        raise
                    refused = stopping()
                await abort(context, refused)  # outside the except block: see status.detached

        return call

    def _stream_stream(
        self, rule: MethodRule, behaviour: Callable[[Any, Ctx], AsyncIterator[Any]]
    ) -> Callable[[AsyncIterator[bytes], Ctx], AsyncIterator[Any]]:
        async def call(requests: AsyncIterator[bytes], context: Ctx) -> AsyncIterator[Any]:
            with Observed(self.observer, rule.path, context):
                caller = Caller.of(context)
                admitted = self._admitted(rule, requests, caller)
                try:
                    self.gate(rule.path)
                    with Charged(self.budget, caller, 0):
                        async for response in behaviour(admitted, context):
                            yield response
                    return
                except DltmwError as exc:
                    refused = detached(exc)
                except asyncio.CancelledError:
                    if not self.streams.ended_here():
                        raise
                    refused = stopping()
                finally:
                    # Return the bytes of a message the servicer took but never finished with;
                    # the servicers stop their reader tasks before they return (not running).
                    await admitted.aclose()
                await abort(context, refused)  # outside the except block: see status.detached

        return call

    async def _admitted(
        self, rule: MethodRule, requests: AsyncIterator[bytes], caller: Caller
    ) -> AsyncGenerator[Any, None]:
        incoming = aiter(requests)
        # Such a servicer is idle while it waits here, so the stop may end it there
        # (`rpc/open_streams.py`); decided once per call, not per message of a pipelined one.
        hold = self.streams.held if rule.path in ENDED_WHILE_IDLE else contextlib.nullcontext
        while True:
            with hold():
                try:
                    raw = await anext(incoming)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    # The stop ended the stream while it waited for a request. Raised as the
                    # refusal, not as a cancellation: a pipelined servicer reads here in its
                    # own reader task (`aio/coalesce.pipelined`), so only the refusal reaches
                    # the call's task, after the answers to the requests already in flight.
                    if not self.streams.ended_here():
                        raise
                    raise stopping() from None
            size = len(raw)
            self.budget.take_bytes(caller, size)
            try:
                request = self.admit(rule, raw, caller)
            except DltmwError as exc:
                self.budget.give_bytes(caller, size)
                del raw  # (the error leaves through the servicer's tasks: keep nothing big)
                raise detached(exc) from None
            try:
                yield request
            finally:
                del request
                self.budget.give_bytes(caller, size)


def _open(_path: str) -> None:
    """The default gate: every method is open."""


def _keep_bytes(raw: bytes) -> bytes:
    """The request deserializer: never raises; `Boundary.admit` parses."""
    return raw


def _serialize(response: Message | bytes) -> bytes:
    """The response serializer; a servicer may hand a message already serialised (Deliver sends
    each stored block framed once, not parsed and serialised again per follower)."""
    if isinstance(response, bytes):
        return response
    return response.SerializeToString()


def add_service(
    server: grpc.aio.Server,
    boundary: Boundary,
    service: descriptor.ServiceDescriptor,
    servicer: object,
) -> str:
    """Serve every method of `service` that `servicer` implements behind `boundary`; returns the
    service's full name (for reflection). A method left as the generated base class's stub (e.g.
    grpc health's List) is not registered, so grpc answers UNIMPLEMENTED for it."""
    handlers = {
        m.name: boundary.handler(service, m, getattr(servicer, m.name))
        for m in service.methods
        if not getattr(type(servicer), m.name).__module__.endswith("_pb2_grpc")
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]
    return service.full_name


async def _written(context: Ctx, response: Any) -> bool:
    """Write one message of a server stream; False when the caller has left, so the servicer
    stops quietly. grpc core refuses the write of a call whose peer cancelled or went away
    (`grpc.aio.InternalError`, its ExecuteBatchError) — sometimes before the context says
    `cancelled()`; nothing can be sent on that call any more. Any other failure is raised."""
    if context.cancelled() or context.done():
        return False
    try:
        await context.write(response)
    except grpc.aio.InternalError:
        logger.debug("server stream ended: the caller left while a message was being sent")
        return False
    return True
