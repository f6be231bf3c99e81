"""What one gRPC message costs a process at a low rate: a bidi ping-pong between two processes.

    PYTHONPATH=. .venv/bin/python -m benchmarks.grpc_ping [round_trips] [gap_ms] [tls NETWORK_DIR]

A server process echoes every message of one bidirectional stream; this process writes one
1,000-byte message every `gap_ms` (default 10: 100 messages/s) and awaits its echo. Both run
uvloop and grpc.aio with the node's flow-control options (`rpc/channel_options.py`), as a node
does; with `tls NETWORK_DIR` (a network made by `dltmw init` or `dltmw bench --keep`) both ends
use peer0.org1's TLS certificate, as node-to-node links do. It prints the CPU of each process
per round trip — one message sent and one received by each side — and the round trip's p50.

Why: at one transaction per block (issue 13's 100 tx/s, issue 14's lone bus message) a
transaction is carried by ~11 gRPC messages across the client, the orderer and two peers, and
the no-Python-frame share of a node's loop thread (gRPC's completion queue poller thread and
event-engine threads waking the loop, uvloop, syscalls) was the largest item of every profile
(benchmarks/RESULTS.md, branches fix17 and lat15). This sizes that item without the rest of the
node: the difference between `gap_ms` 0 and 10 is the host's cost of waking idle threads.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import uvloop

from dltmw.rpc.channel_options import flow_control_options

MESSAGE = b"x" * 1000
WARM_UP = 20
METHOD = "/ping.Ping/Echo"


def _credentials(network: Path | None, server: bool) -> tuple[object | None, list[tuple[str, str]]]:
    if network is None:
        return None, []
    node = network / "nodes" / "peer0.org1"
    roots = (network / "tls-roots.pem").read_bytes()
    if server:
        pair = ((node / "tls.key").read_bytes(), (node / "tls.pem").read_bytes())
        return grpc.ssl_server_credentials([pair], roots, False), []
    return grpc.ssl_channel_credentials(roots), [("grpc.ssl_target_name_override", "peer0.org1")]


async def _echo(requests: AsyncIterator[bytes], _: object) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message


async def serve(network: Path | None) -> None:
    """Echo server on a free port of 127.0.0.1; prints the port, serves until killed."""
    server = grpc.aio.server(options=flow_control_options())
    handler = grpc.method_handlers_generic_handler(
        "ping.Ping", {"Echo": grpc.stream_stream_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    credentials, _ = _credentials(network, server=True)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)  # type: ignore[arg-type]
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def ping(port: int, network: Path | None, round_trips: int, gap_s: float) -> None:
    """`round_trips` messages, each `gap_s` after the previous echo; prints the figures."""
    credentials, extra = _credentials(network, server=False)
    options = [*flow_control_options(), *extra]
    target = f"127.0.0.1:{port}"
    if credentials is None:
        channel = grpc.aio.insecure_channel(target, options=options)
    else:
        channel = grpc.aio.secure_channel(target, credentials, options=options)  # type: ignore[arg-type]
    call = channel.stream_stream(METHOD)()
    for _ in range(WARM_UP):
        await call.write(MESSAGE)
        await call.read()
    latencies = []
    used = os.times()
    for _ in range(round_trips):
        await asyncio.sleep(gap_s)
        start = time.perf_counter()
        await call.write(MESSAGE)
        await call.read()
        latencies.append((time.perf_counter() - start) * 1e3)
    done = os.times()
    await call.done_writing()
    await channel.close()
    cpu_ms = (done.user + done.system - used.user - used.system) / round_trips * 1e3
    print(f"client CPU {cpu_ms:.3f} ms per round trip, p50 {statistics.median(latencies):.2f} ms")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(args: list[str]) -> None:
    round_trips = int(args[0]) if args else 500
    gap_s = float(args[1]) / 1e3 if len(args) > 1 else 0.01
    network = Path(args[3]) if args[2:3] == ["tls"] else None
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.grpc_ping",
            "serve",
            *([str(network)] if network else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        before = _cpu_s(server.pid)
        uvloop.run(ping(port, network, round_trips, gap_s))
        spent = _cpu_s(server.pid) - before
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"server CPU {spent / (round_trips + WARM_UP) * 1e3:.3f} ms per round trip"
        f" (its {WARM_UP} warm-up round trips included; /proc ticks of 10 ms);"
        f" {'TLS' if network else 'plaintext'}, gap {gap_s * 1e3:.0f} ms,"
        f" 1-min load {Path('/proc/loadavg').read_text().split()[0]}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        uvloop.run(serve(Path(sys.argv[2]) if len(sys.argv) > 2 else None))
    else:
        main(sys.argv[1:])
