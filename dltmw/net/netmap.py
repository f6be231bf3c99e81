"""The network map of the notarised-UTXO flow: who the parties and notaries are.

UTXO transactions are not bound to a channel: any member organisation's node may be a party, and
parties are named by their identity (org id + certificate). `dltmw init` writes
`network-map.toml` at the network root:

    [orgs]        <org> = "orgs/<org>/ca.pem"          roots every party must chain to
    [[nodes]]     id, org, roles, identity = "nodes/<id>/identity.pem", endpoint (optional)
    [[notaries]]  id, validating                        nodes with the "notary" role
    [[notary_clusters]] id, members = [node ids]        n = 3f+1 notary nodes acting as one
                                                        notary named `id` (not in [[notaries]])
    [contracts]   <name> = [package hashes]             the UTXO contract packages the network
                                                        approves (Corda's whitelist); absent:
                                                        the built-ins' own (init writes them)

Nodes and clients load it once at start (paths are relative to the map file; a value may also
be the PEM itself, as in the maps `dltmw network-map create` builds from org definitions). It
maps an identity in a transaction to the node that hosts that party's vault, and a
transaction's notary name to the notary's identity, whose signature every party checks. Across
hosts a node's advertised `endpoint` is in the map too: nodes and clients reach vaults and
notaries by it (`routes`), verifying the advertised name and the node's organisation's CA.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import tomli_w

from dltmw.core.identity import Membership, identity_bytes
from dltmw.core.utxo.constraints import ContractCode, Verify, builtin_approved
from dltmw.core.utxo.model import is_tx_id
from dltmw.net.addressbook import Route, split_endpoint

FILE_NAME = "network-map.toml"


def write_network_map(out: Path, raw: dict[str, Any]) -> Path:
    """Write `out/network-map.toml` for a topology (after its certificates were issued)."""
    check_clusters(raw)
    doc = {
        "orgs": {o["id"]: f"orgs/{o['id']}/ca.pem" for o in raw["orgs"]},
        "nodes": [
            {
                "id": n["id"],
                "org": n["org"],
                "roles": list(n["roles"]),
                "identity": f"nodes/{n['id']}/identity.pem",
            }
            | ({"endpoint": n["endpoint"]} if n.get("endpoint") else {})
            for n in raw["nodes"]
            if "standby_of" not in n  # it is its active to the network (runtime/standby.py)
        ],
        "notaries": [
            {"id": n["id"], "validating": bool(n.get("validating", False))}
            for n in raw["nodes"]
            if "notary" in n["roles"] and n["id"] not in cluster_members(raw)
        ],
        "notary_clusters": [
            {"id": c["id"], "members": list(c["members"])} for c in raw.get("notary_clusters", [])
        ],
        "contracts": {name: sorted(hashes) for name, hashes in builtin_approved().items()},
    }
    path = out / FILE_NAME
    path.write_bytes(tomli_w.dumps(doc).encode())
    return path


def _hashes(name: str, value: Any) -> frozenset[str]:
    """The package hashes `[contracts] <name>` approves; ValueError unless a list of them."""
    if not isinstance(value, list) or not all(isinstance(h, str) and is_tx_id(h) for h in value):
        raise ValueError(f"network map [contracts] {name}: a list of SHA-256 package ids in hex")
    return frozenset(value)


def _pem(base: Path, value: str) -> bytes:
    """A PEM given inline, or read from a path relative to the map."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    return (base / value).read_bytes()


def cluster_members(raw: dict[str, Any]) -> set[str]:
    """Node ids that are members of a notary cluster of the topology."""
    return {m for c in raw.get("notary_clusters", []) for m in c["members"]}


def check_clusters(raw: dict[str, Any]) -> None:
    """A notary cluster has n = 3f+1 >= 4 distinct notary nodes, each in one cluster only, and
    an id no node or channel uses (replica traffic is routed by it); ValueError otherwise."""
    nodes = {n["id"]: n for n in raw["nodes"]}
    seen: set[str] = set()
    for c in raw.get("notary_clusters", []):
        members = list(c["members"])
        if len(members) < 4 or (len(members) - 1) % 3 or len(set(members)) != len(members):
            raise ValueError(f"notary cluster {c['id']}: needs 3f+1 >= 4 distinct members")
        if c["id"] in nodes or c["id"] in {ch["id"] for ch in raw.get("channels", [])}:
            raise ValueError(f"notary cluster {c['id']}: the id is a node's or a channel's")
        for m in members:
            if "notary" not in nodes.get(m, {}).get("roles", []) or m in seen:
                raise ValueError(f"notary cluster {c['id']}: {m} is not a free notary node")
            seen.add(m)


@dataclass(frozen=True)
class Party:
    """A node that can be named in transactions."""

    node_id: str
    org_id: str
    roles: frozenset[str]
    identity: bytes
    endpoint: str = ""  # advertised host:port (across hosts)


@dataclass(frozen=True)
class NetworkMap:
    """Loaded network map; immutable."""

    roots: dict[str, bytes]
    nodes: dict[str, Party]
    validating: dict[str, bool]
    clusters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    approved: dict[str, frozenset[str]] = field(default_factory=builtin_approved)
    # the code this node holds by package hash (runtime/utxo_code.py: built-ins and installed
    # packages); None = the built-ins only
    known: Mapping[str, tuple[str, Verify]] | None = field(default=None, compare=False)

    @cached_property
    def contract_code(self) -> ContractCode:
        """The UTXO contract code this node runs, with the hashes the map approves."""
        if self.known is None:
            return ContractCode(approved=self.approved)
        return ContractCode(known=self.known, approved=self.approved)

    def with_code(self, known: Mapping[str, tuple[str, Verify]]) -> NetworkMap:
        """This map, verifying with the code `known` (package hash -> (name, verify))."""
        return replace(self, known=known)

    @staticmethod
    def load(path: Path) -> NetworkMap:
        """Read the map and the certificates it names; ValueError on a broken map."""
        base = path.resolve().parent
        with path.open("rb") as f:
            raw = tomllib.load(f)
        roots = {org: _pem(base, p) for org, p in raw["orgs"].items()}
        nodes: dict[str, Party] = {}
        for n in raw["nodes"]:
            identity = identity_bytes(n["org"], _pem(base, n["identity"]))
            roles = frozenset(n["roles"])
            nodes[n["id"]] = Party(n["id"], n["org"], roles, identity, n.get("endpoint", ""))
        validating = {n["id"]: bool(n["validating"]) for n in raw.get("notaries", [])}
        clusters = {c["id"]: tuple(c["members"]) for c in raw.get("notary_clusters", [])}
        approved = builtin_approved()
        if "contracts" in raw:
            approved = {n: _hashes(n, h) for n, h in raw["contracts"].items()}
        return NetworkMap(roots, nodes, validating, clusters, approved)

    def routes(self) -> dict[str, Route]:
        """Routes to the parties that advertise an endpoint (`net/addressbook.py`)."""
        return {
            p.node_id: Route(p.endpoint, split_endpoint(p.endpoint)[0], self.roots[p.org_id])
            for p in self.nodes.values()
            if p.endpoint and p.org_id in self.roots
        }

    def is_notary(self, name: str) -> bool:
        """True if `name` is a single notary or a notary cluster of the map."""
        return name in self.validating or name in self.clusters

    def membership(self) -> Membership:
        """Every organisation of the network."""
        return Membership(self.roots)

    def node_of(self, identity: bytes) -> str | None:
        """Node id whose identity is exactly `identity`, if any."""
        for party in self.nodes.values():
            if party.identity == identity:
                return party.node_id
        return None

    def identity_of(self, node_id: str) -> bytes:
        """Identity of a node; KeyError if unknown."""
        return self.nodes[node_id].identity
