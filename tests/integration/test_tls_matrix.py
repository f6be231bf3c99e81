"""The TLS matrix: every node's listener refuses every bad client certificate, and a node's
outbound side refuses a server presenting a client-only certificate.

Inbound, against every node of a network with every role (solo orderer, two peers with gateways,
a notary), with a client certificate that is expired, not yet valid, issued by an unknown CA,
without the clientAuth extended key usage, or without the digitalSignature key usage:
* a raw TLS client (Python's ssl) presents it — its handshake trace shows Certificate and
  CertificateVerify sent — and the node must serve nothing (no HTTP/2 SETTINGS frame back). The
  raw client is needed because gRPC's own TLS stack refuses to present a certificate without
  digitalSignature, which would make a gRPC-only test pass without the node checking anything;
* a signed AdminService.NodeStatus of an admin of the node's own organisation over gRPC with it
  fails with UNAVAILABLE.
A valid certificate of ANOTHER organisation than the signer's gets PERMISSION_DENIED with reason
TLS_IDENTITY_MISMATCH. The controls: a certificate minted the same way with the right shape is
served by every node, raw and over gRPC.

Outbound: the orderer is stopped and its address-book entry pointed at a fake TLS server whose
certificate (issued by the orderer org's CA, naming the orderer) carries only the clientAuth
usage. The peer's deliver loop dials it; the fake records every handshake and the peer must
abort each one. The control: a fake with a proper server certificate completes handshakes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dltmw.client.files import ClientFiles
from dltmw.net.addressbook import AddressBook
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.ca import IssuedCert, make_ca
from dltmw.pki.network import init_network
from dltmw.rpc.status import reason_of
from dltmw.rpc.tls import TlsMaterial, secure_channel
from dltmw.v1 import admin_service_pb2, admin_service_pb2_grpc

pytestmark = pytest.mark.integration
A = admin_service_pb2
S = grpc.StatusCode
TOPOLOGY = """
name = "tls-matrix"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "OrdererOrg"
[[orgs]]
id = "NotaryOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway"]
[[nodes]]
id = "notary0"
org = "NotaryOrg"
roles = ["notary"]
[[clients]]
id = "user1.org1"
org = "Org1"
[[channels]]
id = "trades"
members = ["Org1", "Org2"]
orderers = ["orderer0"]
contracts = [{ name = "kv", endorsement_policy = "OR(Org1.peer, Org2.peer)" }]
batch = { max_tx_count = 10, max_bytes = 1048576, timeout_ms = 50 }
"""
NODES = {
    "orderer0": "OrdererOrg",
    "peer0.org1": "Org1",
    "peer0.org2": "Org2",
    "notary0": "NotaryOrg",
}
HOUR = timedelta(hours=1)
CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]
BOTH = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@dataclass(frozen=True)
class Shape:
    """How to mint one test certificate."""

    not_before: timedelta = -HOUR  # relative to now
    not_after: timedelta = 24 * HOUR
    eku: tuple[x509.ObjectIdentifier, ...] = tuple(BOTH)
    digital_signature: bool = True
    unknown_ca: bool = False
    other_org: bool = False


def mint(ca: IssuedCert, org: str, name: str, shape: Shape) -> IssuedCert:
    """A P-256 TLS leaf issued by `ca` (cryptography directly: the shapes pki never makes)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    usage = x509.KeyUsage(
        digital_signature=shape.digital_signature,
        content_commitment=False,
        key_encipherment=not shape.digital_signature,  # a usage, just not the right one
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "client"),
        ]
    )
    hosts = [x509.DNSName(name), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + shape.not_before)
        .not_valid_after(now + shape.not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(shape.eku)), critical=False)
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def org_ca(net: Path, org: str) -> IssuedCert:
    home = net / "orgs" / org
    return IssuedCert((home / "ca.pem").read_bytes(), (home / "ca.key").read_bytes())


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    tmp = tmp_path_factory.mktemp("tls")
    (tmp / "topology.toml").write_text(TOPOLOGY)
    init_network(tmp / "topology.toml", tmp / "net")
    sup = Supervisor(tmp / "net")
    try:
        sup.up(timeout_s=90)
        yield tmp / "net", sup
    finally:
        codes = {n: sup.stop(n) for n in list(sup.nodes)}
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


async def node_status(net: Path, node: str, tls: TlsMaterial | None) -> grpc.aio.AioRpcError | None:
    """NodeStatus signed by the admin of `node`'s org over `tls` (default: the admin's own)."""
    admin = ClientFiles.load(net, f"admin.{NODES[node].lower()}")
    address = admin.addresses.lookup(node)
    assert address is not None
    channel = secure_channel(address, node, tls or admin.tls, 4 * 1024 * 1024)
    try:
        query = A.NodeStatusQuery(requester=admin.signer.identity_bytes)
        query.timestamp.FromDatetime(datetime.now(UTC))
        data = query.SerializeToString()
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        request = A.NodeStatusRequest(query=data, signature=admin.signer.sign(data))
        await stub.NodeStatus(request, timeout=10)
        return None
    except grpc.aio.AioRpcError as exc:
        return exc
    finally:
        await channel.close(None)


CASES = {
    "expired": Shape(not_before=-48 * HOUR, not_after=-HOUR),
    "not-yet-valid": Shape(not_before=HOUR, not_after=48 * HOUR),
    "unknown-ca": Shape(unknown_ca=True),
    "no-clientAuth-usage": Shape(eku=(ExtendedKeyUsageOID.SERVER_AUTH,)),
    "no-digitalSignature-usage": Shape(digital_signature=False),
}


async def test_a_minted_certificate_of_the_right_shape_is_served(
    net: tuple[Path, Supervisor], tmp_path: Path
) -> None:
    """The control for the matrix: `mint` and `probe` themselves work."""
    path, _ = net
    roots = (path / "tls-roots.pem").read_bytes()
    for node, org in NODES.items():
        cert = mint(org_ca(path, org), org, f"admin.{org.lower()}", Shape())
        address = AddressBook(path / "run" / "endpoints").lookup(node)
        assert address is not None
        assert probe(address, node, cert, roots, tmp_path) == (True, True), node
        error = await node_status(path, node, TlsMaterial(cert.cert_pem, cert.key_pem, roots))
        assert error is None, f"{node} refused a well-formed certificate: {error}"


@pytest.mark.parametrize("case", sorted(CASES))
async def test_every_listener_refuses_a_bad_client_certificate(
    net: tuple[Path, Supervisor], case: str, tmp_path: Path
) -> None:
    path, _ = net
    roots = (path / "tls-roots.pem").read_bytes()
    shape = CASES[case]
    for node, org in NODES.items():
        ca = make_ca("Intruder") if shape.unknown_ca else org_ca(path, org)
        cert = mint(ca, org, f"admin.{org.lower()}", shape)
        address = AddressBook(path / "run" / "endpoints").lookup(node)
        assert address is not None
        presented, served = probe(address, node, cert, roots, tmp_path)
        assert presented, f"the raw client did not present the {case} certificate"
        assert not served, f"{node} served a client with a {case} certificate"
        error = await node_status(path, node, TlsMaterial(cert.cert_pem, cert.key_pem, roots))
        assert error is not None, f"{node} served a gRPC client with a {case} certificate"
        assert error.code() == S.UNAVAILABLE, f"{node}, {case}: {error.code()} {error.details()}"


async def test_every_listener_refuses_a_tls_certificate_of_another_org(
    net: tuple[Path, Supervisor],
) -> None:
    path, _ = net
    roots = (path / "tls-roots.pem").read_bytes()
    for node, org in NODES.items():
        assert await node_status(path, node, None) is None, f"control: {node} refused its admin"
        other = next(o for o in ("Org1", "Org2") if o != org)
        cert = mint(org_ca(path, other), other, f"admin.{other.lower()}", Shape())
        error = await node_status(path, node, TlsMaterial(cert.cert_pem, cert.key_pem, roots))
        assert error is not None, f"{node} served a signer of {org} over a TLS cert of {other}"
        assert error.code() == S.PERMISSION_DENIED, f"{node}: {error.code()} {error.details()}"
        assert reason_of(error) == "TLS_IDENTITY_MISMATCH", node


HANDSHAKE, CERTIFICATE, CERTIFICATE_VERIFY = 22, 11, 15
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def probe(
    address: str, node: str, cert: IssuedCert, roots: bytes, folder: Path
) -> tuple[bool, bool]:
    """(certificate presented, served): a raw TLS client presents `cert`, then speaks the HTTP/2
    preface; a node that accepted the handshake answers with its SETTINGS frame."""
    (folder / "probe.pem").write_bytes(cert.cert_pem)
    (folder / "probe.key").write_bytes(cert.key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=roots.decode())
    ctx.load_cert_chain(folder / "probe.pem", folder / "probe.key")
    ctx.set_alpn_protocols(["h2"])
    sent: set[int] = set()

    def trace(_c: object, direction: str, _v: object, content: int, kind: int, _d: bytes) -> None:
        if direction == "write" and content == HANDSHAKE:
            sent.add(int(kind))

    ctx._msg_callback = trace  # type: ignore[attr-defined]  # handshake trace (CPython >= 3.8)
    host, port = address.rsplit(":", 1)
    served = False
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=node) as tls:
                tls.sendall(H2_PREFACE)
                served = bool(tls.recv(64))
        except (ssl.SSLError, OSError):
            served = False
    return {CERTIFICATE, CERTIFICATE_VERIFY} <= sent, served


class FakeTlsServer:
    """A TLS listener that records the outcome of every handshake (bounded in count and time)."""

    def __init__(self, cert: IssuedCert, roots: bytes, folder: Path) -> None:
        (folder / "fake.pem").write_bytes(cert.cert_pem)
        (folder / "fake.key").write_bytes(cert.key_pem)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(folder / "fake.pem", folder / "fake.key")
        self._ctx.load_verify_locations(cadata=roots.decode())
        self._ctx.verify_mode = ssl.CERT_REQUIRED
        self._ctx.set_alpn_protocols(["h2"])
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for _ in range(3000):  # 0.2 s accept timeout: at most ~10 min, stopped far earlier
            if self._stop.is_set() or len(self.outcomes) >= 50:
                return
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with self._ctx.wrap_socket(conn, server_side=True):
                    self.outcomes.append("handshake completed")
            except (ssl.SSLError, OSError) as exc:
                self.outcomes.append(f"refused: {exc}")
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


async def _handshakes(fake: FakeTlsServer, count: int, timeout_s: float) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(fake.outcomes) < count:
        assert loop.time() < deadline, f"the peer did not dial the fake: {fake.outcomes}"
        await asyncio.sleep(0.1)
    return list(fake.outcomes)


async def test_a_node_refuses_a_server_presenting_a_client_certificate(
    net: tuple[Path, Supervisor], tmp_path: Path
) -> None:
    """The peers follow orderer0 (Deliver); orderer0 is replaced by a fake at its address."""
    path, sup = net
    roots = (path / "tls-roots.pem").read_bytes()
    ca = org_ca(path, "OrdererOrg")
    book = AddressBook(path / "run" / "endpoints")
    assert sup.stop("orderer0") == 0
    client_only = FakeTlsServer(
        mint(ca, "OrdererOrg", "orderer0", Shape(eku=tuple(CLIENT))), roots, tmp_path
    )
    try:
        book.publish("orderer0", client_only.address)
        outcomes = await _handshakes(client_only, 2, 60)
        assert all(o.startswith("refused") for o in outcomes), outcomes
    finally:
        client_only.close()
    proper = FakeTlsServer(mint(ca, "OrdererOrg", "orderer0", Shape()), roots, tmp_path)
    try:  # the control: the same dialling completes a handshake with a proper server cert
        book.publish("orderer0", proper.address)
        outcomes = await _handshakes(proper, 1, 60)
        assert "handshake completed" in outcomes, outcomes
    finally:
        proper.close()
        sup.start("orderer0")
        await asyncio.to_thread(sup.wait_ready, "orderer0", 60)
