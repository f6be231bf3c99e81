"""An organisation issues and renews its own parties' certificates (`pki/certs.py`): a new
client from its CA alone; renewal keeps each key (and so an HSM key stays in its token) and
each TLS name, never silently changes a node's identity (it is named in channel configs), and
only touches what expires soon when asked so."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dltmw.core.identity import Membership
from dltmw.net.topology import Topology
from dltmw.pki.ca import san_hosts
from dltmw.pki.certs import RenewError, issue_client, issue_node, renew
from dltmw.pki.network import init_network
from dltmw.runtime.config import NodeConfig
from dltmw.v1 import identity_pb2

TOPOLOGY = """
[[orgs]]
id = "Org1"
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
endpoint = "peer0.example:7051"
"""


@pytest.fixture
def org_dir(tmp_path: Path) -> Path:
    (tmp_path / "t.toml").write_text(TOPOLOGY)
    init_network(tmp_path / "t.toml", tmp_path / "org1")
    return tmp_path / "org1"


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _spki(cert: x509.Certificate) -> bytes:
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*raw)


def test_a_new_client_is_issued_by_its_own_organisations_ca(org_dir: Path) -> None:
    home = issue_client(org_dir, "Org1", "user7.org1", role="admin")
    cert = _cert(home / "identity.pem")
    der = cert.public_bytes(serialization.Encoding.DER)
    identity = identity_pb2.Identity(org_id="Org1", certificate_der=der).SerializeToString()
    who = Membership({"Org1": (org_dir / "orgs/Org1/ca.pem").read_bytes()}).identify(
        identity, datetime.now(UTC)
    )
    assert who.common_name == "user7.org1" and who.roles == {"admin"}
    toml = (home / "client.toml").read_text()
    assert 'gateway = "peer0.org1"' in toml and 'gateway_endpoint = "peer0.example:7051"' in toml
    with pytest.raises(RenewError, match="already has"):
        issue_client(org_dir, "Org1", "user7.org1")
    with pytest.raises(RenewError, match="client or admin"):
        issue_client(org_dir, "Org1", "user8.org1", role="peer")
    with pytest.raises(RenewError, match="not a gateway"):
        issue_client(org_dir, "Org1", "user9.org1", gateway="nope")


def test_renewal_keeps_keys_and_names_and_not_a_nodes_identity(org_dir: Path) -> None:
    node = org_dir / "nodes" / "peer0.org1"
    before = {n: _cert(node / n) for n in ("identity.pem", "tls.pem")}
    done = renew(org_dir, "peer0.org1", valid_days=1000)
    assert done.written == (node / "tls.pem",)
    assert "config update" in done.skipped[0] and "identity.pem" in done.skipped[0]
    tls = _cert(node / "tls.pem")
    assert (
        _spki(tls) == _spki(before["tls.pem"])
        and tls.serial_number != before["tls.pem"].serial_number
    )
    assert tls.not_valid_after_utc > before["tls.pem"].not_valid_after_utc
    san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "peer0.example" in san.get_values_for_type(x509.DNSName)
    assert (node / "identity.pem").read_bytes() == before["identity.pem"].public_bytes(
        serialization.Encoding.PEM
    )
    done = renew(org_dir, "peer0.org1", identity=True, within_days=30)
    assert done.written == () and len(done.skipped) == 2  # nothing expires within 30 days
    client = org_dir / "clients" / "admin.org1"
    old = _cert(client / "identity.pem")
    assert renew(org_dir, "admin.org1").written == (client / "tls.pem", client / "identity.pem")
    assert _spki(_cert(client / "identity.pem")) == _spki(old)


def test_renewal_needs_the_organisations_ca_key(org_dir: Path) -> None:
    (org_dir / "orgs" / "Org1" / "ca.key").unlink()
    with pytest.raises(RenewError, match="holds no CA key of Org1"):
        renew(org_dir, "admin.org1")
    with pytest.raises(RenewError, match="no node or client 'ghost'"):
        renew(org_dir, "ghost")


def test_a_new_node_is_issued_by_its_own_organisations_ca(org_dir: Path) -> None:
    """`issue_node`: keys and certificates from the org's CA (the TLS one names the advertised
    host), node.toml serving no channel, the node in the topology; a bad request changes
    nothing."""
    home = issue_node(org_dir, "peer1.org1", ["peer", "gateway"], endpoint="peer1.example:7051")
    cert = _cert(home / "identity.pem")
    der = cert.public_bytes(serialization.Encoding.DER)
    identity = identity_pb2.Identity(org_id="Org1", certificate_der=der).SerializeToString()
    who = Membership({"Org1": (org_dir / "orgs/Org1/ca.pem").read_bytes()}).identify(
        identity, datetime.now(UTC)
    )
    assert who.common_name == "peer1.org1" and who.roles == {"peer"}
    assert "peer1.example" in san_hosts(_cert(home / "tls.pem"))
    assert (home / "privacy.key").exists()  # a peer's privacy manager key
    config = NodeConfig.load(home / "node.toml")
    assert (config.node_id, config.genesis_blocks) == ("peer1.org1", ())
    topology = Topology.load(org_dir / "topology.toml").raw
    assert [n["id"] for n in topology["nodes"]] == ["peer0.org1", "peer1.org1"]
    before = (org_dir / "topology.toml").read_text()
    for bad, match in (
        (("peer1.org1", ["peer"]), "already has"),
        (("peer2.org1", ["ruler"]), "roles"),
        (("bad id!", ["peer"]), "id"),
    ):
        with pytest.raises(ValueError, match=match):
            issue_node(org_dir, *bad)  # type: ignore[arg-type]
        assert not (org_dir / "nodes" / bad[0]).exists() or bad[0] == "peer1.org1"
    with pytest.raises(RenewError, match="no organisation"):
        issue_node(org_dir, "peer3.org1", ["peer"], org="Org9")
    assert (org_dir / "topology.toml").read_text() == before
    assert not list(org_dir.glob("*.new"))
