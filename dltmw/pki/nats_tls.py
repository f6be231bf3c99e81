"""The TLS material of a topology's NATS JetStream cluster (`net/nats_plan.py` says how it is used).

Issued by `dltmw init` from the network's own CAs, never by a CA of its own: each member gets a
TLS certificate of the cluster's organisation (the organisation of the first orderer that uses
the cluster) naming its host, so that routes between members and the orderers' connections are
verified like every other link of the network. Who may connect is fixed here too: the subjects
of the TLS certificates of the orderers of the cluster's channels, and the CAs that issued them.

The members' keys are written unencrypted (owner-only, 0600), even when the network's key files
are encrypted under a passphrase: nats-server cannot read an encrypted key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509

from dltmw.net.nats_plan import PLAN_FILE, NatsPlan
from dltmw.pki.ca import FRESH, IssuedCert, Material, issue_cert


def subject_of(cert_pem: bytes) -> str:
    """A certificate's subject as nats-server's `verify_and_map` matches it (attributes in the
    certificate's order, e.g. "CN=orderer0,O=OrdererOrg,OU=orderer")."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return ",".join(attribute.rfc4514_string() for attribute in cert.subject)


def with_tls(
    plan: NatsPlan,
    cas: dict[str, IssuedCert],
    orderers: Iterable[tuple[str, str, Path]],
    material: Material = FRESH,
) -> NatsPlan:
    """`plan` with TLS on: writes each member's certificate and key and the plan's `ca.pem`,
    and lets in exactly `orderers` ((node id, org, its TLS certificate file) each)."""
    clients = list(orderers)
    if not clients:
        raise ValueError("a TLS NATS cluster needs the orderers that use it")
    org = clients[0][1]
    users = tuple(subject_of(path.read_bytes()) for _, _, path in clients)
    plan = dataclasses.replace(plan, tls=True, users=users)
    for member in plan.members:
        hosts = [member.host, "127.0.0.1", "localhost", member.name]
        issued = issue_cert(
            cas[org],
            org,
            f"nats.{member.name}",
            "orderer",
            tls=True,
            hosts=hosts,
            material=material,
        )
        cert, key = plan.tls_files(member)
        cert.parent.mkdir(parents=True, exist_ok=True)
        cert.write_bytes(issued.cert_pem)
        key.write_bytes(issued.key_pem)
        os.chmod(key, 0o600)
    orgs = sorted({org, *(o for _, o, _ in clients)})
    plan.ca_file.parent.mkdir(parents=True, exist_ok=True)
    plan.ca_file.write_bytes(b"".join(cas[o].cert_pem for o in orgs))
    return plan


def admit(plan: NatsPlan, ca_pem: bytes, tls_cert_pem: bytes) -> NatsPlan:
    """`plan` letting in one more client: the subject of `tls_cert_pem` joins `users`, and its
    issuer `ca_pem` joins `ca.pem` if it is not there yet (written now; the members' configs are
    written by the caller's `plan.write()`)."""
    if not plan.tls:
        raise ValueError("the cluster runs without TLS: there is nobody to admit")
    subject = subject_of(tls_cert_pem)
    cas = plan.ca_file.read_bytes()
    if ca_pem not in cas:
        plan.ca_file.write_bytes(cas + ca_pem)
    users = plan.users if subject in plan.users else (*plan.users, subject)
    return dataclasses.replace(plan, users=users)


def jetstream_table_for(out: Path, node_id: str, ca_pem: bytes) -> dict[str, Any]:
    """The `[jetstream]` table of an orderer added after `dltmw init` (`org add-node`) to a
    network that runs a JetStream cluster ({} when it runs none), and the cluster told to let
    it in: its TLS subject and CA are added to the plan and every member's `nats.conf` is
    written again (running members take it on SIGHUP: `NatsCluster.reload`). So a new orderer
    can append to and consume the stream without anyone editing a member's config by hand.
    It is let into the cluster before the channel's admins add it to the channel; until then
    the stream's entries it could append are envelopes that every peer checks anyway, and no
    peer accepts a block it signs (docs/ordering.md)."""
    directory = out / "jetstream"
    if not (directory / PLAN_FILE).exists():
        return {}
    plan = NatsPlan.load(directory)
    table: dict[str, Any] = {"replicas": _replicas(out)}
    if plan.tls:
        plan = admit(plan, ca_pem, (out / "nodes" / node_id / "tls.pem").read_bytes())
        plan.write()
        table["ca_file"] = os.path.relpath(plan.ca_file, out / "nodes" / node_id)
    return {"servers": plan.urls, **table}


def _replicas(out: Path) -> int:
    """The stream replicas the network's orderers were given (`[jetstream] replicas` of any
    orderer's node.toml), so that a new orderer creates or binds the same stream."""
    for path in sorted((out / "nodes").glob("*/node.toml")):
        doc = tomllib.loads(path.read_text())
        if "jetstream" in doc:
            return int(doc["jetstream"].get("replicas", 3))
    raise ValueError(f"{out}: a JetStream cluster but no orderer of it")
