"""A TCP relay that delays every byte by a fixed time in each direction: latency between hosts
where the kernel has no `sch_netem` (this CI's VM kernel has neither netem nor fq, so `tc`
cannot add delay). `netlab.NetLab.delay` runs one in a host's namespace in front of each of
its listening nodes: the node listens on the namespace's loopback, the relay on the host's
advertised address, so every connection to the host pays `ms` on the way in and `ms` on the
way out — a round trip of 2·ms, as netem on the sender's egress of both ends would give.

    python delay_relay.py LISTEN_HOST:PORT UPSTREAM_HOST:PORT MS

Prints "listening PORT" once it accepts connections, and "connection" for each one it
accepts. Bytes are forwarded in order; a chunk read at t leaves at t + ms. Each direction holds
at most QUEUE_MAX chunks (then reading stops: TCP flow control pushes back on the sender).
Runs until killed (the lab stops it by PID).
"""

from __future__ import annotations

import asyncio
import functools
import sys

QUEUE_MAX = 256
CHUNK = 65536


async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_MAX)

    async def read() -> None:
        while data := await src.read(CHUNK):
            await queue.put((loop.time() + delay_s, data))
        await queue.put((loop.time() + delay_s, b""))

    async def write() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()

    reader = asyncio.create_task(read())
    try:
        await write()
    finally:
        reader.cancel()


async def serve(
    upstream: tuple[str, int],
    delay_s: float,
    c_reader: asyncio.StreamReader,
    c_writer: asyncio.StreamWriter,
) -> None:
    """One connection: open the upstream one, pump both ways, close both at the end."""
    print("connection", flush=True)  # the lab counts them: traffic did come this way
    try:
        u_reader, u_writer = await asyncio.open_connection(*upstream)
    except OSError:
        c_writer.close()
        return
    try:
        await asyncio.gather(pump(c_reader, u_writer, delay_s), pump(u_reader, c_writer, delay_s))
    except OSError:
        pass  # either end went away: close both
    finally:
        for w in (c_writer, u_writer):
            w.close()


async def main(listen: str, upstream: str, ms: float) -> None:
    lhost, lport = listen.rsplit(":", 1)
    uhost, uport = upstream.rsplit(":", 1)
    handler = functools.partial(serve, (uhost, int(uport)), ms / 1000)
    server = await asyncio.start_server(handler, lhost, int(lport))
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
