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


def client_options(keepalive: Keepalive = DEFAULT_KEEPALIVE) -> Options:
    """Keepalive options of a client channel (SDK and node-to-node)."""
    return [
        ("grpc.keepalive_time_ms", keepalive.time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # pings are the point of keepalive
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
    ]
