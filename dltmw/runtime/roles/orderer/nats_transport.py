"""nats-py's client with a TLS connection that closes in bounded time.

Why: when a client leaves a server (two pings unanswered, e.g. the server's host was cut off
by a network partition), nats-py closes its transport and waits for it to be closed before it
reconnects to another server (`Client._attempt_reconnect`; nats-io/nats.py#671). Over TLS,
asyncio closes gracefully: it sends close_notify and waits for the peer's, up to its 30 s
`ssl_shutdown_timeout`, which nats-py does not set. A partitioned server never answers, so the
orderer stayed on it for ~35 s instead of ~5. Here the graceful close gets CLOSE_S; after that
the socket is aborted (nothing is lost: whatever the client had not flushed was not
acknowledged, and is published again or refused as ORDERING_UNAVAILABLE).

nats-py keeps a transport set before it first connects for every reconnect, as long as the
transport counts as true (`__bool__`), so a `Client` given a `BoundedCloseTransport` is all it
takes. Found by the partition test (tests/integration/test_jetstream_partition.py): without
it, an orderer whose server was cut off went on failing for ~35 s, with it ~5 s.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client
from nats.aio.transport import TcpTransport

CLOSE_S = 1.0


class BoundedCloseTransport(TcpTransport):
    """nats-py's TCP/TLS transport whose `wait_closed` ends within CLOSE_S (see above)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def __bool__(self) -> bool:
        """Always set: nats-py makes a transport of its own when its transport is falsy (a
        TcpTransport is until it connects), and would replace this one."""
        return True

    async def wait_closed(self) -> None:
        writer = self._io_writer
        if writer is None:
            return
        closed = asyncio.ensure_future(writer.wait_closed())
        try:  # shielded: a cancelled wait would cancel the protocol's own "closed" future
            await asyncio.wait_for(asyncio.shield(closed), CLOSE_S)
        except TimeoutError:
            writer.transport.abort()  # the peer never answered close_notify
        with contextlib.suppress(OSError):
            await closed


def bounded_close_client() -> Client:
    """A nats-py client whose connections close in bounded time (see the module docstring)."""
    client = Client()
    client._transport = BoundedCloseTransport()  # kept by nats-py across reconnects
    return client
