"""The server half of the in-process transport: a node's handlers served to in-process callers.

`InprocServer` wraps the node's grpc.aio server (which still listens on its port, so programs
outside the process reach the node as before) and serves the same handlers to callers in the
process (`rpc/inproc_call.py`). Each call's handler runs in a task, exactly as grpc.aio calls
it: request bytes through the handler's deserializer, responses through its serializer (a
response waits for room in the caller's window: flow control), an `InprocServicerContext`
whose `auth_context()` carries the caller's TLS certificate (what mutual TLS proves) and
whose `time_remaining()` is the caller's deadline; `abort` ends the call with that status and
trailing metadata (ErrorInfo). A handler that raises anything else answers UNKNOWN and is
logged, as grpc does. Calls over `max_concurrent_rpcs` are refused RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from dltmw.rpc.inproc import (
    HALF_CLOSE,
    OK,
    Exchange,
    InprocNetwork,
    Kind,
    Status,
    issued_by,
)

logger = logging.getLogger(__name__)
Handler = Any  # grpc.RpcMethodHandler of an aio server (grpc-stubs types the sync one only)


class Details:
    """What a generic handler is asked with (grpc.HandlerCallDetails)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str], ...] = ()


class ServicerContextBase:
    """What every servicer context without a real gRPC call shares: abort with a status and
    trailing metadata (ErrorInfo), codes and details set by the handler, and the status a
    handler that returns ends its call with. The in-process transport's context and the
    simulator's (`sim/grpc_server.py`) add who calls, deadlines and how a response is written."""

    def __init__(self, exchange: Any, serialize: Callable[[Any], bytes]) -> None:
        self._exchange = exchange
        self._serialize = serialize
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()
        self.aborted: Status | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """dltmw clients send none."""
        return ()

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> None:
        """End the call with `code` (raises, as grpc.aio's abort does; without trailing
        metadata of its own, the metadata set before is sent, as grpc.aio does)."""
        trailing = tuple(trailing_metadata) or self._trailing
        self.aborted = Status(code, details, trailing)
        raise grpc.aio.AbortError()

    async def abort_with_status(self, status: grpc.Status) -> None:
        """End the call with a rich status (raises)."""
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        """The code of a call that ends without abort."""
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        """The code the call ends with so far (an abort's, else one set; None: OK)."""
        return self.aborted.code if self.aborted is not None else self._code

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        """Not carried (the caller's initial metadata is empty)."""

    def set_details(self, details: str) -> None:
        """Its details."""
        self._details = details

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        """Its trailing metadata."""
        self._trailing = tuple(metadata)

    def final_status(self) -> Status:
        """How a handler that returned normally ends its call."""
        if self._code is None or self._code == grpc.StatusCode.OK:
            return OK if not self._trailing else Status(grpc.StatusCode.OK, "", self._trailing)
        return Status(self._code, self._details, self._trailing)

    def cancelled(self) -> bool:
        """Has the call ended before the handler did (cancelled, deadline, broken)?"""
        return self._exchange.ended is not None

    def done(self) -> bool:
        """Same as `cancelled` for a running handler."""
        return self._exchange.ended is not None


class InprocServicerContext(ServicerContextBase):
    """The servicer context of one in-process call (the parts servicers use)."""

    _exchange: Exchange

    def auth_context(self) -> dict[str, list[bytes]]:
        """What mutual TLS proves about the caller (checked when its channel connected)."""
        cert = self._exchange.caller.cert_pem
        return {"transport_security_type": [b"ssl"], "x509_pem_cert": [cert] if cert else []}

    def peer(self) -> str:
        """The caller's connection."""
        return self._exchange.caller.connection

    async def write(self, message: Any) -> None:
        """A response message (handlers that write instead of yielding, e.g. health)."""
        await self._exchange.respond(self._serialize(message))

    def time_remaining(self) -> float | None:
        """Seconds to the caller's deadline (None without one)."""
        deadline = self._exchange.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - asyncio.get_running_loop().time())


class HandlerTable:
    """A server's handlers and how one call is served by them, as grpc.aio calls them: request
    bytes through the handler's deserializer, each shape (unary, server streaming, client
    streaming, bidirectional), grpc's own refusals (no request, a message over the size
    limit). The in-process server and the simulator's (`sim/grpc_server.py`) add where the
    next request comes from and how a call's task is run and ended."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._generic: list[Any] = []
        self._handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        """Generic handlers, asked by method path."""
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        """Handlers of `service` by method name."""
        for name, handler in handlers.items():
            self._handlers[f"/{service}/{name}"] = handler

    async def _next_request(self, exchange: Any) -> Any:
        """The next request item of `exchange`: bytes, HALF_CLOSE or a Status."""
        raise NotImplementedError

    def handler(self, path: str) -> Handler | None:
        """The handler registered for `path`."""
        found = self._handlers.get(path)
        if found is not None:
            return found
        for generic in self._generic:
            found = generic.service(Details(path))
            if found is not None:
                return found
        return None

    async def _responses(
        self, exchange: Any, handler: Handler, context: ServicerContextBase
    ) -> AsyncIterator[Any]:
        deserialize = handler.request_deserializer or identity
        if exchange.kind is Kind.STREAM_STREAM and handler.stream_stream is not None:
            async for response in handler.stream_stream(
                self._requests(exchange, deserialize), context
            ):
                yield response
            return
        if exchange.kind is Kind.STREAM_UNARY and handler.stream_unary is not None:
            yield await handler.stream_unary(self._requests(exchange, deserialize), context)
            return
        request = deserialize(await self._first_request(exchange))
        if exchange.kind is Kind.UNARY_UNARY and handler.unary_unary is not None:
            yield await handler.unary_unary(request, context)
            return
        if exchange.kind is Kind.UNARY_STREAM and handler.unary_stream is not None:
            out = handler.unary_stream(request, context)
            if inspect.isasyncgen(out):
                async for response in out:
                    yield response
            else:  # a handler that writes with context.write
                await out
            return
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "method shape mismatch")

    async def _first_request(self, exchange: Any) -> bytes:
        item = await self._next_request(exchange)
        if not isinstance(item, bytes):
            raise Refused(Status(grpc.StatusCode.INTERNAL, "no request message"))
        self._check_size(item)
        return item

    async def _requests(
        self, exchange: Any, deserialize: Callable[[bytes], Any]
    ) -> AsyncIterator[Any]:
        while True:
            item = await self._next_request(exchange)
            if item is HALF_CLOSE or not isinstance(item, bytes):
                return
            self._check_size(item)
            yield deserialize(item)

    def _check_size(self, raw: bytes) -> None:
        if len(raw) > self.max_message_bytes:
            details = f"Received message larger than max ({len(raw)} vs. {self.max_message_bytes})"
            raise Refused(Status(grpc.StatusCode.RESOURCE_EXHAUSTED, details))


class InprocServer(HandlerTable):
    """A node's grpc.aio server, also serving its handlers to callers in this process."""

    def __init__(
        self,
        net: InprocNetwork,
        grpc_server: grpc.aio.Server,
        max_message_bytes: int,
        max_concurrent_rpcs: int | None,
    ) -> None:
        super().__init__(max_message_bytes)
        self._net = net
        self._grpc = grpc_server
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self._addresses: list[str] = []
        self.cert_pem = b""
        self._roots: Callable[[], bytes] = lambda: b""
        self.calls: set[Exchange] = set()
        self._serving = False

    # --- what rpc/boundary.add_service, the transport and Node use -----------------------

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        """Generic handlers, asked by method path (also registered with gRPC)."""
        self._grpc.add_generic_rpc_handlers(handlers)
        super().add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        """Handlers of `service` by method name (also registered with gRPC)."""
        self._grpc.add_registered_method_handlers(service, handlers)  # type: ignore[attr-defined]
        super().add_registered_method_handlers(service, handlers)

    def bind(self, host: str, port: int, cert_pem: bytes, roots: Callable[[], bytes]) -> None:
        """Answer in-process callers of `host:port` with this certificate, trusting the client
        CAs `roots()` gives at each connection (as the TLS server credentials do)."""
        self._addresses.append(f"{host}:{port}")
        self.cert_pem = cert_pem
        self._roots = roots

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        """The gRPC port (what `Transport.listen` binds)."""
        return self._grpc.add_secure_port(address, credentials)

    async def start(self) -> None:
        """Serve gRPC and in-process callers from now on."""
        await self._grpc.start()
        self._serving = True
        for address in self._addresses:
            self._net.register(address, self)

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls, let running ones finish within `grace`, then end them
        UNAVAILABLE (as a server going away); gRPC's side stops alike."""
        self._serving = False
        self._net.unregister(self)
        mine = list(self.calls)
        tasks = [e.server_task for e in mine if e.server_task is not None]
        stopping = asyncio.ensure_future(self._grpc.stop(grace))
        if tasks and grace:
            await asyncio.wait(tasks, timeout=grace)
        for exchange in mine:
            exchange.break_(Status(grpc.StatusCode.UNAVAILABLE, "server shutting down"))
        await stopping

    # --- serving -------------------------------------------------------------------------

    def admits(self, cert_pem: bytes | None) -> bool:
        """Does a client certificate chain to a CA this server trusts now?"""
        return issued_by(cert_pem, self._roots())

    async def _next_request(self, exchange: Exchange) -> Any:
        return await exchange.requests.get()

    def serve(self, exchange: Exchange) -> Status | None:
        """Start the handler of `exchange` in a task; the refusal if there is none to run."""
        if not self._serving:
            return Status(grpc.StatusCode.UNAVAILABLE, "server shutting down")
        handler = self.handler(exchange.path)
        if handler is None:
            return Status(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        limit = self.max_concurrent_rpcs
        if limit is not None and len(self.calls) >= limit:
            return Status(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
        self.calls.add(exchange)
        exchange.on_end(self.calls.discard)
        exchange.server_task = asyncio.get_running_loop().create_task(self._run(exchange, handler))
        return None

    async def _run(self, exchange: Exchange, handler: Handler) -> None:
        serialize = handler.response_serializer or identity
        context = InprocServicerContext(exchange, serialize)
        try:
            async for response in self._responses(exchange, handler, context):
                await exchange.respond(serialize(response))
        except grpc.aio.AbortError:
            exchange.finish(context.aborted or Status(grpc.StatusCode.UNKNOWN, "aborted"))
            return
        except Refused as refused:
            exchange.finish(refused.status)
            return
        except asyncio.CancelledError:
            exchange.break_(Status(grpc.StatusCode.CANCELLED, "handler cancelled"))
            raise
        except Exception as exc:
            logger.error("servicer of %s raised", exchange.path, exc_info=exc)
            exchange.finish(Status(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}"))
            return
        exchange.finish(context.final_status())


class Refused(Exception):
    """What grpc itself refuses before or around a handler."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.details)
        self.status = status


def identity(raw: Any) -> Any:
    return raw
