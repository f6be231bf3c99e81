"""The in-process transport's wire: calls between parties of one process, without HTTP/2 or TLS.

When every node of a network runs in the caller's process (`dltmw.open(transport="inproc")`),
a call between two of them needs none of gRPC's framing, TLS records or socket round trips:
the client's serialized request is handed to the server's handler on the same event loop.
What the nodes rely on from gRPC is kept, so servicers and clients run unchanged:

* **flow control**: each direction of a call is a `Pipe` bounded in bytes and messages, like an
  HTTP/2 stream window: a writer (a client's `write`, a server handler yielding responses)
  waits while the reader has not taken what is buffered, so a stalled subscriber holds at most
  one window per stream, never an unbounded backlog;
* **identity**: a channel is "connected" once, as a TLS handshake would be: the server checks
  the caller's certificate against the CAs it trusts *now* (`roots()`, the same callable the
  gRPC server credentials ask), and the caller checks the server's certificate against its roots
  and the name it expects. A caller without a certificate, or with one no trusted CA issued, is
  refused UNAVAILABLE, as a failed handshake is. Servicers then see the caller's certificate in
  `auth_context()`, exactly as mutual TLS shows it;
* **status**: a call ends with a `Status` (code, details, trailing metadata: the ErrorInfo of
  `rpc/status.py` travels there as over gRPC) and the client raises the same `AioRpcError`;
* **deadlines, cancellation, half-close**: the caller's timeout ends the call DEADLINE_EXCEEDED
  on both sides (the server's `time_remaining()` sees it), a cancel on either side ends it at
  once (the handler task is cancelled; the caller's `read` raises `CancelledError`), and
  `done_writing` ends the request stream.

Only servers registered in the `InprocNetwork` are reached this way (by their bound address);
anything else is reached over gRPC. `Status`, `Kind` and `HALF_CLOSE` are shared with the
simulator's wire (`sim/wire.py`), which adds virtual-time delays and faults instead of bounds.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc
from cryptography import x509

from dltmw.core.identity import issued_directly_by

WINDOW_BYTES = 1 << 20  # per direction of a call, as grpc's per-stream receive window (1 MiB)
WINDOW_MESSAGES = 256  # and at most this many messages (empty messages cost no bytes)


class Kind(enum.Enum):
    """The shape of a method."""

    UNARY_UNARY = "unary_unary"
    UNARY_STREAM = "unary_stream"
    STREAM_UNARY = "stream_unary"
    STREAM_STREAM = "stream_stream"


@dataclass(frozen=True)
class Status:
    """How a call ended (or, as a marker in a pipe, that it ended)."""

    code: grpc.StatusCode
    details: str = ""
    trailing: tuple[tuple[str, str | bytes], ...] = ()
    local_cancel: bool = False

    def error(self) -> grpc.aio.AioRpcError:
        """The AioRpcError a grpc.aio client raises for this status."""
        return grpc.aio.AioRpcError(
            self.code, grpc.aio.Metadata(), grpc.aio.Metadata(*self.trailing), self.details, None
        )


OK = Status(grpc.StatusCode.OK)
HALF_CLOSE = object()  # in a request pipe: the client is done writing


def unavailable(details: str) -> Status:
    """UNAVAILABLE with `details`."""
    return Status(grpc.StatusCode.UNAVAILABLE, details)


class Pipe:
    """One direction of one call: messages in order, bounded like a stream's window.

    `put` waits while the reader holds a full window (`window_bytes` or `window_messages`); a
    message larger than the window still passes when nothing else is buffered, as a stream's
    window refills while a large message is read. Markers (HALF_CLOSE, a Status) never wait."""

    def __init__(self, window_bytes: int = WINDOW_BYTES, window_messages: int = WINDOW_MESSAGES):
        self._items: deque[Any] = deque()
        self._bytes = 0
        self._window_bytes = window_bytes
        self._window_messages = window_messages
        self._reader: asyncio.Future[None] | None = None
        self._writers: deque[asyncio.Future[None]] = deque()
        self.broken = False

    @property
    def buffered(self) -> tuple[int, int]:
        """Messages and bytes waiting for the reader."""
        return len(self._items), self._bytes

    def _full(self, size: int) -> bool:
        return bool(self._items) and (
            self._bytes + size > self._window_bytes or len(self._items) >= self._window_messages
        )

    async def put(self, raw: bytes) -> bool:
        """Hand `raw` to the reader once the window has room; False if the pipe broke."""
        while not self.broken and self._full(len(raw)):
            waiter = asyncio.get_running_loop().create_future()
            self._writers.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._writers:
                    self._writers.remove(waiter)
        if self.broken:
            return False
        self._append(raw, len(raw))
        return True

    def put_nowait(self, item: Any) -> None:
        """A marker, or a unary call's one request (not bounded: one message)."""
        if not self.broken:
            self._append(item, len(item) if isinstance(item, bytes) else 0)

    def _append(self, item: Any, size: int) -> None:
        self._items.append((item, size))
        self._bytes += size
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    async def get(self) -> Any:
        """The next item (bytes, HALF_CLOSE or a Status), waiting for one."""
        while not self._items:
            self._reader = asyncio.get_running_loop().create_future()
            await self._reader
        item, size = self._items.popleft()
        self._bytes -= size
        if self._writers and not self._full(0):
            waiter = self._writers.popleft()
            if not waiter.done():
                waiter.set_result(None)
        return item

    def fail_now(self, status: Status) -> None:
        """End this direction at once with `status`: what is buffered is dropped, the reader
        gets `status` next, waiting writers are released (their `put` returns False)."""
        if self.broken:
            return
        self.broken = True
        self._items.clear()
        self._bytes = 0
        self._append(status, 0)
        writers, self._writers = self._writers, deque()
        for waiter in writers:
            if not waiter.done():
                waiter.set_result(None)


@dataclass(frozen=True)
class Caller:
    """Who calls: the TLS certificate mutual TLS would prove, and the connection's name."""

    cert_pem: bytes | None
    connection: str


class Exchange:
    """One call: its two pipes, the handler task serving it, its deadline and how it ended."""

    def __init__(self, caller: Caller, path: str, kind: Kind, deadline: float | None) -> None:
        self.caller = caller
        self.path = path
        self.kind = kind
        self.deadline = deadline  # loop time, or None
        self.requests = Pipe()
        self.responses = Pipe()
        self.server_task: asyncio.Task[None] | None = None
        self.ended: Status | None = None  # set once, by finish or break_
        self._on_end: list[Callable[[Exchange], None]] = []

    def on_end(self, callback: Callable[[Exchange], None]) -> None:
        """Call `callback(self)` once the exchange ended (at once if it has)."""
        if self.ended is not None:
            callback(self)
        else:
            self._on_end.append(callback)

    async def respond(self, raw: bytes) -> None:
        """Server side: one response message, once the caller's window has room."""
        if self.ended is None:
            await self.responses.put(raw)

    def finish(self, status: Status) -> None:
        """Server side: the handler ended with `status` (after the messages sent before it).
        Requests the caller still writes go nowhere, as after grpc's end of a call."""
        if self.ended is not None:
            return
        self._end(status)
        self.responses.put_nowait(status)
        self.requests.fail_now(status)

    def break_(self, status: Status) -> None:
        """End the call at once on both sides (deadline, cancel, server stop, refusal)."""
        if self.ended is not None:
            return
        self._end(status)
        self.responses.fail_now(status)
        self.requests.fail_now(status)
        if self.server_task is not None and not self.server_task.done():
            self.server_task.cancel()

    def _end(self, status: Status) -> None:
        self.ended = status
        callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            callback(self)


class Server(Protocol):
    """What the network needs of a server (`rpc/inproc_server.InprocServer`)."""

    cert_pem: bytes

    def admits(self, cert_pem: bytes | None) -> bool:
        """Would the TLS handshake accept this client certificate now?"""
        ...

    def serve(self, exchange: Exchange) -> Status | None:
        """Start serving `exchange`; the status refusing it, if it is refused."""
        ...


class InprocNetwork:
    """The servers of one process, by the address each is bound to."""

    def __init__(self) -> None:
        self.servers: dict[str, Server] = {}

    def register(self, address: str, server: Server) -> None:
        """`server` answers for `address` from now on."""
        self.servers[address] = server

    def unregister(self, server: Server) -> None:
        """`server` stopped serving."""
        for address in [a for a, s in self.servers.items() if s is server]:
            del self.servers[address]

    def serves(self, address: str) -> bool:
        """Is `address` a server of this process?"""
        return address in self.servers


def _certificates(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem) if pem.strip() else []


def issued_by(cert_pem: bytes | None, roots_pem: bytes, name: str | None = None) -> bool:
    """Does `cert_pem` chain directly to one of `roots_pem` and is it valid now (and, with
    `name`, does it name `name` among its subject alternative names)? What a TLS handshake
    checks of a peer's certificate, for certificates an organisation's CA issues directly."""
    if not cert_pem:
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return False
    if name is not None and not _names(cert, name):
        return False
    return any(issued_directly_by(cert, root) for root in _certificates(roots_pem))


def _names(cert: x509.Certificate, name: str) -> bool:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if name in sans.get_values_for_type(x509.DNSName):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address in sans.get_values_for_type(x509.IPAddress)
