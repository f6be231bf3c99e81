"""Certificates of an organisation's own nodes and clients, made or renewed in its directory.

`issue_client` adds a client (or an admin) to an organisation after `dltmw org init` / `dltmw
init`: its keys, certificates and client.toml, from the organisation's own CA — nothing another
organisation holds is needed, and nothing in any channel changes (members are recognised by
their CA). `issue_node` adds a node the same way (its keys, certificates naming its advertised
host, node.toml serving no channel yet, the topology and org definition updated); a peer then
enters a channel by a config update (`channel update --add-peer`, docs/governance.md) and
`channel join`. `renew` gives a node or client new certificates for the keys it has (so a key in an
HSM stays there) before they expire: TLS certificates keep their names; a client's identity
certificate is re-issued as it was. A node's identity certificate is named in channel configs
(`NodeConfig.identity`), so renewing it is a config update's business (docs/governance.md):
`renew` refuses it unless asked (`identity=True`), and says so.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from dltmw.net.keyfile import read_key
from dltmw.net.topology import Topology
from dltmw.pki.ca import FRESH, IssuedCert, Material, certify, san_hosts
from dltmw.pki.nats_tls import jetstream_table_for
from dltmw.pki.network import node_material, write_client, write_node_toml
from dltmw.pki.org import DEFINITION_SUFFIX, check_definition, definition_of, to_json


class RenewError(ValueError):
    """A certificate that cannot be made or renewed here (says why)."""


def issue_client(
    org_dir: Path,
    org: str,
    client_id: str,
    *,
    role: str = "client",
    gateway: str | None = None,
    material: Material = FRESH,
) -> Path:
    """A new client (or admin) of `org`, issued by its CA in `org_dir`; returns its home."""
    if (org_dir / "clients" / client_id).exists():
        raise RenewError(f"{org_dir} already has a client {client_id!r}")
    if role not in ("client", "admin"):
        raise RenewError(f"a client's role is client or admin, not {role!r}")
    raw = Topology.load(org_dir / "topology.toml").raw
    gateways = [n["id"] for n in raw["nodes"] if "gateway" in n["roles"]]
    if gateway is not None and gateway not in gateways:
        raise RenewError(f"{gateway!r} is not a gateway of {org_dir}")
    client = {"id": client_id, "org": org, "role": role}
    return write_client(
        org_dir,
        raw,
        _ca(org_dir, org),
        client | ({"gateway": gateway} if gateway else {}),
        material,
    )


def issue_node(
    org_dir: Path,
    node_id: str,
    roles: Sequence[str],
    *,
    org: str | None = None,
    endpoint: str = "",
    material: Material = FRESH,
) -> Path:
    """A new node of `org` (the directory's only one if None), issued by its CA in `org_dir`;
    returns its home. Checked first (a bad id, role or endpoint changes nothing)."""
    topo_path = org_dir / "topology.toml"
    doc = tomllib.loads(topo_path.read_text())
    orgs = [o["id"] for o in doc.get("orgs", [])]
    if org is None and len(orgs) != 1:
        raise RenewError(f"{org_dir} holds organisations {orgs}: name one (--org)")
    org = org or orgs[0]
    if org not in orgs:
        raise RenewError(f"{org_dir} holds no organisation {org!r}")
    ids = {n["id"] for n in doc.get("nodes", [])} | {c["id"] for c in doc.get("clients", [])}
    if node_id in ids or (org_dir / "nodes" / node_id).exists():
        raise RenewError(f"{org_dir} already has a node or client {node_id!r}")
    node: dict[str, Any] = {"id": node_id, "org": org, "roles": list(roles)}
    if endpoint:
        node["endpoint"] = endpoint
    doc.setdefault("nodes", []).append(node)
    candidate = topo_path.with_suffix(".toml.new")
    candidate.write_text(tomli_w.dumps(doc))
    try:
        raw = Topology.load(candidate).raw  # validates the node (id, roles, endpoint)
    except ValueError:
        candidate.unlink()
        raise
    made = next(n for n in raw["nodes"] if n["id"] == node_id)
    ca = _ca(org_dir, org)
    node_material(org_dir, {org: ca}, made, material)
    # An orderer of a network with a JetStream cluster: let into the cluster, told its servers.
    extra = jetstream_table_for(org_dir, node_id, ca.cert_pem) if "orderer" in roles else {}
    write_node_toml(
        org_dir, made, [], "FULL", "identity.key", {"jetstream": extra} if extra else None
    )
    os.replace(candidate, topo_path)
    definition_file = org_dir / f"{org}{DEFINITION_SUFFIX}"
    if definition_file.exists():  # an org init directory: hand the others the new definition
        definition = definition_of(org_dir, raw)
        check_definition(definition, material.now())
        definition_file.write_text(to_json(definition))
    return org_dir / "nodes" / node_id


@dataclass(frozen=True)
class Renewed:
    """What `renew` did: the files rewritten, and those left alone (with why)."""

    written: tuple[Path, ...]
    skipped: tuple[str, ...]


def _home(org_dir: Path, party: str) -> tuple[Path, bool]:
    for kind, is_node in (("nodes", True), ("clients", False)):
        home = org_dir / kind / party
        if (home / "identity.pem").exists():
            return home, is_node
    raise RenewError(f"{org_dir} has no node or client {party!r}")


def _ca(org_dir: Path, org: str) -> IssuedCert:
    folder = org_dir / "orgs" / org
    if not (folder / "ca.key").exists():
        raise RenewError(f"{org_dir} holds no CA key of {org}: renew where the CA lives")
    return IssuedCert((folder / "ca.pem").read_bytes(), read_key(folder / "ca.key"))


def _subject(cert: x509.Certificate) -> tuple[str, str, str]:
    def one(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    return (
        one(x509.NameOID.COMMON_NAME),
        one(x509.NameOID.ORGANIZATION_NAME),
        one(x509.NameOID.ORGANIZATIONAL_UNIT_NAME),
    )


def expires_within(path: Path, days: float, now: datetime) -> bool:
    """Does the certificate in `path` expire within `days` of `now`?"""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_after_utc - now < timedelta(days=days)


def renew(
    org_dir: Path,
    party: str,
    *,
    identity: bool = False,
    valid_days: int = 825,
    within_days: float | None = None,
    material: Material = FRESH,
) -> Renewed:
    """New certificates for `party`'s existing keys, from its organisation's CA in `org_dir`;
    with `within_days`, only those that expire within that many days."""
    home, is_node = _home(org_dir, party)
    now = material.now()
    written: list[Path] = []
    skipped: list[str] = []
    for name, tls in (("tls.pem", True), ("identity.pem", False)):
        path = home / name
        if not tls and is_node and not identity:
            skipped.append(f"{path}: a node's identity is in channel configs: rotate it by a "
                           "config update (docs/governance.md), or pass identity=True")  # fmt: skip
            continue
        if within_days is not None and not expires_within(path, within_days, now):
            skipped.append(f"{path}: valid for more than {within_days:g} days")
            continue
        old = x509.load_pem_x509_certificate(path.read_bytes())
        cn, org, role = _subject(old)
        public = old.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise RenewError(f"{path}: unsupported key {type(public).__name__}")
        hosts = san_hosts(old) if tls else []
        pem = certify(
            _ca(org_dir, org), org, cn, role, public,
            tls=tls, hosts=hosts, valid_days=valid_days, material=material,
        )  # fmt: skip
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(pem)
        tmp.replace(path)
        written.append(path)
    return Renewed(tuple(written), tuple(skipped))
