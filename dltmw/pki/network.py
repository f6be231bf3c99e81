"""`dltmw init`: turn a topology TOML into a ready-to-run network directory.

Layout written under OUT (all paths inside config files are relative, so OUT can be moved):

    topology.toml                 copy of the input
    tls-roots.pem                 every organisation's root CA (trusted for mTLS)
    orgs/<org>/ca.pem, ca.key     the organisation's root CA
    nodes/<id>/node.toml          node config; identity.pem/.key; tls.pem/.key; data/
    nodes/<id>/data/contracts/    a peer's installed contract packages: every built-in's, which
                                  block 0 deploys by package id (`install_builtins`)
    nodes/<id>/privacy.key        a peer's X25519 privacy-manager key (PKCS8 PEM); its public
                                  key goes into the signed channel config (NodeConfig entry), so
                                  senders wrap payload keys for an authenticated key, never for
                                  one read from an unsigned file
    nodes/<id>/storage.key        with `encrypt_at_rest = true`: the key that wraps the node's
                                  data keys (ledger/at_rest.py), a key file like the others
    nodes/<id>/privacy-kem.key    an ML-KEM-768 privacy-manager key (PKCS8 PEM), for peers of a
                                  channel with `private_key_wrap = "x25519-mlkem768"` only; its
                                  public key is published in that channel's config the same way
    clients/<id>/client.toml      client config; identity.pem/.key; tls.pem/.key
    network-map.toml              UTXO parties and notaries (see dltmw/net/netmap.py)
    channels/<channel>.block      config block 0, signed by the channel's first orderer
    run/endpoints/<id>            written by each node when it serves (port 0)

With `--hsm ID` (`HsmPlan`) the signing key of node or client ID is made inside a PKCS#11 token
instead: no identity.key is written, and its `identity_key` is the key's PKCS#11 URI.

Every organisation also gets an admin client `admin.<org>` (role admin). The topology is
validated first (`net/topology.py`: unknown keys and dangling references are refused with their
key path), so nothing is written for a topology that cannot be built.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from dltmw.contracts import BUILTIN, builtin_package, builtin_package_id
from dltmw.core.channel import channel_view
from dltmw.core.creator_batch import CREATOR_BATCHES
from dltmw.core.genesis import make_genesis
from dltmw.core.identity import SigningIdentity
from dltmw.net.addressbook import split_endpoint
from dltmw.net.hsm import Pkcs11Key, Pkcs11Uri, generate
from dltmw.net.keyfile import for_writing
from dltmw.net.nats_plan import NatsPlan
from dltmw.net.netmap import FILE_NAME as NETWORK_MAP
from dltmw.net.netmap import write_network_map
from dltmw.net.topology import Topology
from dltmw.pki.ca import FRESH, IssuedCert, Material, certify, issue_cert, make_ca
from dltmw.pki.nats_tls import with_tls
from dltmw.v1 import algorithms_pb2, config_pb2, private_agreement_pb2

ORDERING = {
    "none": config_pb2.ORDERING_TYPE_NONE,
    "pbft": config_pb2.ORDERING_TYPE_PBFT,
    "jetstream": config_pb2.ORDERING_TYPE_JETSTREAM,
}
KEM_FILE = "privacy-kem.key"
DATA_DIR = "data"  # a node's data directory, relative to its node.toml
STORAGE_KEY_FILE = "storage.key"
KEY_WRAP = {
    "x25519": algorithms_pb2.KEY_WRAP_ALGORITHM_UNSPECIFIED,  # absent: old configs' bytes
    "x25519-mlkem768": algorithms_pb2.KEY_WRAP_ALGORITHM_X25519_MLKEM768,
}


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write a file; a private key encrypted under the environment's passphrase, if one is
    given (`net/keyfile.py`), and readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(for_writing(data) if private else data)
    if private:
        os.chmod(path, 0o600)


def _identity(cert: IssuedCert, org: str) -> SigningIdentity:
    return SigningIdentity.from_pem(org, cert.cert_pem, cert.key_pem)


@dataclass(frozen=True)
class HsmPlan:
    """Whose signing keys `init_network` makes inside a PKCS#11 token (`net/hsm.py`): the
    nodes and clients named in `ids`, each as a key pair labelled with its id; the module is
    written into each URI so the node finds it without an environment variable."""

    token: str
    module: str
    ids: frozenset[str]

    def uri(self, pid: str) -> Pkcs11Uri:
        """Where `pid`'s key lives."""
        return Pkcs11Uri(self.token, pid, self.module)


def _token_identity(
    out: Path, ca: IssuedCert, org: str, pid: str, role: str, uri: Pkcs11Uri, material: Material
) -> SigningIdentity:
    """A signing key made in the token and its certificate; no key file is written."""
    cert_pem = certify(ca, org, pid, role, generate(uri), material=material)
    _write(out / "identity.pem", cert_pem)
    return SigningIdentity.from_external(org, cert_pem, Pkcs11Key(uri))


def _party(
    out: Path,
    cas: dict[str, IssuedCert],
    org: str,
    pid: str,
    role: str,
    tls_hosts: list[str],
    material: Material = FRESH,
    hsm: HsmPlan | None = None,
    key_type: str = "p256",
) -> SigningIdentity:
    """Issue identity and TLS certs of a node or client into `out` (its signing key in the
    token if `hsm` names it; the TLS key stays a file: gRPC's TLS stack reads it); the identity
    key is `key_type` (docs/privacy.md: ML-DSA identities)."""
    hosts = tls_hosts or [pid]
    tls = issue_cert(cas[org], org, pid, role, tls=True, hosts=hosts, material=material)
    _write(out / "tls.pem", tls.cert_pem)
    _write(out / "tls.key", tls.key_pem, private=True)
    if hsm is not None and pid in hsm.ids:
        return _token_identity(out, cas[org], org, pid, role, hsm.uri(pid), material)
    ident = issue_cert(cas[org], org, pid, role, key_type=key_type, material=material)
    _write(out / "identity.pem", ident.cert_pem)
    _write(out / "identity.key", ident.key_pem, private=True)
    return _identity(ident, org)


def _files(home: Path, root: Path, org: str, key: str = "identity.key") -> dict[str, str]:
    def rel(p: Path) -> str:
        return os.path.relpath(p, home)

    return {
        "identity_cert": "identity.pem",
        "identity_key": key,
        "tls_cert": "tls.pem",
        "tls_key": "tls.key",
        "tls_roots": rel(root / "tls-roots.pem"),
        "org_ca": rel(root / "orgs" / org / "ca.pem"),
        "address_book": rel(root / "run" / "endpoints"),
        "network_map": rel(root / NETWORK_MAP),
    }


def init_network(
    topology_path: Path,
    out: Path,
    synchronous: str = "FULL",
    material: Material = FRESH,
    hsm: HsmPlan | None = None,
) -> Topology:
    """Generate all key material, configs and genesis blocks for a topology (keys, nonces and
    times from `material`: fresh ones unless the simulator asks for its fixed derivation;
    the signing keys `hsm` names are made in its token)."""
    topo = Topology.load(topology_path)
    raw = topo.raw
    if hsm is not None:
        known = {n["id"] for n in raw["nodes"]} | {c["id"] for c in _clients(raw)}
        if unknown := sorted(hsm.ids - known):
            raise ValueError(f"--hsm names no node or client of the topology: {unknown}")

    def key_of(pid: str) -> str:
        return str(hsm.uri(pid)) if hsm is not None and pid in hsm.ids else "identity.key"

    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(topology_path, out / "topology.toml")
    cas = {o["id"]: make_ca(o["id"], material=material) for o in raw["orgs"]}
    for org, ca in cas.items():
        _write(out / "orgs" / org / "ca.pem", ca.cert_pem)
        _write(out / "orgs" / org / "ca.key", ca.key_pem, private=True)
    _write(out / "tls-roots.pem", b"".join(ca.cert_pem for ca in cas.values()))
    identities: dict[str, SigningIdentity] = {}
    privacy: dict[str, bytes] = {}
    kem: dict[str, bytes] = {}
    hybrid = [c for c in raw.get("channels", []) if c.get("private_key_wrap") == "x25519-mlkem768"]
    for node in raw["nodes"]:
        if "standby_of" in node:
            continue  # after its active: it holds the active's identity (standby_material)
        identities[node["id"]], public = node_material(out, cas, node, material, hsm)
        if public is not None:
            privacy[node["id"]] = public
            if any(_serves(node, c, raw) for c in hybrid):
                seed = material.privacy_kem_seed(node["id"])
                kem[node["id"]] = _privacy_kem_key(out / "nodes" / node["id"], seed)
    if raw.get("encrypt_at_rest"):
        for node in raw["nodes"]:
            _storage_key(out / "nodes" / node["id"])
    for node in raw["nodes"]:
        if "standby_of" in node:
            standby_material(out, cas, node, material)
    for client in _clients(raw):
        write_client(out, raw, cas[client["org"]], client, material, hsm, key_of(client["id"]))
    write_network_map(out, raw)
    for ch in raw.get("channels", []):
        config = _channel_config(ch, raw, cas, identities, privacy)
        _add_key_wrap(config, ch, kem)
        channel_view(config)  # validates policies and limits before anything runs
        first = identities[ch["orderers"][0]]
        nonce = material.nonce(f"genesis.{ch['id']}")
        block = make_genesis(config, first, nonce, material.now())
        _write(out / "channels" / f"{ch['id']}.block", block.SerializeToString())
    jetstream = _jetstream_plan(raw, out, cas, material)
    for node in raw["nodes"]:
        joined = [c["id"] for c in raw.get("channels", []) if _serves(node, c, raw)]
        extra = {"jetstream": jetstream} if jetstream and "orderer" in node["roles"] else {}
        write_node_toml(
            out, node, joined, synchronous, key_of(node.get("standby_of", node["id"])), extra
        )
    return topo


def _jetstream_plan(
    raw: dict[str, Any], out: Path, cas: dict[str, IssuedCert], material: Material
) -> dict[str, Any]:
    """The topology's NATS cluster planned under `out/jetstream` (ports fixed now; `dltmw up`
    starts it; with `tls`, its certificates, and the orderers of its channels as the only
    clients: `pki/nats_tls.py`), and the `[jetstream]` table of its orderers' node.toml ({}
    without one)."""
    spec = raw.get("jetstream")
    if spec is None:
        return {}
    plan = NatsPlan.fresh(out / "jetstream", spec["servers"], hosts=spec.get("hosts", ()))
    table: dict[str, Any] = {}
    if spec.get("tls", True):
        orgs = {n["id"]: n["org"] for n in raw["nodes"]}
        ids = [
            o
            for c in raw.get("channels", [])
            if c.get("ordering") == "jetstream"
            for o in c["orderers"]
        ]
        orderers = [(o, orgs[o], out / "nodes" / o / "tls.pem") for o in dict.fromkeys(ids)]
        plan = with_tls(plan, cas, orderers, material)
        table["ca_file"] = os.path.relpath(plan.ca_file, out / "nodes" / "x")
    plan.write()
    return {"servers": plan.urls, "replicas": spec["replicas"], **table}


def node_material(
    out: Path,
    cas: dict[str, IssuedCert],
    node: dict[str, Any],
    material: Material = FRESH,
    hsm: HsmPlan | None = None,
) -> tuple[SigningIdentity, bytes | None]:
    """A node's keys and certificates in `out/nodes/<id>` (its TLS certificate names its
    advertised host, if any); its identity and, for a peer, its privacy public key."""
    role = "orderer" if node["roles"] == ["orderer"] else "peer"
    hosts = ["127.0.0.1", "localhost", node["id"]]
    if "endpoint" in node:  # the advertised name every link to it verifies
        hosts.append(split_endpoint(node["endpoint"])[0])
    home = out / "nodes" / node["id"]
    key_type = node.get("key_type", "p256")
    identity = _party(home, cas, node["org"], node["id"], role, hosts, material, hsm, key_type)
    if "peer" not in node["roles"]:
        return identity, None
    install_builtins(home)
    return identity, _privacy_key(home, material.privacy_key(node["id"]))


def install_builtins(home: Path) -> None:
    """Install every built-in contract's package on the peer whose directory is `home`, where
    AdminService.InstallContract stores packages (`data/contracts/<id>.zip`,
    runtime/contract_store.py, which checks the bytes against the id when it loads them; the
    built-ins pass the install check: tests/unit/test_contract_package.py). Block 0 names their
    ids (`deployed_package_id`), so the peer runs them as packages from its first block — and a
    channel created later, or a peer added later, finds them installed too."""
    for name in sorted(BUILTIN):
        _write(
            home / DATA_DIR / "contracts" / f"{builtin_package_id(name)}.zip", builtin_package(name)
        )


def deployed_package_id(contract: dict[str, Any]) -> str:
    """The package id block 0 names for a topology's contract entry: its own `package_id`, else
    the built-in's package (installed by `install_builtins`); "" only for `by_name = true`, the
    legacy form that runs the built-in registered under the name (docs/contracts.md)."""
    if contract.get("package_id") or contract.get("by_name") or contract["name"] not in BUILTIN:
        return str(contract.get("package_id", ""))
    return builtin_package_id(contract["name"])


def standby_material(
    out: Path, cas: dict[str, IssuedCert], node: dict[str, Any], material: Material = FRESH
) -> None:
    """A standby's node dir: a copy of its active's identity certificate, signing key and
    privacy keys (X25519, and ML-KEM on hybrid channels: it takes over that identity on
    failover), and a TLS certificate of its own that names both its own id and the active's
    (once promoted, others reach it by the active's id)."""
    active = out / "nodes" / node["standby_of"]
    home = out / "nodes" / node["id"]
    hosts = ["127.0.0.1", "localhost", node["id"], node["standby_of"]]
    if "endpoint" in node:
        hosts.append(split_endpoint(node["endpoint"])[0])
    tls = issue_cert(
        cas[node["org"]], node["org"], node["id"], "peer", tls=True, hosts=hosts, material=material
    )
    _write(home / "tls.pem", tls.cert_pem)
    _write(home / "tls.key", tls.key_pem, private=True)
    for name in ("identity.pem", "identity.key", "privacy.key", KEM_FILE):
        if (active / name).exists():  # identity.key is absent when the key is in a token
            home.mkdir(parents=True, exist_ok=True)
            shutil.copy2(active / name, home / name)
    install_builtins(home)


def write_node_toml(
    out: Path,
    node: dict[str, Any],
    joined: Sequence[str],
    synchronous: str,
    key: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """The node's node.toml, serving the channels `joined` (their blocks under out/channels);
    `extra`: more tables (an orderer's `[jetstream]`)."""
    home = out / "nodes" / node["id"]
    cfg = {
        "node": {
            "id": node["id"],
            "org": node["org"],
            "roles": node["roles"],
            "listen": node.get("listen") or node.get("endpoint") or "127.0.0.1:0",
            "data_dir": DATA_DIR,
        }
        | ({"standby_of": node["standby_of"]} if "standby_of" in node else {}),
        "files": _files(home, out, node["org"], key)
        | ({"privacy_key": "privacy.key"} if (home / "privacy.key").exists() else {})
        | ({"privacy_kem_key": KEM_FILE} if (home / KEM_FILE).exists() else {})
        | ({"storage_key": STORAGE_KEY_FILE} if (home / STORAGE_KEY_FILE).exists() else {}),
        "channels": {
            "genesis": [os.path.relpath(out / "channels" / f"{c}.block", home) for c in joined]
        },
        "ledger": {"synchronous": synchronous},
        # HTTP /metrics, /healthz, /readyz, /loglevel on loopback (docs/operations.md)
        "operations": {"listen": "127.0.0.1:0"},
    } | (extra or {})
    _write(home / "node.toml", tomli_w.dumps(cfg).encode())


def write_client(
    out: Path,
    raw: dict[str, Any],
    ca: IssuedCert,
    client: dict[str, Any],
    material: Material = FRESH,
    hsm: HsmPlan | None = None,
    key: str = "identity.key",
) -> Path:
    """A client's keys, certificates (from its organisation's CA) and client.toml under
    `out/clients/<id>`, with its gateway (its own, else its organisation's first)."""
    home: Path = out / "clients" / str(client["id"])
    role = client.get("role", "client")
    key_type = client.get("key_type", "p256")
    _party(
        home, {client["org"]: ca}, client["org"], client["id"], role, [], material, hsm, key_type
    )
    nodes = {n["id"]: n for n in raw["nodes"]}
    gateway = client.get("gateway") or _default_gateway(raw, client["org"])
    client_cfg = {"id": client["id"], "org": client["org"], "gateway": gateway}
    files = _files(home, out, client["org"], key)
    if endpoint := nodes.get(gateway, {}).get("endpoint"):
        client_cfg["gateway_endpoint"] = endpoint  # across hosts: no address book needed
        gateway_ca = out / "orgs" / nodes[gateway]["org"] / "ca.pem"
        files["gateway_ca"] = os.path.relpath(gateway_ca, home)
    _write(home / "client.toml", tomli_w.dumps({"client": client_cfg, "files": files}).encode())
    return home


def _clients(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The topology's clients and one admin client per org (`admin.<org>`)."""
    return list(raw.get("clients", [])) + [
        {"id": f"admin.{o['id'].lower()}", "org": o["id"], "role": "admin"} for o in raw["orgs"]
    ]


def _privacy_key(home: Path, key: X25519PrivateKey) -> bytes:
    """Write the X25519 key of the node's privacy manager; returns its public key."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(home / "privacy.key", pem, private=True)
    return key.public_key().public_bytes_raw()


def _storage_key(home: Path) -> None:
    """Write the node's storage key (a fresh X25519 key used as a 32-byte secret: a PKCS#8 key
    file, so it is passphrase-encrypted like the others)."""
    pem = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(home / STORAGE_KEY_FILE, pem, private=True)


def _privacy_kem_key(home: Path, seed: bytes) -> bytes:
    """Write the ML-KEM-768 key of the node's privacy manager; returns its public key."""
    key = MLKEM768PrivateKey.from_seed_bytes(seed)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(home / KEM_FILE, pem, private=True)
    return key.public_key().public_bytes_raw()


AGREEMENT = {
    "all-recipients": private_agreement_pb2.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS,
    "none": private_agreement_pb2.PRIVATE_AGREEMENT_POLICY_UNSPECIFIED,
}


def _or(value: bool | None, default: bool) -> bool:
    return default if value is None else value


def agreement_settings(text: str) -> dict[str, Any]:
    """ChannelConfig fields of a topology's `private_agreement`: a keyword, else a policy
    expression (validated with the whole config: `core/privacy/agreement_policy.py`)."""
    expression = {
        "private_agreement": private_agreement_pb2.PRIVATE_AGREEMENT_POLICY_EXPRESSION,
        "private_agreement_policy": text,
    }
    out: dict[str, Any] = (
        {"private_agreement": AGREEMENT[text]} if text in AGREEMENT else expression
    )
    if out["private_agreement"] != private_agreement_pb2.PRIVATE_AGREEMENT_POLICY_UNSPECIFIED:
        out["private_agreement_batches"] = True  # a new channel: agreements signed per batch
    return out


def _add_key_wrap(
    config: config_pb2.ChannelConfig, ch: dict[str, Any], kem: dict[str, bytes]
) -> None:
    """A hybrid channel: its key wrap, and every peer's ML-KEM key beside its X25519 key."""
    config.private_key_wrap = KEY_WRAP[ch.get("private_key_wrap", "x25519")]
    if config.private_key_wrap == algorithms_pb2.KEY_WRAP_ALGORITHM_UNSPECIFIED:
        return
    for peer in config.peers:
        if peer.privacy_public_key:
            peer.privacy_kem_public_key = kem[peer.node_id]


def majority_policy(orgs: Sequence[str]) -> str:
    """Fabric's default: a majority of member organisations' peers."""
    principals = ", ".join(f"{o}.peer" for o in orgs)
    return f"OutOf({len(orgs) // 2 + 1}, {principals})"


def _default_gateway(raw: dict[str, Any], org: str) -> str:
    actives = [n for n in raw["nodes"] if "standby_of" not in n]
    for node in actives:
        if node["org"] == org and "gateway" in node["roles"]:
            return str(node["id"])
    for node in actives:
        if "gateway" in node["roles"]:
            return str(node["id"])
    return ""


def _serves(node: dict[str, Any], ch: dict[str, Any], raw: dict[str, Any]) -> bool:
    if "standby_of" in node:  # a standby follows every channel its active serves
        active = next(n for n in raw["nodes"] if n["id"] == node["standby_of"])
        return _serves(active, ch, raw)
    if node["id"] in ch["orderers"]:
        return True
    if "orderer" in node["roles"] and ch.get("ordering") == "pbft":
        # an orderer of the replicas' organisations that block 0 does not name: it follows the
        # channel until a config update adds it to the replica set (docs/governance.md)
        orgs = {n["org"] for n in raw["nodes"] if n["id"] in ch["orderers"]}
        if node["org"] in orgs:
            return True
    return "peer" in node["roles"] and node["org"] in ch["members"]


def _channel_config(
    ch: dict[str, Any],
    raw: dict[str, Any],
    cas: dict[str, IssuedCert],
    identities: dict[str, SigningIdentity],
    privacy: dict[str, bytes],
) -> config_pb2.ChannelConfig:
    nodes = {n["id"]: n for n in raw["nodes"]}
    orderer_orgs = sorted({nodes[o]["org"] for o in ch["orderers"]})
    batch = ch.get("batch", {})
    config = config_pb2.ChannelConfig(
        channel_id=ch["id"],
        ordering=ORDERING[ch.get("ordering", "none")],
        **agreement_settings(ch.get("private_agreement", "all-recipients")),
        creator_batches=_or(ch.get("creator_batches"), CREATOR_BATCHES),  # core/creator_batch.py
        private_creator_batches=_or(ch.get("private_creator_batches"), CREATOR_BATCHES),
        endorsement_batches=ch.get("endorsement_batches", True),  # core/endorsement_batch.py
        identity_references=ch.get("identity_references", True),  # core/identity.py
        client_identity_references=_or(  # core/identity_table.py; only with the above
            ch.get("client_identity_references"), ch.get("identity_references", True)
        ),
        default_endorsement_policy=ch.get("endorsement_policy") or majority_policy(ch["members"]),
        batch=config_pb2.BatchConfig(
            max_tx_count=batch.get("max_tx_count", 100),
            max_bytes=batch.get("max_bytes", 1024 * 1024),
            timeout_ms=batch.get("timeout_ms", 250),
            cut_by_limits_only=batch.get("cut_by_limits_only", False),
            reorder=batch.get("reorder", False),
            pbft_dissemination=batch.get("pbft_dissemination", True),
            pbft_collector=batch.get("pbft_collector", True),
            pbft_carried_batches=batch.get("pbft_carried_batches", True),
        ),
    )
    for org in ch["members"]:
        config.organizations.add(org_id=org, root_certificate_pem=cas[org].cert_pem)
    for org in orderer_orgs:
        config.orderer_organizations.add(org_id=org, root_certificate_pem=cas[org].cert_pem)
    for oid in ch["orderers"]:
        config.orderers.add(
            node_id=oid,
            org_id=nodes[oid]["org"],
            identity=identities[oid].identity_bytes,
            endpoint=nodes[oid].get("endpoint", ""),
        )
    for node in raw["nodes"]:
        if "peer" in node["roles"] and node["org"] in ch["members"] and "standby_of" not in node:
            config.peers.add(
                node_id=node["id"],
                org_id=node["org"],
                identity=identities[node["id"]].identity_bytes,
                privacy_public_key=privacy.get(node["id"], b""),
                endpoint=node.get("endpoint", ""),
            )
    peers = {p.node_id for p in config.peers}
    for auditor in ch.get("privacy_auditors", []):
        if auditor not in peers:
            raise ValueError(f"channel {ch['id']}: auditor {auditor} is not a peer of the channel")
        config.privacy_auditors.append(auditor)
    config.lifecycle_policy = ch.get("lifecycle_policy") or ""
    for contract in ch.get("contracts", [{"name": "bank"}, {"name": "kv"}]):
        config.contracts.add(
            name=contract["name"],
            endorsement_policy=contract.get("endorsement_policy", ""),
            package_id=deployed_package_id(contract),
        )
    return config
