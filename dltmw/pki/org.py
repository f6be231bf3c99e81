"""Per-organisation key custody: `dltmw org init` and `dltmw channel create`.

`dltmw init` makes a whole network in one directory, every organisation's keys included: right
for one machine, wrong for a consortium. Here each organisation runs `init_org` on its own host,
from a topology naming only itself, its nodes and clients; its directory holds its own keys
only, and it hands the others an *org definition* (`org_pb2.OrgDefinition`, JSON): its root CA
certificate, its nodes' identities, privacy public keys, advertised endpoints and TLS
certificates — no private key. The organisation that runs the channel's first orderer builds
block 0 from the definitions (`create_channel`) and signs it with that orderer's key, in its
own directory; the others receive the block and join their nodes to it. No step needs another
organisation's private key.

Every definition is checked before anything is written (`check_definition`): certificates
chain to the organisation's own root, name the node (CN) with its role (OU), and a node with
an advertised endpoint has a TLS certificate of its organisation that names that host.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from google.protobuf import json_format

from dltmw.contracts import BUILTIN, builtin_package_id
from dltmw.core.channel import ConfigError, channel_view
from dltmw.core.creator_batch import CREATOR_BATCHES
from dltmw.core.genesis import make_genesis
from dltmw.core.identity import IdentityError, Membership, identity_bytes, tls_org_matches
from dltmw.net.addressbook import split_endpoint
from dltmw.net.keyfile import read_key
from dltmw.net.netmap import FILE_NAME as NETWORK_MAP
from dltmw.net.netmap import check_clusters, cluster_members
from dltmw.net.signer import key_ref, load_signer
from dltmw.net.topology import Topology
from dltmw.pki.ca import FRESH, Material, names_host
from dltmw.pki.network import ORDERING, HsmPlan, init_network, majority_policy
from dltmw.v1 import config_pb2, identity_pb2, org_pb2, private_agreement_pb2

DEFINITION_SUFFIX = ".org.json"


class DefinitionError(ValueError):
    """An org definition that cannot be used (names the organisation, the node and the fault)."""


def init_org(
    topology_path: Path,
    out: Path,
    synchronous: str = "FULL",
    material: Material = FRESH,
    hsm: HsmPlan | None = None,
) -> org_pb2.OrgDefinition:
    """Make one organisation's directory (its CA, nodes, clients; no channel) and write its
    definition to `out/<org>.org.json`; returns it."""
    raw = Topology.load(topology_path).raw
    if len(raw["orgs"]) != 1 or raw.get("channels") or raw.get("notary_clusters"):
        raise ValueError(
            "org init takes a topology of ONE organisation with its nodes and clients "
            "(no channels: `dltmw channel create` makes them from org definitions)"
        )
    init_network(topology_path, out, synchronous, material, hsm)
    definition = definition_of(out, raw)
    check_definition(definition, material.now())
    (out / f"{raw['orgs'][0]['id']}{DEFINITION_SUFFIX}").write_text(to_json(definition))
    return definition


def definition_of(out: Path, raw: dict[str, Any]) -> org_pb2.OrgDefinition:
    """The definition of the one organisation of `raw` whose directory is `out`."""
    org = raw["orgs"][0]["id"]
    definition = org_pb2.OrgDefinition(
        organization=config_pb2.OrganizationConfig(
            org_id=org, root_certificate_pem=(out / "orgs" / org / "ca.pem").read_bytes()
        )
    )
    for node in raw["nodes"]:
        home = out / "nodes" / node["id"]
        entry = node_entry(home, org, node["id"], node.get("endpoint", ""))
        if "orderer" in node["roles"]:
            definition.orderers.append(entry)
        if "peer" in node["roles"]:
            definition.peers.append(entry)
        definition.parties.add(
            node_id=node["id"],
            roles=node["roles"],
            identity=entry.identity,
            endpoint=entry.endpoint,
            validating=bool(node.get("validating", False)),
        )
        definition.tls_certificates[node["id"]] = (home / "tls.pem").read_bytes()
    return definition


def node_entry(home: Path, org: str, node_id: str, endpoint: str = "") -> config_pb2.NodeConfig:
    """How a channel config names the node whose directory is `home`: its identity (from its
    certificate; never its signing key, which may be in an HSM), its privacy manager's public
    key (peers) and its advertised endpoint."""
    entry = config_pb2.NodeConfig(
        node_id=node_id,
        org_id=org,
        identity=identity_bytes(org, (home / "identity.pem").read_bytes()),
        endpoint=endpoint,
    )
    if (home / "privacy.key").exists():
        key = serialization.load_pem_private_key(read_key(home / "privacy.key"), None)
        if not isinstance(key, X25519PrivateKey):
            raise DefinitionError(f"{home / 'privacy.key'} is not an X25519 key")
        entry.privacy_public_key = key.public_key().public_bytes_raw()
    return entry


def to_json(definition: org_pb2.OrgDefinition) -> str:
    """The definition as the JSON file organisations exchange."""
    return json_format.MessageToJson(definition, indent=2, sort_keys=True) + "\n"


def load_definition(path: Path) -> org_pb2.OrgDefinition:
    """Read an org definition file; DefinitionError if it is not one."""
    try:
        return json_format.Parse(path.read_text(), org_pb2.OrgDefinition())
    except (OSError, json.JSONDecodeError, json_format.ParseError) as exc:
        raise DefinitionError(f"{path}: not an org definition: {exc}") from exc


def check_definition(definition: org_pb2.OrgDefinition, now: datetime) -> None:
    """Raise DefinitionError unless every certificate of the definition is its organisation's,
    names its node and role, and every advertised endpoint is named by the node's TLS cert."""
    org = definition.organization.org_id
    if not org or not definition.organization.root_certificate_pem:
        raise DefinitionError("an org definition needs the organisation's id and root CA")
    try:
        membership = Membership({org: definition.organization.root_certificate_pem})
    except ValueError as exc:
        raise DefinitionError(f"{org}: root CA certificate: {exc}") from exc
    seen: set[str] = set()
    for role, nodes in (("peer", definition.peers), ("orderer", definition.orderers)):
        for node in nodes:
            where = f"{org} {role} {node.node_id!r}"
            if node.org_id != org:
                raise DefinitionError(f"{where}: belongs to {node.org_id!r}, not {org!r}")
            _check_identity(membership, node, role, now, where)
            _check_tls(membership, definition, node, where)
            seen.add(node.node_id)
    for party in definition.parties:
        where = f"{org} node {party.node_id!r}"
        role = "orderer" if list(party.roles) == ["orderer"] else "peer"  # as init issues them
        entry = config_pb2.NodeConfig(
            node_id=party.node_id, org_id=org, identity=party.identity, endpoint=party.endpoint
        )
        _check_identity(membership, entry, role, now, where)
        _check_tls(membership, definition, entry, where)
        seen.add(party.node_id)
    if not seen:
        raise DefinitionError(f"{org}: the definition names no node")


def _check_identity(
    membership: Membership, node: config_pb2.NodeConfig, role: str, now: datetime, where: str
) -> None:
    try:
        identity = membership.identify(node.identity, now)
    except IdentityError as exc:
        raise DefinitionError(f"{where}: identity: {exc}") from exc
    if identity.common_name != node.node_id:
        raise DefinitionError(f"{where}: its certificate names {identity.common_name!r}")
    if role not in identity.roles:
        article = "an" if role[0] in "aeiou" else "a"
        roles = sorted(identity.roles)
        raise DefinitionError(f"{where}: its certificate is not {article} {role}'s (roles {roles})")


def _check_tls(
    membership: Membership,
    definition: org_pb2.OrgDefinition,
    node: config_pb2.NodeConfig,
    where: str,
) -> None:
    pem = definition.tls_certificates.get(node.node_id)
    if pem is None:
        raise DefinitionError(f"{where}: no TLS certificate")
    if not tls_org_matches(pem, membership, node.org_id):
        raise DefinitionError(f"{where}: TLS certificate is not issued by {node.org_id}'s CA")
    if not node.endpoint:
        return
    try:
        host, _ = split_endpoint(node.endpoint)
    except ValueError as exc:
        raise DefinitionError(f"{where}: {exc}") from exc
    if not names_host(x509.load_pem_x509_certificate(pem), host):
        raise DefinitionError(f"{where}: TLS certificate does not name its endpoint host {host!r}")


@dataclass(frozen=True)
class ChannelPlan:
    """What `dltmw channel create` is asked for besides the definitions."""

    channel_id: str
    members: Sequence[str]
    orderers: Sequence[str]
    ordering: str = "none"
    endorsement_policy: str = ""
    max_tx_count: int = 100
    timeout_ms: int = 250
    contracts: Sequence[tuple[str, str]] = (("bank", ""), ("kv", ""))
    cut_by_limits_only: bool = False  # Fabric's rule (BatchConfig.cut_by_limits_only)


def create_channel(
    org_dir: Path,
    plan: ChannelPlan,
    definitions: Sequence[org_pb2.OrgDefinition],
    material: Material = FRESH,
) -> Path:
    """Build and sign block 0 of `plan` from checked definitions, with the key of its first
    orderer — a node of the organisation whose directory `org_dir` is; returns the block file
    (`org_dir/channels/<channel>.block`). Nothing is written if anything is refused."""
    now = material.now()
    by_org = {}
    for definition in definitions:
        check_definition(definition, now)
        org = definition.organization.org_id
        if org in by_org:
            raise DefinitionError(f"two definitions of {org}")
        by_org[org] = definition
    config = _config(plan, by_org)
    try:
        channel_view(config)
    except ConfigError as exc:
        raise DefinitionError(f"channel {plan.channel_id}: {exc}") from exc
    first = plan.orderers[0]
    node_toml = org_dir / "nodes" / first / "node.toml"
    if not node_toml.exists():
        raise DefinitionError(f"{org_dir} holds no orderer {first!r}: run this where it lives")
    node = tomllib.loads(node_toml.read_text())
    home = node_toml.parent
    files = node["files"]
    signer = load_signer(
        node["node"]["org"], home / files["identity_cert"], key_ref(home, files["identity_key"])
    )
    block = make_genesis(config, signer, material.nonce(f"genesis.{plan.channel_id}"), now)
    path = org_dir / "channels" / f"{plan.channel_id}.block"
    if path.exists():
        raise DefinitionError(f"{path} exists: a channel is created once")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(block.SerializeToString())
    return path


def write_network_map(
    org_dir: Path,
    definitions: Sequence[org_pb2.OrgDefinition],
    clusters: Mapping[str, Sequence[str]] | None = None,
    now: datetime | None = None,
) -> Path:
    """Write `org_dir/network-map.toml` (the UTXO parties and notaries, `net/netmap.py`) from
    checked definitions, every certificate inline: every organisation building it from the
    same definitions gets the same map. `clusters`: notary clusters, id -> member node ids."""
    raw: dict[str, Any] = {"orgs": [], "nodes": [], "notary_clusters": []}
    doc: dict[str, Any] = {"orgs": {}, "nodes": [], "notaries": [], "notary_clusters": []}
    for definition in definitions:
        check_definition(definition, now or datetime.now(UTC))
        org = definition.organization.org_id
        if org in doc["orgs"]:
            raise DefinitionError(f"two definitions of {org}")
        doc["orgs"][org] = definition.organization.root_certificate_pem.decode()
        for party in definition.parties:
            identity = identity_pb2.Identity.FromString(party.identity)
            cert = x509.load_der_x509_certificate(identity.certificate_der)
            pem = cert.public_bytes(serialization.Encoding.PEM).decode()
            node = {"id": party.node_id, "org": org, "roles": list(party.roles), "identity": pem}
            doc["nodes"].append(node | ({"endpoint": party.endpoint} if party.endpoint else {}))
            raw["nodes"].append(node | {"validating": party.validating})
    for cluster, members in (clusters or {}).items():
        raw["notary_clusters"].append({"id": cluster, "members": list(members)})
    try:
        check_clusters(raw)
    except ValueError as exc:
        raise DefinitionError(str(exc)) from exc
    in_clusters = cluster_members(raw)
    doc["notaries"] = [
        {"id": n["id"], "validating": n["validating"]}
        for n in raw["nodes"]
        if "notary" in n["roles"] and n["id"] not in in_clusters
    ]
    doc["notary_clusters"] = raw["notary_clusters"]
    path = org_dir / NETWORK_MAP
    path.write_text(tomli_w.dumps(doc))
    return path


def _config(
    plan: ChannelPlan, by_org: dict[str, org_pb2.OrgDefinition]
) -> config_pb2.ChannelConfig:
    missing = sorted(set(plan.members) - set(by_org))
    if missing:
        raise DefinitionError(f"no definition of member(s) {missing}")
    orderers = {o.node_id: (org, o) for org, d in by_org.items() for o in d.orderers}
    if unknown := sorted(set(plan.orderers) - set(orderers)):
        raise DefinitionError(f"orderer(s) {unknown} are in no definition")
    if plan.ordering not in ORDERING:
        raise DefinitionError(f"ordering must be one of {sorted(ORDERING)}")
    config = config_pb2.ChannelConfig(
        channel_id=plan.channel_id,
        ordering=ORDERING[plan.ordering],
        private_agreement=private_agreement_pb2.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS,
        private_agreement_batches=True,  # signed per batch: core/privacy/agreement_batch.py
        creator_batches=CREATOR_BATCHES,  # clients sign per request: core/creator_batch.py
        private_creator_batches=CREATOR_BATCHES,  # their private envelopes too
        endorsement_batches=True,  # signed per batch: core/endorsement_batch.py
        identity_references=True,  # config nodes sign by reference: core/identity.py
        client_identity_references=True,  # clients too: core/identity_table.py
        default_endorsement_policy=plan.endorsement_policy or majority_policy(plan.members),
        batch=config_pb2.BatchConfig(
            max_tx_count=plan.max_tx_count,
            max_bytes=1024 * 1024,
            timeout_ms=plan.timeout_ms,
            cut_by_limits_only=plan.cut_by_limits_only,
            # PBFT-lite's protocol flags, as `dltmw init` sets them (docs/ordering.md)
            pbft_dissemination=True,
            pbft_collector=True,
            pbft_carried_batches=True,
        ),
    )
    for org in plan.members:
        config.organizations.append(by_org[org].organization)
        config.peers.extend(by_org[org].peers)
    for org in sorted({orderers[o][0] for o in plan.orderers}):
        config.orderer_organizations.append(by_org[org].organization)
    config.orderers.extend(orderers[o][1] for o in plan.orderers)
    for name, policy in plan.contracts:
        pid = builtin_package_id(name) if name in BUILTIN else ""  # installed by init_org
        config.contracts.add(name=name, endorsement_policy=policy, package_id=pid)
    return config


__all__ = [
    "DEFINITION_SUFFIX",
    "ChannelPlan",
    "DefinitionError",
    "check_definition",
    "create_channel",
    "init_org",
    "load_definition",
    "write_network_map",
    "to_json",
]
