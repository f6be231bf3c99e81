"""The client half of the simulated transport: a grpc.aio channel made of `sim/wire.py` calls.

`SimChannel` offers what the generated stubs and dltmw's clients use of `grpc.aio.Channel`
(`unary_unary`, `unary_stream`, `stream_stream`, `close`), and its calls behave as grpc.aio's do
(`grpc/aio/_call.py` of the pinned version), so the same client code runs unchanged:

* a unary call is awaitable: the response, or the `AioRpcError` of its status;
* a stream call has `read()` (a message or `grpc.aio.EOF`), async iteration, and in write mode
  `write()` / `done_writing()`; a write after the call ended raises `InvalidStateError`;
* `cancel()` ends the call at once (the server's handler is cancelled) and a pending or later
  `read()` raises `CancelledError` — grpc's local cancellation;
* `timeout=` ends the call with DEADLINE_EXCEEDED; a message larger than the channel's limit is
  RESOURCE_EXHAUSTED; `close()` cancels every call of the channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import grpc

from dltmw.rpc.inproc import HALF_CLOSE, Kind, Status
from dltmw.sim.wire import Endpoint, SimNetwork

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # (grpc-stubs lacks it)
_HALF_CLOSED = 'RPC is half closed after calling "done_writing".'
_FINISHED = "RPC already finished."


class SimCall:
    """One call as its client sees it (every shape; see the module docstring)."""

    def __init__(
        self,
        channel: SimChannel,
        kind: Kind,
        path: str,
        codecs: tuple[Serializer, Deserializer],
        timeout: float | None,
    ) -> None:
        self._channel = channel
        self._serialize, self._deserialize = codecs
        self._exchange = channel.net.open(channel.endpoint, channel.target, path, kind)
        self._status: Status | None = None
        self._done_writing = False
        self._unary: asyncio.Task[Any] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._callbacks: list[Callable[[SimCall], None]] = []
        loop = asyncio.get_running_loop()
        self._deadline = None if timeout is None else loop.time() + timeout
        if timeout is not None:
            deadline = Status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            timer = loop.call_later(timeout, self._exchange.break_, deadline)
            self._exchange.on_end(lambda _e: timer.cancel())
        channel.calls.add(self)
        self._exchange.on_end(lambda _e: channel.calls.discard(self))

    # --- requests ------------------------------------------------------------------------

    def _send(self, message: Any) -> None:
        raw = message if self._serialize is None else self._serialize(message)
        if len(raw) > self._channel.max_message_bytes:
            self._exchange.break_(
                Status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Sent message larger than max ({len(raw)} vs. "
                    f"{self._channel.max_message_bytes})",
                )
            )
            return
        self._exchange.send_request(raw)

    def _start_unary_request(self, request: Any) -> None:
        self._send(request)
        self._exchange.send_request(HALF_CLOSE)
        self._done_writing = True

    def _start_request_iterator(self, requests: Any) -> None:
        async def consume() -> None:
            try:
                if hasattr(requests, "__aiter__"):
                    async for request in requests:
                        await self.write(request)
                else:
                    for request in requests:
                        await self.write(request)
                await self.done_writing()
            except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
                return
            except Exception:  # as grpc does: a failing request iterator cancels the call
                self.cancel()

        self._writer = asyncio.get_running_loop().create_task(consume())

    async def write(self, message: Any) -> None:
        """Send one request message (write mode)."""
        if self._done_writing:
            raise asyncio.InvalidStateError(_HALF_CLOSED)
        if self._exchange.ended is not None:
            raise asyncio.InvalidStateError(_FINISHED)
        self._send(message)
        await asyncio.sleep(0)  # a real write yields to the loop while the transport takes it

    async def done_writing(self) -> None:
        """Half-close: no more requests (idempotent)."""
        if self._exchange.ended is None and not self._done_writing:
            self._done_writing = True
            self._exchange.send_request(HALF_CLOSE)

    # --- responses -----------------------------------------------------------------------

    async def read(self) -> Any:
        """The next response message, or `grpc.aio.EOF` after an OK end; raises the call's
        AioRpcError (CancelledError if it was cancelled here)."""
        if self._status is not None:
            self._raise_for_status()
            return EOF
        item = await self._exchange.responses.queue.get()
        if isinstance(item, bytes):
            return item if self._deserialize is None else self._deserialize(item)
        self._finish(item)
        self._raise_for_status()
        return EOF

    def _finish(self, status: Status) -> None:
        self._status = status
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def _raise_for_status(self) -> None:
        status = self._status
        if status is None or status.code == grpc.StatusCode.OK:
            return
        if status.local_cancel:
            raise asyncio.CancelledError()
        raise status.error()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        while (message := await self.read()) is not EOF:
            yield message

    def __await__(self) -> Generator[Any, None, Any]:
        if self._unary is None:
            self._unary = asyncio.get_running_loop().create_task(self._unary_response())
        return self._unary.__await__()

    async def _unary_response(self) -> Any:
        response = await self.read()
        if response is EOF:
            raise Status(grpc.StatusCode.INTERNAL, "no response message").error()
        while self._status is None:  # the OK status follows the message
            if await self.read() is not EOF:
                raise Status(grpc.StatusCode.INTERNAL, "more than one response").error()
        return response

    # --- call state ----------------------------------------------------------------------

    @property
    def serial(self) -> int:
        """Creation order of the call (a deterministic order)."""
        return self._exchange.serial

    def end(self, status: Status) -> None:
        """End the call at once with `status` (its channel closed)."""
        self._exchange.break_(status)

    def cancel(self) -> bool:
        """End the call here and now (the server's handler is cancelled)."""
        if self._exchange.ended is not None:
            return False
        cancelled = Status(
            grpc.StatusCode.CANCELLED, "Locally cancelled by application!", local_cancel=True
        )
        self._exchange.break_(cancelled)
        if self._writer is not None:
            self._writer.cancel()
        return True

    def cancelled(self) -> bool:
        """Was it cancelled here?"""
        ended = self._exchange.ended
        return ended is not None and ended.local_cancel

    def done(self) -> bool:
        """Has it ended?"""
        return self._exchange.ended is not None

    def add_done_callback(self, callback: Callable[[SimCall], None]) -> None:
        """Call `callback(self)` once the client has seen the end."""
        if self._status is not None:
            callback(self)
        else:
            self._callbacks.append(callback)

    def time_remaining(self) -> float | None:
        """Seconds to the deadline (None without one)."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def _ended(self) -> Status:
        ended: asyncio.Future[Status] = asyncio.get_running_loop().create_future()

        def settle(exchange: Any) -> None:
            if not ended.done():
                ended.set_result(exchange.ended)

        self._exchange.on_end(settle)
        return await ended

    async def code(self) -> grpc.StatusCode:
        """The status code (waits for the end)."""
        return (await self._ended()).code

    async def details(self) -> str:
        """The status details (waits for the end)."""
        return (await self._ended()).details

    async def initial_metadata(self) -> grpc.aio.Metadata:
        """dltmw servers send none."""
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        """The trailing metadata (waits for the end)."""
        return grpc.aio.Metadata(*(await self._ended()).trailing)

    async def wait_for_connection(self) -> None:
        """Connected at once (a failure to connect arrives as the call's status)."""


class _MultiCallable:
    """What a stub attribute is: calling it starts a call."""

    def __init__(
        self, channel: SimChannel, kind: Kind, path: str, codecs: tuple[Serializer, Deserializer]
    ) -> None:
        self._channel = channel
        self._kind = kind
        self._path = path
        self._codecs = codecs

    def __call__(
        self, request: Any = None, timeout: float | None = None, **_options: Any
    ) -> SimCall:
        call = SimCall(self._channel, self._kind, self._path, self._codecs, timeout)
        if self._kind in (Kind.UNARY_UNARY, Kind.UNARY_STREAM):
            call._start_unary_request(request)
        elif request is not None:
            call._start_request_iterator(request)
        return call


class SimChannel:
    """A grpc.aio channel from `endpoint` to the node `target` (see the module docstring)."""

    def __init__(
        self, net: SimNetwork, endpoint: Endpoint, target: str, max_message_bytes: int
    ) -> None:
        self.net = net
        self.endpoint = endpoint
        self.target = target
        self.max_message_bytes = max_message_bytes
        self.calls: set[SimCall] = set()

    def _multi(
        self, kind: Kind, method: str, ser: Serializer, deser: Deserializer
    ) -> _MultiCallable:
        return _MultiCallable(self, kind, method, (ser, deser))

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        **_options: Any,
    ) -> _MultiCallable:
        """A unary method."""
        return self._multi(Kind.UNARY_UNARY, method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        **_options: Any,
    ) -> _MultiCallable:
        """A server-streaming method."""
        return self._multi(Kind.UNARY_STREAM, method, request_serializer, response_deserializer)

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        **_options: Any,
    ) -> _MultiCallable:
        """A client-streaming method (no dltmw service has one; UNIMPLEMENTED at servers)."""
        return self._multi(Kind.STREAM_UNARY, method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        **_options: Any,
    ) -> _MultiCallable:
        """A bidirectional streaming method."""
        return self._multi(Kind.STREAM_STREAM, method, request_serializer, response_deserializer)

    async def close(self, grace: float | None = None) -> None:
        """End every call of the channel (CANCELLED, as grpc.aio does)."""
        closed = Status(grpc.StatusCode.CANCELLED, "Channel closed!")
        for call in sorted(self.calls, key=lambda c: c.serial):
            call.end(closed)
        self.calls.clear()

    async def __aenter__(self) -> SimChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """Always READY (failures show as call statuses)."""
        return grpc.ChannelConnectivity.READY

    async def channel_ready(self) -> None:
        """Ready at once."""
