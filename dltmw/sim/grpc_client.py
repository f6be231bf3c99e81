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
from collections.abc import Callable
from typing import Any

import grpc

from dltmw.rpc.inproc import HALF_CLOSE, Kind, Status
from dltmw.rpc.inproc_call import CallBase, ChannelBase, Deserializer, Serializer
from dltmw.sim.wire import Endpoint, Exchange, SimNetwork

EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # (grpc-stubs lacks it)
_HALF_CLOSED = 'RPC is half closed after calling "done_writing".'
_FINISHED = "RPC already finished."


class SimCall(CallBase):
    """One call as its client sees it (every shape; see the module docstring; reading, the
    status and the call's state are the in-process transport's, `rpc/inproc_call.CallBase`)."""

    _exchange: Exchange

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

    async def _next_item(self) -> Any:
        return await self._exchange.responses.queue.get()

    @property
    def serial(self) -> int:
        """Creation order of the call (a deterministic order)."""
        return self._exchange.serial


class SimChannel(ChannelBase):
    """A grpc.aio channel from `endpoint` to the node `target` (see the module docstring)."""

    def __init__(
        self, net: SimNetwork, endpoint: Endpoint, target: str, max_message_bytes: int
    ) -> None:
        self.net = net
        self.endpoint = endpoint
        self.target = target
        self.max_message_bytes = max_message_bytes
        self.calls: set[SimCall] = set()

    def start(
        self,
        kind: Kind,
        path: str,
        codecs: tuple[Serializer, Deserializer],
        request: Any,
        timeout: float | None,
        options: dict[str, Any],
    ) -> SimCall:
        """A call on the simulated network."""
        call = SimCall(self, kind, path, codecs, timeout)
        self.send_first(call, kind, request)
        return call

    async def close(self, grace: float | None = None) -> None:
        """End every call of the channel (CANCELLED, as grpc.aio does)."""
        closed = Status(grpc.StatusCode.CANCELLED, "Channel closed!")
        for call in sorted(self.calls, key=lambda c: c.serial):
            call.end(closed)
        self.calls.clear()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """Always READY (failures show as call statuses)."""
        return grpc.ChannelConnectivity.READY

    async def channel_ready(self) -> None:
        """Ready at once."""
