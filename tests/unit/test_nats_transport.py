"""The orderer's nats transport closes a TLS connection in bounded time, even when the peer
never answers close_notify (a partitioned nats-server): nats-py waits for that close before it
reconnects elsewhere, and asyncio alone would wait 30 s (nats_transport.py)."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from nats.aio.transport import TcpTransport

from dltmw.pki.ca import issue_cert, make_ca
from dltmw.runtime.roles.orderer.nats_transport import CLOSE_S, BoundedCloseTransport


async def _silent_tls_server(tmp_path: Path) -> tuple[asyncio.Server, ssl.SSLContext, int]:
    """A TLS server that completes the handshake and then never reads or writes again."""
    ca = make_ca("Org")
    server = issue_cert(ca, "Org", "server", "orderer", tls=True, hosts=["127.0.0.1"])
    (tmp_path / "s.pem").write_bytes(server.cert_pem)
    (tmp_path / "s.key").write_bytes(server.key_pem)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "s.pem", tmp_path / "s.key")
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"INFO {}\r\n")  # plain, then the client upgrades: as nats-server does
        await writer.drain()
        await writer.start_tls(context)
        writer.transport.pause_reading()  # silent from now on: close_notify is never read
        held.append(writer)

    srv = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, ssl.create_default_context(cafile=tmp_path / "ca.pem"), port


async def _close_time(transport: TcpTransport, tmp_path: Path) -> float:
    srv, client_context, port = await _silent_tls_server(tmp_path)
    try:
        uri = urlparse(f"tls://127.0.0.1:{port}")
        await transport.connect(uri, buffer_size=4096, connect_timeout=2)
        assert (await transport.readline()).startswith(b"INFO")
        await transport.connect_tls("127.0.0.1", client_context, 4096, 2)
        started = time.monotonic()
        transport.close()
        await asyncio.wait_for(transport.wait_closed(), 5)
        return time.monotonic() - started
    finally:
        srv.close()


async def test_a_silent_peer_does_not_hold_the_close(tmp_path: Path) -> None:
    took = await _close_time(BoundedCloseTransport(), tmp_path)
    assert took < 3 * CLOSE_S


async def test_without_the_bound_the_close_waits_for_the_peer(tmp_path: Path) -> None:
    """The negative control: nats-py's own transport is still closing after 5 s."""
    with pytest.raises(TimeoutError):
        await _close_time(TcpTransport(), tmp_path)  # type: ignore[no-untyped-call]
