"""A stream's sender runs at most about one receive window ahead of a slow reader
(`rpc/channel_options.flow_control_options`, on both ends of every dltmw link).

Real grpc.aio server and channel on 127.0.0.1 with the options dltmw uses: the server streams
256 KB messages (a block of 100 transactions is ~250 KB) as fast as flow control lets it; the
reader takes them in bursts with pauses, as a peer committing blocks does. With gRPC's default
bandwidth-delay-product probing the window grew and the server ran ~20 messages (5 MB) ahead,
all held in the reader's buffers; with the fixed window it stays near `RECEIVE_WINDOW_BYTES`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from dltmw.rpc.channel_options import RECEIVE_WINDOW_BYTES, client_options, server_options

MESSAGE_BYTES = 256 * 1024
READ = 100


async def _most_ahead() -> int:
    written = 0

    async def stream(request: bytes, context: object) -> AsyncIterator[bytes]:
        nonlocal written
        for _ in range(READ * 2):
            yield b"x" * MESSAGE_BYTES
            written += 1

    handler = grpc.method_handlers_generic_handler(
        "t.S", {"S": grpc.unary_stream_rpc_method_handler(stream)}
    )
    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    most = 0
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=client_options()
        ) as channel:
            call = channel.unary_stream("/t.S/S")(b"", timeout=60)
            read = 0
            async for _ in call:
                read += 1
                if read % 20 == 0:  # a burst taken, then the reader is busy for a while
                    await asyncio.sleep(0.3)
                    most = max(most, written - read)
                if read >= READ:
                    break
            call.cancel()
    finally:
        await server.stop(0)
    return most


async def test_a_slow_readers_sender_stays_within_about_one_receive_window() -> None:
    ahead = await _most_ahead()
    assert ahead * MESSAGE_BYTES <= 3 * RECEIVE_WINDOW_BYTES, f"{ahead} messages ahead"
