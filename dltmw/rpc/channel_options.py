"""gRPC channel and server options in one place, so both ends of every link agree on keepalive.

Keepalive is a contract between the two ends of a connection. A client sends an HTTP/2 ping after
`time_ms` without traffic (also when no call is open, so an idle link is known to be alive before
the next call needs it) and drops the connection if the ack does not come within `timeout_ms`.
A gRPC server, by default, expects at most one ping per 5 minutes while it sends no data and none
at all without an open call; every ping outside that policy is a "strike", and after 2 strikes it
closes the connection with GOAWAY "too_many_pings" — which is what happened to every idle dltmw
link when clients pinged every 20 s against default servers. So every dltmw server declares the
policy its clients follow:

* `min_recv_ping_interval_ms` <= the clients' `time_ms`: a client's pings are never strikes;
* `permit_without_calls` on both ends: an idle connection (no open call) may be pinged;
* the server pings its clients too (`time_ms`), so a vanished client's calls and streams end.

Node servers (`runtime/node.py`), node-to-node channels (`runtime/context.py`) and the SDK
(`client/*`, through `rpc/tls.secure_channel`) all take their options from here; a node's values
come from the `[keepalive]` table of its node.toml (defaults below), the SDK uses the defaults.
Lowering a client's `time_ms` below a server's `min_recv_ping_interval_ms` brings the strikes
back, so change both together. (grpc's client pings at most about once a second whatever its
`time_ms`, as tests/integration/test_keepalive.py measured; intervals below 1 s mean 1 s.)

Receive window (`flow_control_options`, both ends). gRPC's bandwidth-delay-product probing grows
a stream's HTTP/2 window without a fixed bound; a peer catching up by Deliver (blocks of
~250 KB, arriving faster than it commits) then held many megabytes of blocks in gRPC's buffers:
it peaked at 116-147 MB where a node idles at ~90 MB (issue 18 asks for 100 MB). With probing
off, the window is `RECEIVE_WINDOW_BYTES` per stream: what the sender may run ahead of the
reader. 1 MiB per round trip is ~10 GB/s on loopback and ~20 MB/s at a 50 ms WAN round trip,
more than a peer commits.
"""

from __future__ import annotations

from dataclasses import dataclass

Options = list[tuple[str, int | str]]


@dataclass(frozen=True)
class Keepalive:
    """Keepalive settings shared by servers and clients (see the module docstring)."""

    time_ms: int = 20_000
    timeout_ms: int = 10_000
    min_recv_ping_interval_ms: int = 10_000

    def __post_init__(self) -> None:
        if min(self.time_ms, self.timeout_ms, self.min_recv_ping_interval_ms) <= 0:
            raise ValueError("keepalive intervals must be positive")
        if self.min_recv_ping_interval_ms > self.time_ms:
            raise ValueError(
                "keepalive.min_recv_ping_interval_ms must not exceed keepalive.time_ms: the"
                " server would count the clients' own pings as strikes (GOAWAY too_many_pings)"
            )


DEFAULT_KEEPALIVE = Keepalive()
RECEIVE_WINDOW_BYTES = 1024 * 1024  # per stream (module docstring)


def flow_control_options() -> Options:
    """A fixed receive window per stream instead of BDP probing (module docstring)."""
    return [
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", RECEIVE_WINDOW_BYTES),
    ]


def client_options(keepalive: Keepalive = DEFAULT_KEEPALIVE) -> Options:
    """Keepalive options of a client channel (SDK and node-to-node)."""
    return [
        ("grpc.keepalive_time_ms", keepalive.time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # pings are the point of keepalive
        *flow_control_options(),
    ]


def server_options(keepalive: Keepalive = DEFAULT_KEEPALIVE) -> Options:
    """Keepalive policy of a node's server: accepts its clients' pings, and pings them."""
    return [
        ("grpc.keepalive_time_ms", keepalive.time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",  # GRPC_ARG_HTTP2_MIN_RECV_PING_..._MS
            keepalive.min_recv_ping_interval_ms,
        ),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.http2.max_pings_without_data", 0),
        *flow_control_options(),
    ]
