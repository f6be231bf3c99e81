"""The client half of the in-process transport: a grpc.aio channel whose calls are `Exchange`s.

`InprocChannel` offers what the generated stubs and dltmw's clients use of `grpc.aio.Channel`
(`unary_unary`, `unary_stream`, `stream_unary`, `stream_stream`, `close`), and its calls behave
as grpc.aio's (`grpc/aio/_call.py` of the pinned version), so client code runs unchanged:

* a unary call is awaitable: the response, or the `AioRpcError` of its status;
* a stream call has `read()` (a message or `grpc.aio.EOF`), async iteration, and in write mode
  `write()` (which waits while the server's window is full: flow control) / `done_writing()`;
  a write after the call ended raises `InvalidStateError`;
* `cancel()` ends the call at once (the server's handler is cancelled) and a pending or later
  `read()` raises `CancelledError`, as grpc's local cancellation does;
* `timeout=` ends the call with DEADLINE_EXCEEDED; a message larger than the channel's limit is
  RESOURCE_EXHAUSTED; `close()` cancels every call of the channel.

The first call of a channel "connects" (`rpc/inproc.py`: the server checks our certificate
against its trusted CAs, we check its certificate against ours and its name); a refused
connection fails each call UNAVAILABLE, as a failed TLS handshake does, and is tried again on
the next call (the server's trusted CAs may change).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any

import grpc

from dltmw.rpc.channel_options import Keepalive
from dltmw.rpc.inproc import (
    HALF_CLOSE,
    Caller,
    Exchange,
    InprocNetwork,
    Kind,
    Server,
    Status,
    issued_by,
    unavailable,
)
from dltmw.rpc.tls import TlsMaterial, secure_channel

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # (grpc-stubs lacks it)
_HALF_CLOSED = 'RPC is half closed after calling "done_writing".'
_FINISHED = "RPC already finished."
_DEADLINE = Status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class CallBase:
    """What a call without a real gRPC call behind it shares, as its client sees it: reading
    responses and the status, the unary response, a request iterator's writer, cancellation
    and the call's state. `InprocCall` and the simulator's `SimCall` (`sim/grpc_client.py`)
    add how requests are sent and where the next response item comes from."""

    _exchange: Any  # an Exchange: `ended`, `on_end`, `break_`
    _deserialize: Deserializer
    _status: Status | None
    _unary: asyncio.Task[Any] | None
    _writer: asyncio.Task[None] | None
    _callbacks: list[Callable[[Any], None]]
    _deadline: float | None

    async def _next_item(self) -> Any:
        """The next response item: message bytes or the final Status."""
        raise NotImplementedError

    async def write(self, message: Any) -> None:
        """Send one request message (write mode)."""
        raise NotImplementedError

    async def done_writing(self) -> None:
        """Half-close: no more requests."""
        raise NotImplementedError

    def _start_unary_request(self, request: Any) -> None:
        """Send a unary call's one request and half-close."""
        raise NotImplementedError

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

    # --- responses -----------------------------------------------------------------------

    async def read(self) -> Any:
        """The next response message, or `grpc.aio.EOF` after an OK end; raises the call's
        AioRpcError (CancelledError if it was cancelled here)."""
        if self._status is not None:
            self._raise_for_status()
            return EOF
        item = await self._next_item()
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

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
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

        def settle(exchange: Exchange) -> None:
            if not ended.done() and exchange.ended is not None:
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


class InprocCall(CallBase):
    """One call as its client sees it (every shape; see the module docstring)."""

    _exchange: Exchange

    def __init__(
        self,
        channel: InprocChannel,
        kind: Kind,
        path: str,
        codecs: tuple[Serializer, Deserializer],
        timeout: float | None,
    ) -> None:
        self._channel = channel
        self._serialize, self._deserialize = codecs
        loop = asyncio.get_running_loop()
        self._deadline = None if timeout is None else loop.time() + timeout
        self._exchange = exchange = Exchange(channel.caller, path, kind, self._deadline)
        self._status: Status | None = None
        self._done_writing = False
        self._unary: asyncio.Task[Any] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._callbacks: list[Callable[[InprocCall], None]] = []
        if timeout is not None:
            timer = loop.call_later(timeout, exchange.break_, _DEADLINE)
            exchange.on_end(lambda _e: timer.cancel())
        channel.calls.add(self)
        exchange.on_end(lambda _e: channel.calls.discard(self))
        refused = channel.connect()
        if refused is None:
            refused = channel.server.serve(exchange)  # type: ignore[union-attr]
        if refused is not None:
            exchange.break_(refused)

    # --- requests ------------------------------------------------------------------------

    def _encode(self, message: Any) -> bytes | None:
        raw: bytes = message if self._serialize is None else self._serialize(message)
        if len(raw) > self._channel.max_message_bytes:
            self._exchange.break_(
                Status(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Sent message larger than max ({len(raw)} vs. "
                    f"{self._channel.max_message_bytes})",
                )
            )
            return None
        return raw

    def _start_unary_request(self, request: Any) -> None:
        raw = self._encode(request)
        if raw is not None:
            self._exchange.requests.put_nowait(raw)
            self._exchange.requests.put_nowait(HALF_CLOSE)
        self._done_writing = True

    async def write(self, message: Any) -> None:
        """Send one request message (write mode), waiting while the server's window is full."""
        if self._done_writing:
            raise asyncio.InvalidStateError(_HALF_CLOSED)
        if self._exchange.ended is not None:
            raise asyncio.InvalidStateError(_FINISHED)
        raw = self._encode(message)
        if raw is None or not await self._exchange.requests.put(raw):
            raise asyncio.InvalidStateError(_FINISHED)

    async def done_writing(self) -> None:
        """Half-close: no more requests (idempotent)."""
        if self._exchange.ended is None and not self._done_writing:
            self._done_writing = True
            self._exchange.requests.put_nowait(HALF_CLOSE)

    async def _next_item(self) -> Any:
        return await self._exchange.responses.get()


class _MultiCallable:
    """What a stub attribute is: calling it starts a call (`ChannelBase.start`)."""

    def __init__(
        self, channel: ChannelBase, kind: Kind, path: str, codecs: tuple[Serializer, Deserializer]
    ) -> None:
        self._channel = channel
        self._kind = kind
        self._path = path
        self._codecs = codecs

    def __call__(self, request: Any = None, timeout: float | None = None, **options: Any) -> Any:
        return self._channel.start(self._kind, self._path, self._codecs, request, timeout, options)


class ChannelBase:
    """What a channel without a real gRPC channel behind it shares: the stubs' multi-callables
    of every shape and the async context manager. `InprocChannel` and the simulator's
    `SimChannel` (`sim/grpc_client.py`) say how a call starts (`start`) and how they close."""

    def start(
        self,
        kind: Kind,
        path: str,
        codecs: tuple[Serializer, Deserializer],
        request: Any,
        timeout: float | None,
        options: dict[str, Any],
    ) -> Any:
        """Start a call of `path` (a unary request is sent at once; a request iterator is
        consumed by the call's writer)."""
        raise NotImplementedError

    @staticmethod
    def send_first(call: CallBase, kind: Kind, request: Any) -> CallBase:
        """Hand `request` to a new call as its shape asks; the call."""
        if kind in (Kind.UNARY_UNARY, Kind.UNARY_STREAM):
            call._start_unary_request(request)
        elif request is not None:
            call._start_request_iterator(request)
        return call

    async def close(self, grace: float | None = None) -> None:
        """End every call of the channel."""
        raise NotImplementedError

    def _shape(kind: Kind, what: str) -> Callable[..., _MultiCallable]:  # type: ignore[misc]
        def multi(
            self: ChannelBase,
            method: str,
            request_serializer: Serializer = None,
            response_deserializer: Deserializer = None,
            **_options: Any,
        ) -> _MultiCallable:
            return _MultiCallable(self, kind, method, (request_serializer, response_deserializer))

        multi.__doc__ = f"A {what} method."
        return multi

    unary_unary = _shape(Kind.UNARY_UNARY, "unary")
    unary_stream = _shape(Kind.UNARY_STREAM, "server-streaming")
    stream_unary = _shape(Kind.STREAM_UNARY, "client-streaming")
    stream_stream = _shape(Kind.STREAM_STREAM, "bidirectional streaming")

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class InprocChannel(ChannelBase):
    """A grpc.aio channel to the in-process server bound to `address` (module docstring)."""

    _connections = 0  # numbers the channels' connection names (what `peer()` shows)

    def __init__(
        self,
        net: InprocNetwork,
        address: str,
        server_name: str,
        tls: TlsMaterial,
        max_message_bytes: int,
        fallback: Callable[[], grpc.aio.Channel] | None = None,
    ) -> None:
        self.net = net
        self._fallback = fallback
        self._grpc: grpc.aio.Channel | None = None  # the fallback, once made
        self.address = address
        self.server_name = server_name
        self.tls = tls
        self.max_message_bytes = max_message_bytes
        InprocChannel._connections += 1
        self.caller = Caller(tls.cert_pem, f"inproc:{InprocChannel._connections}")
        self.server: Server | None = None  # the server this channel is connected to
        self.calls: set[InprocCall] = set()

    def connect(self) -> Status | None:
        """The server bound to our address, connected (the handshake's checks) if it was not
        yet; the refusal otherwise."""
        server = self.net.servers.get(self.address)
        if server is None:
            self.server = None
            return unavailable(f"failed to connect to all addresses ({self.address})")
        if server is self.server:
            return None
        if not server.admits(self.tls.cert_pem):
            return unavailable("failed to connect: the server refused our certificate")
        if not issued_by(server.cert_pem, self.tls.roots_pem, self.server_name):
            return unavailable(f"failed to connect: {self.server_name}'s certificate not trusted")
        self.server = server
        return None

    def start(
        self,
        kind: Kind,
        path: str,
        codecs: tuple[Serializer, Deserializer],
        request: Any,
        timeout: float | None,
        options: dict[str, Any],
    ) -> Any:
        """An in-process call while our address is served in this process, else gRPC's."""
        if not self.net.serves(self.address):
            remote = self.grpc_call(kind, path, codecs)
            if remote is not None:
                return remote(request, timeout=timeout, **options)
        return self.send_first(InprocCall(self, kind, path, codecs, timeout), kind, request)

    def grpc_call(self, kind: Kind, path: str, codecs: tuple[Serializer, Deserializer]) -> Any:
        """The gRPC multi-callable of `path` (the address is not served in this process), or
        None without a fallback."""
        if self._fallback is None:
            return None
        if self._grpc is None:
            self._grpc = self._fallback()
        make = getattr(self._grpc, kind.value)
        return make(path, request_serializer=codecs[0], response_deserializer=codecs[1])

    async def close(self, grace: float | None = None) -> None:
        """End every call of the channel (CANCELLED, as grpc.aio does)."""
        closed = Status(grpc.StatusCode.CANCELLED, "Channel closed!")
        for call in list(self.calls):
            call.end(closed)
        self.calls.clear()
        if self._grpc is not None:
            await self._grpc.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY while the server is in this process, else the gRPC channel's state."""
        if self.net.serves(self.address):
            return grpc.ChannelConnectivity.READY
        if self._grpc is not None:
            return self._grpc.get_state(try_to_connect)
        return grpc.ChannelConnectivity.IDLE

    async def channel_ready(self) -> None:
        """Ready at once (a failure to connect arrives as the call's status)."""


def inproc_or_grpc(
    net: InprocNetwork,
    address: str,
    server_name: str,
    tls: TlsMaterial,
    max_message_bytes: int,
    keepalive: Keepalive | None = None,
    extra: Sequence[tuple[str, str | int]] = (),
) -> grpc.aio.Channel:
    """A channel to `address`: each call in process while a server of this process is bound to
    it, else over a gRPC channel with mutual TLS (made on first need). Decided per call, as
    nodes of one process start together and one may call another before it is bound."""

    def fallback() -> grpc.aio.Channel:
        if keepalive is None:
            return secure_channel(address, server_name, tls, max_message_bytes, extra=extra)
        return secure_channel(address, server_name, tls, max_message_bytes, keepalive, extra)

    return InprocChannel(net, address, server_name, tls, max_message_bytes, fallback)  # type: ignore[return-value]
