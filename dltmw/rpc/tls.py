"""Mutual TLS for every link: server credentials, client channels, and the caller's TLS cert.

Every node and client holds a TLS certificate issued by its organisation's CA; servers require
client certificates and trust the CAs of every organisation in the network. A link to a node
expects the name its address book gives (`net/addressbook.py`, `link_tls`): on one machine the
node id (its certificate's SANs name the id, 127.0.0.1 and localhost), across hosts its
advertised host — and then only its own organisation's CA is trusted for that link.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc

from dltmw.net.addressbook import AddressBook
from dltmw.net.keyfile import read_key
from dltmw.rpc.channel_options import DEFAULT_KEEPALIVE, Keepalive, client_options


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes of one party's TLS key pair and the trusted roots."""

    cert_pem: bytes
    key_pem: bytes
    roots_pem: bytes

    @staticmethod
    def load(cert: Path, key: Path, roots: Path) -> TlsMaterial:
        """Read the three PEM files."""
        return TlsMaterial(cert.read_bytes(), read_key(key), roots.read_bytes())

    def server_credentials(
        self, roots: Callable[[], bytes] | None = None
    ) -> grpc.ServerCredentials:
        """Server side: present our cert, require a client cert chaining to a known root —
        `roots_pem`, or what `roots()` gives at each handshake: a node trusts the CAs of the
        organisations of the channels it serves, which change when it joins one (or a config
        update adds an organisation), so the CAs are asked again whenever a client connects."""
        pair = [(self.key_pem, self.cert_pem)]
        if roots is None:
            return grpc.ssl_server_credentials(
                pair, root_certificates=self.roots_pem, require_client_auth=True
            )
        current = [roots()]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            now = roots()
            if now == current[0]:
                return None  # unchanged: gRPC keeps the configuration it has
            current[0] = now
            return grpc.ssl_server_certificate_configuration(pair, root_certificates=now)

        initial = grpc.ssl_server_certificate_configuration(pair, root_certificates=current[0])
        return grpc.dynamic_ssl_server_credentials(  # (grpc-stubs: the fetcher may return None)
            initial,
            fetch,  # type: ignore[arg-type]
            require_client_authentication=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client side: verify the server against the roots, present our cert."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.roots_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


def link_tls(tls: TlsMaterial, book: AddressBook, node_id: str) -> tuple[str, TlsMaterial]:
    """The server name to expect from `node_id` and the TLS material to reach it with: a node
    with an advertised endpoint must present a certificate for that host from its own
    organisation's CA (another organisation's certificate fails the handshake)."""
    route = book.route(node_id)
    if route is None:
        return node_id, tls
    return route.tls_name, replace(tls, roots_pem=route.roots_pem)


def secure_channel(
    address: str,
    server_name: str,
    tls: TlsMaterial,
    max_message_bytes: int,
    keepalive: Keepalive = DEFAULT_KEEPALIVE,
    extra: Sequence[tuple[str, str | int]] = (),
) -> grpc.aio.Channel:
    """An mTLS channel to `address` expecting a certificate for `server_name`, with the keepalive
    every dltmw server permits (`rpc/channel_options.py`) and the caller's `extra` options
    (e.g. the SDK's retry policy)."""
    options = [
        ("grpc.ssl_target_name_override", server_name),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        *client_options(keepalive),
        *extra,
    ]
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=options)


def caller_tls_cert(context: grpc.aio.ServicerContext[object, object]) -> bytes | None:
    """PEM of the caller's TLS client certificate, if the transport carried one."""
    auth = context.auth_context()
    certs = list(auth.get("x509_pem_cert", ())) if auth else []
    return certs[0] if certs else None
