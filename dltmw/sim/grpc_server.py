"""The server half of the simulated transport: a grpc.aio server serving `sim/wire.py` calls.

`SimServer` takes handlers the way `rpc/boundary.add_service` registers them
(`add_generic_rpc_handlers`, `add_registered_method_handlers`) and runs each call's handler in a
task of the server's incarnation, exactly as grpc.aio calls it: request bytes through the
handler's deserializer, responses through its serializer, a `SimServicerContext` whose
`auth_context()` carries the caller's TLS certificate (so `check_tls_org` sees what mTLS would
show), `peer()` names the caller's connection, and `abort` / `abort_with_status` end the call
with that status on the client side. A handler that raises anything else answers UNKNOWN, as
grpc does, and is recorded in `SimNetwork.unexpected` (a bug in node code).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from dltmw.rpc.inproc import HALF_CLOSE, OK, Kind, Status
from dltmw.sim.vloop import OWNER, Owner
from dltmw.sim.wire import Exchange, SimNetwork

logger = logging.getLogger(__name__)
Handler = Any  # grpc.RpcMethodHandler of an aio server (grpc-stubs types the sync one only)


class _Details:
    """What a generic handler is asked with (grpc.HandlerCallDetails)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str], ...] = ()


class SimServicerContext:
    """The servicer context of one simulated call (the parts servicers use)."""

    def __init__(self, exchange: Exchange, serialize: Callable[[Any], bytes]) -> None:
        self._exchange = exchange
        self._serialize = serialize
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()
        self.aborted: Status | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        """What mutual TLS proves about the caller."""
        return {
            "transport_security_type": [b"ssl"],
            "x509_pem_cert": [self._exchange.client.cert_pem],
        }

    def peer(self) -> str:
        """The caller's connection."""
        return self._exchange.client.connection

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """dltmw clients send none."""
        return ()

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> None:
        """End the call with `code` (raises, as grpc.aio does)."""
        self.aborted = Status(code, details, tuple(trailing_metadata))
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
        """Not carried by the simulated network (a `SimCall`'s initial metadata is empty)."""

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

    async def write(self, message: Any) -> None:
        """A response message (handlers that write instead of yielding, e.g. health)."""
        self._exchange.respond(self._serialize(message))

    def time_remaining(self) -> float | None:
        """No deadline is propagated to servers here."""
        return None

    def cancelled(self) -> bool:
        """Has the call ended before the handler did?"""
        return self._exchange.ended is not None

    def done(self) -> bool:
        """Same as `cancelled` for a running handler."""
        return self._exchange.ended is not None


class SimServer:
    """The server of one node incarnation on the simulated network."""

    def __init__(self, net: SimNetwork, owner: Owner, node_id: str, max_message_bytes: int) -> None:
        self._net = net
        self.owner = owner
        self.node_id = node_id
        self.max_message_bytes = max_message_bytes
        self._generic: list[Any] = []
        self._handlers: dict[str, Handler] = {}
        self._context = contextvars.copy_context()
        self._context.run(OWNER.set, owner)  # handler tasks belong to the incarnation
        self._serving = False

    # --- what rpc/boundary.add_service and Node use --------------------------------------

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        """Generic handlers, asked by method path."""
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        """Handlers of `service` by method name."""
        for name, handler in handlers.items():
            self._handlers[f"/{service}/{name}"] = handler

    def add_secure_port(self, address: str, _credentials: object = None) -> int:
        """The simulated network routes by node id: the port is only a label."""
        return 1

    async def start(self) -> None:
        """Answer for the node from now on."""
        self._serving = True
        self._net.register(self)

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls, let running ones finish within `grace`, then cancel them."""
        self._serving = False
        self._net.unregister(self)
        mine = sorted((e for e in self._net.open_calls if e.server is self), key=lambda e: e.serial)
        tasks = [e.server_task for e in mine if e.server_task is not None]
        if tasks and grace:
            await asyncio.wait(tasks, timeout=grace)
        for exchange in mine:
            exchange.break_(Status(grpc.StatusCode.UNAVAILABLE, "server shutting down"))

    # --- serving -------------------------------------------------------------------------

    def handler(self, path: str) -> Handler | None:
        """The handler registered for `path`."""
        found = self._handlers.get(path)
        if found is not None:
            return found
        for generic in self._generic:
            found = generic.service(_Details(path))
            if found is not None:
                return found
        return None

    def serve(self, exchange: Exchange) -> bool:
        """Start the handler of `exchange` in a task of this incarnation."""
        handler = self.handler(exchange.path)
        if handler is None or not self._serving:
            return False
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(exchange, handler), context=self._context.copy())
        exchange.server_task = task
        return True

    async def _run(self, exchange: Exchange, handler: Handler) -> None:
        serialize = handler.response_serializer or _identity
        context = SimServicerContext(exchange, serialize)
        try:
            async for response in self._responses(exchange, handler, context):
                exchange.respond(serialize(response))
        except grpc.aio.AbortError:
            exchange.finish(context.aborted or Status(grpc.StatusCode.UNKNOWN, "aborted"))
            return
        except _Refused as refused:
            exchange.finish(refused.status)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            what = f"{self.node_id} {exchange.path}: {exc!r}"
            if self.owner.alive:
                self._net.unexpected.append(what)
                logger.error("servicer raised (a bug): %s", what, exc_info=exc)
            exchange.finish(Status(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}"))
            return
        exchange.finish(context.final_status())

    async def _responses(
        self,
        exchange: Exchange,
        handler: Handler,
        context: SimServicerContext,
    ) -> AsyncIterator[Any]:
        deserialize = handler.request_deserializer or _identity
        if exchange.kind is Kind.STREAM_STREAM and handler.stream_stream is not None:
            requests = self._requests(exchange, deserialize)
            async for response in handler.stream_stream(requests, context):
                yield response
            return
        raw = await self._first_request(exchange)
        request = deserialize(raw)
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

    async def _first_request(self, exchange: Exchange) -> bytes:
        item = await exchange.requests.queue.get()
        if not isinstance(item, bytes):
            raise _NoRequest()
        self._check_size(item)
        return item

    async def _requests(
        self, exchange: Exchange, deserialize: Callable[[bytes], Any]
    ) -> AsyncIterator[Any]:
        while True:
            item = await exchange.requests.queue.get()
            if item is HALF_CLOSE or not isinstance(item, bytes):
                return
            self._check_size(item)
            yield deserialize(item)

    def _check_size(self, raw: bytes) -> None:
        if len(raw) > self.max_message_bytes:
            raise _TooLarge(len(raw), self.max_message_bytes)


class _Refused(Exception):
    """What grpc itself refuses before or around a handler."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.details)
        self.status = status


class _NoRequest(_Refused):
    """The client half-closed without sending the request of a unary method."""

    def __init__(self) -> None:
        super().__init__(Status(grpc.StatusCode.INTERNAL, "no request message"))


class _TooLarge(_Refused):
    """A received message over the server's limit (grpc refuses it before any handler)."""

    def __init__(self, size: int, limit: int) -> None:
        details = f"Received message larger than max ({size} vs. {limit})"
        super().__init__(Status(grpc.StatusCode.RESOURCE_EXHAUSTED, details))


def _identity(raw: Any) -> Any:
    return raw
