"""How a node reaches other nodes and is reached: the transport seam.

A node makes outbound channels (`NodeContext.channel_to`) and its one server (`Node.start`)
through a `Transport`. In production that is `GRPC`: grpc.aio over mutual TLS, with the message
sizes and keepalive every dltmw node agrees on. The simulator (`dltmw/sim`) passes its own: an
in-process network that routes the same serialized messages to the target node's registered
handlers with seeded delays, losses and partitions. Everything above — stubs, servicers, the
request boundary, roles — is the same code in both. `InprocTransport` is for nodes that share
one process (`dltmw.open(transport="inproc")`): calls between them go through
`rpc/inproc*.py` (bounded pipes, the same identity checks and statuses, no HTTP/2 or TLS), and
every node still listens on its gRPC port for callers outside the process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import grpc

from dltmw.rpc.channel_options import Keepalive, server_options
from dltmw.rpc.inproc import InprocNetwork
from dltmw.rpc.inproc_call import inproc_or_grpc
from dltmw.rpc.inproc_server import InprocServer
from dltmw.rpc.tls import TlsMaterial, secure_channel
from dltmw.runtime.config import Limits


class Transport(Protocol):
    """Channels to other nodes, and this node's server."""

    def channel(
        self,
        address: str,
        server_name: str,
        tls: TlsMaterial,
        max_message_bytes: int,
        keepalive: Keepalive,
    ) -> grpc.aio.Channel:
        """A channel to the node `server_name` listening at `address`."""
        ...

    def server(self, node_id: str, limits: Limits, keepalive: Keepalive) -> grpc.aio.Server:
        """The (not yet started) server of node `node_id`."""
        ...

    def listen(
        self,
        server: grpc.aio.Server,
        address: str,
        tls: TlsMaterial,
        roots: Callable[[], bytes] | None = None,
    ) -> int:
        """Bind `server` to `address` ("host:port", port 0 = any); returns the port. `roots`:
        the client CAs to trust, asked at each handshake (default: `tls.roots_pem`)."""
        ...


class GrpcTransport:
    """grpc.aio with mutual TLS (production)."""

    def channel(
        self,
        address: str,
        server_name: str,
        tls: TlsMaterial,
        max_message_bytes: int,
        keepalive: Keepalive,
    ) -> grpc.aio.Channel:
        """An mTLS channel (`rpc/tls.secure_channel`)."""
        return secure_channel(address, server_name, tls, max_message_bytes, keepalive)

    def server(self, node_id: str, limits: Limits, keepalive: Keepalive) -> grpc.aio.Server:
        """A grpc.aio server bounded by `limits`, with the keepalive policy clients follow."""
        return grpc.aio.server(
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                ("grpc.so_reuseport", 0),
                *server_options(keepalive),
            ],
        )

    def listen(
        self,
        server: grpc.aio.Server,
        address: str,
        tls: TlsMaterial,
        roots: Callable[[], bytes] | None = None,
    ) -> int:
        """A secure port requiring client certificates."""
        return server.add_secure_port(address, tls.server_credentials(roots))


GRPC = GrpcTransport()


class InprocTransport:
    """Nodes of one process call each other in process; gRPC for everyone else."""

    def __init__(self, net: InprocNetwork) -> None:
        self.net = net

    def channel(
        self,
        address: str,
        server_name: str,
        tls: TlsMaterial,
        max_message_bytes: int,
        keepalive: Keepalive,
    ) -> grpc.aio.Channel:
        """In process if a server of this process is bound to `address`, else over gRPC."""
        return inproc_or_grpc(self.net, address, server_name, tls, max_message_bytes, keepalive)

    def server(self, node_id: str, limits: Limits, keepalive: Keepalive) -> grpc.aio.Server:
        """The node's gRPC server, serving in-process callers too."""
        grpc_server = GRPC.server(node_id, limits, keepalive)
        return InprocServer(  # type: ignore[return-value]
            self.net, grpc_server, limits.max_message_bytes, limits.max_concurrent_rpcs
        )

    def listen(
        self,
        server: grpc.aio.Server,
        address: str,
        tls: TlsMaterial,
        roots: Callable[[], bytes] | None = None,
    ) -> int:
        """The gRPC port, and the same address for in-process callers."""
        port = GRPC.listen(server, address, tls, roots)
        inproc = server if isinstance(server, InprocServer) else None
        if inproc is not None:
            host = address.rsplit(":", 1)[0]
            inproc.bind(host, port, tls.cert_pem, roots or (lambda: tls.roots_pem))
        return port
