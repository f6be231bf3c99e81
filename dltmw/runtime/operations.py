"""The operations endpoint of a node: HTTP/1.1 on its own port, for scrapers and orchestrators.

| request | answer |
|---|---|
| `GET /metrics` | the node's registry (`runtime/metrics.py`) in the Prometheus text format |
| `GET /healthz` | 200 `ok` while the process runs its tasks; 503 once one failed for good |
| `GET /readyz` | 200 `ready`, or 503 with one reason a line (the rule: `Node.readiness`) |
| `GET /loglevel` | the level the node logs at |
| `PUT /loglevel` (body `DEBUG`) or `POST /loglevel?level=DEBUG` | change it; loopback only |
| `GET /explorer/`, `GET /api/...` | the explorer (`runtime/explorer/`); loopback only |
| `POST /data-key/rotate` | a new data key for encryption at rest (`ledger/at_rest`); loopback |

Why not gRPC health alone: scrapers, load balancers and `curl` speak HTTP, and the node's gRPC
port demands a client certificate of a member organisation, which a monitoring system has no
business holding. So this port asks for none (`[operations] tls = true` serves HTTPS with the
node's own certificate); what it tells is what any process monitor may know. Changing the log
level and rotating the data key are the writes: they are taken from loopback callers only (403
otherwise), so an operator on the host can act, nobody on the network can.

Why h11 on `asyncio.start_server`, not `prometheus_client.start_http_server` or aiohttp: the
former runs a thread per server with its own HTTP stack outside the node's event loop and task
owner; aiohttp is a framework of its own for four routes. h11 is the sans-I/O HTTP/1.1 parser
the house style names as a model (a state machine without I/O, like our cores); the I/O here is
one short coroutine per connection.

Bounded: at most `connections_max` connections at once (more are closed at once), a request
(line, headers, body) of at most `request_bytes_max` bytes, `timeout_s` for a connection's whole
life; one request per connection (`Connection: close`). A client's mistake is a 4xx answer or a
dropped connection (logged at DEBUG: it is the client's fault, not the node's); a bug in a
handler is logged with its traceback and answered 500. The server's accept loop runs under the
node's task owner (`forever`, not restartable): if it ever ends, the node fails loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import h11

from dltmw.aio.tasks import TaskOwner, cancel_and_wait
from dltmw.runtime.config_file import LogLevel, OperationsSettings
from dltmw.runtime.explorer.api import Explorer
from dltmw.runtime.logs import set_level
from dltmw.runtime.metrics import CONTENT_TYPE, NodeMetrics

logger = logging.getLogger(__name__)
TEXT = "text/plain; charset=utf-8"
READ_CHUNK = 4096
LEVELS = frozenset(LogLevel.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Answer:
    """One HTTP response."""

    status: int
    body: bytes
    content_type: str = TEXT
    location: str = ""  # a redirect's target


class Probe:
    """What the endpoint asks the node: alive? ready (and if not, why)?"""

    def __init__(
        self,
        alive: Callable[[], tuple[bool, str]],
        ready: Callable[[], list[str]],
    ) -> None:
        self.alive = alive  # (alive, why not)
        self.ready = ready  # reasons it is not ready; empty when ready


class OperationsServer:
    """The endpoint of one node (see the module docstring). `start` once, `stop` idempotent."""

    def __init__(
        self,
        settings: OperationsSettings,
        metrics: NodeMetrics,
        probe: Probe,
        tasks: TaskOwner,
        tls_files: tuple[Path, Path] | None = None,
        explorer: Explorer | None = None,
        rotate_data_key: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self._rotate_data_key = rotate_data_key  # None: no encryption at rest on this node
        self._explorer = explorer if settings.explorer != "off" else None
        self._metrics = metrics
        self._probe = probe
        self._tasks = tasks
        self._tls_files = tls_files  # (certificate, key) when settings.tls
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._open = 0
        self.address = ""

    async def start(self) -> str:
        """Bind and serve; returns "host:port"."""
        host, _, port = self.settings.listen.rpartition(":")
        context = None
        if self.settings.tls:
            if self._tls_files is None:
                raise ValueError("operations.tls needs the node's TLS certificate and key")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self._tls_files)  # no client certificate asked
        self._server = server = await asyncio.start_server(
            self._connection, host, int(port), ssl=context, reuse_address=True
        )
        bound = server.sockets[0].getsockname()
        self.address = f"{host}:{bound[1]}"
        self._task = self._tasks.forever("operations", server.serve_forever, restart=False)
        return self.address

    async def stop(self) -> None:
        """Stop accepting (cancelling `serve_forever` closes the server), then wait, bounded,
        for the connections in progress (idempotent)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), self.settings.timeout_s)

    # -- one connection ------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self.settings.connections_max:
            writer.close()  # over the bound: refuse at once, nothing read
            return
        self._open += 1
        peer = writer.get_extra_info("peername")
        try:
            await asyncio.wait_for(self._exchange(reader, writer, peer), self.settings.timeout_s)
        except (TimeoutError, ConnectionError, ssl.SSLError, h11.ProtocolError) as exc:
            logger.debug("operations: dropped a connection from %s: %r", peer, exc)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):  # the client went first
                await writer.wait_closed()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.settings.request_bytes_max)
        try:
            parsed = await self._read(conn, reader)
        except h11.RemoteProtocolError as exc:  # malformed or too large: say so, then close
            logger.debug("operations: bad request from %s: %s", peer, exc)
            if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return
            answer = Answer(exc.error_status_hint, f"bad request: {exc}\n".encode())
        else:
            if parsed is None:
                return  # closed before a whole request: nothing to answer
            request, body = parsed
            try:
                answer = await self.answer(request, body, _is_loopback(peer))
            except Exception:
                logger.exception("operations: %s %s failed", request.method, request.target)
                answer = Answer(500, b"internal error\n")
        headers = [
            ("content-type", answer.content_type),
            ("content-length", str(len(answer.body))),
            ("connection", "close"),
        ]
        if answer.location:
            headers.append(("location", answer.location))
        out = conn.send(h11.Response(status_code=answer.status, headers=headers))
        out += conn.send(h11.Data(data=answer.body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        writer.write(out or b"")
        await writer.drain()

    async def _read(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = b""
        received = 0
        limit = self.settings.request_bytes_max
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_CHUNK)  # b"": the client closed
                received += len(data)
                if received > limit:  # h11's own bound covers only an incomplete head
                    raise h11.RemoteProtocolError(f"request over {limit} bytes", 431)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                return request, body
            else:  # ConnectionClosed (or a PAUSED we never reach: one request per connection)
                return None

    # -- routes --------------------------------------------------------------------------------

    async def answer(self, request: h11.Request, body: bytes, loopback: bool) -> Answer:
        """The answer to one request: the explorer's (which reads ledgers, so awaits), or
        `route`'s."""
        target = urlsplit(request.target.decode("ascii", "replace"))
        path = target.path
        if path == "/explorer" or path.startswith(("/explorer/", "/api/")):
            if self._explorer is None:
                return Answer(404, b"no explorer on this node ([operations] explorer)\n")
            if not loopback and self.settings.explorer != "any":
                return Answer(403, b"the explorer is served to loopback callers only\n")
            method = request.method.decode("ascii", "replace")
            status, data, kind = await self._explorer.answer(method, path, parse_qs(target.query))
            return Answer(status, data, kind, "/explorer/" if status == 308 else "")
        return self.route(request, body, loopback)

    def route(self, request: h11.Request, body: bytes, loopback: bool) -> Answer:
        """The answer to one request (`loopback`: the caller is on this host)."""
        method = request.method.decode("ascii", "replace")
        target = urlsplit(request.target.decode("ascii", "replace"))
        path = target.path
        if path == "/loglevel":
            return self._loglevel(method, target.query, body, loopback)
        if path == "/data-key/rotate":
            return self._rotate(method, loopback)
        routes = {"/metrics": self._scrape, "/healthz": self._healthz, "/readyz": self._readyz}
        handler = routes.get(path)
        if handler is None:
            return Answer(404, b"not found: /metrics /healthz /readyz /loglevel\n")
        if method != "GET":
            return Answer(405, b"GET only\n")
        return handler()

    def _scrape(self) -> Answer:
        return Answer(200, self._metrics.exposition(), CONTENT_TYPE)

    def _healthz(self) -> Answer:
        alive, why = self._probe.alive()
        return Answer(200, b"ok\n") if alive else Answer(503, f"failed: {why}\n".encode())

    def _readyz(self) -> Answer:
        reasons = self._probe.ready()
        if not reasons:
            return Answer(200, b"ready\n")
        return Answer(503, ("not ready\n" + "".join(f"{r}\n" for r in reasons)).encode())

    def _loglevel(self, method: str, query: str, body: bytes, loopback: bool) -> Answer:
        if method == "GET":
            return Answer(200, f"{logging.getLevelName(logging.getLogger().level)}\n".encode())
        if method not in ("PUT", "POST"):
            return Answer(405, b"GET, PUT or POST\n")
        if not loopback:
            return Answer(403, b"log level changes are taken from loopback callers only\n")
        asked = parse_qs(query).get("level", [body.decode("utf-8", "replace")])[0]
        level = asked.strip().upper()
        if level not in LEVELS:
            return Answer(400, f"level must be one of {sorted(LEVELS)}\n".encode())
        previous = set_level(level)
        logger.warning("log level changed from %s to %s (operations endpoint)", previous, level)
        return Answer(200, f"{previous} -> {level}\n".encode())

    def _rotate(self, method: str, loopback: bool) -> Answer:
        """Rotate the node's data key without downtime: new writes use the new key, records
        written earlier stay readable under theirs."""
        if self._rotate_data_key is None:
            return Answer(404, b"no encryption at rest on this node ([files] storage_key)\n")
        if method != "POST":
            return Answer(405, b"POST only\n")
        if not loopback:
            return Answer(403, b"data-key rotation is taken from loopback callers only\n")
        key_id = self._rotate_data_key()
        logger.warning("data key %d is now current (operations endpoint)", key_id)
        return Answer(200, f"data key {key_id} current\n".encode())


def _is_loopback(peer: object) -> bool:
    """Is `peer` (a socket's peername) on this host?"""
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        return ipaddress.ip_address(str(peer[0])).is_loopback
    except ValueError:
        return False
