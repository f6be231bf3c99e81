"""A stand-in node on 127.0.0.1 for client tests: a client's signer and a real grpc.aio server
(port 0) with the servicers a test adds."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from dltmw.core.identity import SigningIdentity
from dltmw.pki.ca import issue_cert, make_ca


def client_signer(org: str = "Org1") -> SigningIdentity:
    """A client identity issued by a fresh CA of `org`."""
    issued = issue_cert(make_ca(org), org, "client1", "client")
    return SigningIdentity.from_pem(org, issued.cert_pem, issued.key_pem)


async def serve_local(add: Callable[[grpc.aio.Server], None]) -> tuple[grpc.aio.Server, str]:
    """A started server with what `add` registered, and its address (stop it with `stop`)."""
    server = grpc.aio.server()
    add(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
