"""The in-process transport (`rpc/inproc*.py`) keeps what nodes rely on from gRPC: flow control,
the caller's identity (mTLS), statuses with ErrorInfo, deadlines, cancellation, half-close.

A real `InprocServer` (wrapping a real, unbound grpc.aio server) with a small test service of
generic handlers; real certificates from the CA code (`pki/ca.py`); the channel of
`rpc/inproc_call.py`, reached through the transport's `inproc_or_grpc`, as nodes reach it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from dltmw.aio.rpc_errors import error_info, reason_of
from dltmw.core.errors import ClientError
from dltmw.pki.ca import IssuedCert, issue_cert, make_ca
from dltmw.rpc.inproc import WINDOW_BYTES, WINDOW_MESSAGES, InprocNetwork
from dltmw.rpc.inproc_call import InprocChannel, inproc_or_grpc
from dltmw.rpc.inproc_server import InprocServer
from dltmw.rpc.status import abort
from dltmw.rpc.tls import TlsMaterial, caller_tls_cert
from dltmw.v1 import errors_pb2

ADDRESS = "127.0.0.1:7001"  # only a name: nothing listens on it
SERVICE = "test.Probe"
TURNS = 200  # loop turns given to the other side before looking (no clock involved)


def _material(org: str, name: str, ca: IssuedCert, roots: bytes) -> TlsMaterial:
    leaf = issue_cert(ca, org, name, "peer", tls=True, hosts=[name, "127.0.0.1"])
    return TlsMaterial(leaf.cert_pem, leaf.key_pem, roots)


class Probe:
    """The test service: what each handler saw, for the tests to check."""

    def __init__(self) -> None:
        self.produced = 0  # Flood: messages handed to the transport
        self.remaining: float | None = None  # Hang: the deadline it saw
        self.hang_ended = asyncio.Event()  # Hang: its handler was ended (cancelled)
        self.consumed: list[bytes] = []  # Sink: what it read
        self.sink_started = asyncio.Event()

    async def who(self, _request: bytes, context: Any) -> bytes:
        return caller_tls_cert(context) or b""

    async def fail(self, _request: bytes, context: Any) -> bytes:
        await abort(context, ClientError(errors_pb2.ERROR_REASON_INVALID_FIELD, "no", {"k": "v"}))
        return b""

    async def hang(self, _request: bytes, context: Any) -> bytes:
        self.remaining = context.time_remaining()
        try:
            await asyncio.Event().wait()
        finally:
            self.hang_ended.set()
        return b""

    async def flood(self, request: bytes, _context: Any) -> AsyncIterator[bytes]:
        size = int(request)
        for _ in range(100_000):
            self.produced += 1
            yield b"x" * size

    async def echo(self, requests: AsyncIterator[bytes], _context: Any) -> AsyncIterator[bytes]:
        async for request in requests:  # ends at the caller's half-close
            yield request
        yield b"end"

    async def sink(self, requests: AsyncIterator[bytes], _context: Any) -> AsyncIterator[bytes]:
        self.sink_started.set()
        await asyncio.Event().wait()  # never reads
        yield b""

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Who": grpc.unary_unary_rpc_method_handler(self.who),
                "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
                "Hang": grpc.unary_unary_rpc_method_handler(self.hang),
                "Flood": grpc.unary_stream_rpc_method_handler(self.flood),
                "Echo": grpc.stream_stream_rpc_method_handler(self.echo),
                "Sink": grpc.stream_stream_rpc_method_handler(self.sink),
            },
        )


class Setup:
    """One server (org A's CA) and the material of callers."""

    def __init__(self) -> None:
        self.ca_a = make_ca("OrgA")
        self.ca_b = make_ca("OrgB")  # trusted by nobody here
        roots = self.ca_a.cert_pem
        self.server_tls = _material("OrgA", "node0", self.ca_a, roots)
        self.client_tls = _material("OrgA", "client1", self.ca_a, roots)
        self.stranger_tls = _material("OrgB", "intruder", self.ca_b, roots)
        self.net = InprocNetwork()
        self.probe = Probe()
        self.server: InprocServer

    async def start(self) -> InprocServer:
        server = InprocServer(self.net, grpc.aio.server(), 1 << 22, 64)
        server.add_generic_rpc_handlers([self.probe.handler()])
        host, port = ADDRESS.rsplit(":", 1)
        server.bind(host, int(port), self.server_tls.cert_pem, lambda: self.ca_a.cert_pem)
        await server.start()
        return server

    def channel(self, tls: TlsMaterial | None = None, name: str = "node0") -> Any:
        channel = inproc_or_grpc(self.net, ADDRESS, name, tls or self.client_tls, 1 << 22)
        assert isinstance(channel, InprocChannel)
        return channel


def _method(channel: Any, kind: str, name: str) -> Any:
    return getattr(channel, kind)(f"/{SERVICE}/{name}")


async def _turns() -> None:
    for _ in range(TURNS):
        await asyncio.sleep(0)


def run(scenario: Any) -> None:
    """`scenario(setup)` with the server started, bounded, the server stopped after it."""

    async def bounded() -> None:
        s = Setup()
        s.server = await s.start()
        try:
            async with asyncio.timeout(30):  # a broken mechanism fails, never hangs the tier
                await scenario(s)
        finally:
            await s.server.stop(0)

    asyncio.run(bounded())


def test_servicer_sees_the_callers_certificate() -> None:
    async def scenario(s: Setup) -> None:
        got = await _method(s.channel(), "unary_unary", "Who")(b"")
        assert got == s.client_tls.cert_pem

    run(scenario)


@pytest.mark.parametrize("who", ["stranger", "no certificate"])
def test_a_caller_no_trusted_ca_issued_is_refused_unavailable(who: str) -> None:
    async def scenario(s: Setup) -> None:
        tls = s.stranger_tls
        if who == "no certificate":
            tls = TlsMaterial(b"", b"", s.ca_a.cert_pem)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _method(s.channel(tls), "unary_unary", "Who")(b"")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    run(scenario)


def test_a_server_with_the_wrong_name_is_refused_unavailable() -> None:
    async def scenario(s: Setup) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _method(s.channel(name="node9"), "unary_unary", "Who")(b"")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    run(scenario)


def test_status_and_error_info_reach_the_caller_as_over_grpc() -> None:
    async def scenario(s: Setup) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await _method(s.channel(), "unary_unary", "Fail")(b"")
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.details() == "INVALID_FIELD: no"
        assert reason_of(failed.value) == "INVALID_FIELD"
        info = error_info(failed.value)
        assert info is not None and dict(info.metadata) == {"k": "v"}

    run(scenario)


def test_a_stalled_reader_holds_the_writer_at_one_window() -> None:
    async def scenario(s: Setup) -> None:
        call = _method(s.channel(), "unary_stream", "Flood")(b"1000")
        await _turns()  # the server writes as long as the window lets it
        assert 0 < s.probe.produced <= WINDOW_MESSAGES + 1
        first = s.probe.produced
        assert len(await call.read()) == 1000  # one read makes room for about one more
        await _turns()
        assert s.probe.produced <= first + 1
        call.cancel()
        big = _method(s.channel(), "unary_stream", "Flood")(b"100000")
        s.probe.produced = 0
        await _turns()
        assert 0 < s.probe.produced <= WINDOW_BYTES // 100_000 + 1  # bounded in bytes too
        big.cancel()

    run(scenario)


def test_a_writer_waits_while_the_server_does_not_read() -> None:
    async def scenario(s: Setup) -> None:
        call = _method(s.channel(), "stream_stream", "Sink")()
        written = 0

        async def write() -> None:
            nonlocal written
            for _ in range(10 * WINDOW_MESSAGES):
                await call.write(b"y")
                written += 1

        writer = asyncio.ensure_future(write())
        await _turns()
        assert not writer.done() and written <= WINDOW_MESSAGES
        call.cancel()
        with pytest.raises(asyncio.InvalidStateError):
            await writer  # the cancel released it

    run(scenario)


def test_half_close_ends_the_request_stream() -> None:
    async def scenario(s: Setup) -> None:
        call = _method(s.channel(), "stream_stream", "Echo")()
        for word in (b"a", b"b"):
            await call.write(word)
        await call.done_writing()
        got = [m async for m in call]
        assert got == [b"a", b"b", b"end"]
        assert await call.code() == grpc.StatusCode.OK

    run(scenario)


def test_the_deadline_ends_the_call_on_both_sides() -> None:
    async def scenario(s: Setup) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await _method(s.channel(), "unary_unary", "Hang")(b"", timeout=0.2)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert s.probe.remaining is not None and 0 < s.probe.remaining <= 0.2
        await s.probe.hang_ended.wait()  # the handler was ended too

    run(scenario)


def test_a_cancel_ends_the_servers_handler() -> None:
    async def scenario(s: Setup) -> None:
        call = _method(s.channel(), "unary_unary", "Hang")(b"")
        await _turns()
        assert call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call.read()
        await s.probe.hang_ended.wait()
        assert call.cancelled()

    run(scenario)


def test_server_stop_ends_open_calls_unavailable_and_refuses_new_ones() -> None:
    async def scenario(s: Setup) -> None:
        channel = s.channel()
        call = _method(channel, "stream_stream", "Sink")()
        await s.probe.sink_started.wait()
        await s.server.stop(0)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not s.net.serves(ADDRESS)

    run(scenario)
