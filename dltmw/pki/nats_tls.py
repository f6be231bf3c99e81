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
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from dltmw.net.nats_plan import NatsPlan
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
