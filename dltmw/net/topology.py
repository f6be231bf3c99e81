"""The topology file: which organisations, nodes, clients, channels and notary clusters a network
has (`services/networks/*.toml`), as `dltmw init` reads it.

The models below are the file's schema (`docs/config.md` is generated from them). Each key has
its default here and nowhere else; `dltmw init` (`pki/network.py`) works on the validated
document (`Topology.raw`, defaults filled in). Cross-references — a node's org, a channel's
members, orderers and auditors, a cluster's members — are checked here too, so a topology that
loads is one `dltmw init` can build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from dltmw.net import tomlmodel
from dltmw.net.addressbook import split_endpoint
from dltmw.net.roles import Role, check_roles
from dltmw.net.tomlmodel import Strict

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]


class Org(Strict):
    """`[[orgs]]`: a member organisation; `dltmw init` makes its CA and an admin client."""

    id: Id = Field(description="organisation id, as named in channel configs and policies")


class NodeSpec(Strict):
    """`[[nodes]]`: one node process."""

    id: Id = Field(description="node id; also its TLS server name")
    org: Id = Field(description="the organisation that runs it")
    roles: list[Role] = Field(min_length=1, description="roles it hosts")
    listen: str = Field(
        "127.0.0.1:0",
        description="address to listen on (default: `endpoint` if given, else 127.0.0.1:0, "
        "any free port)",
    )
    endpoint: str | None = Field(
        None,
        description="advertised host:port other hosts reach it at: written into the channel "
        "config and its TLS certificate (none: one machine, found through run/endpoints)",
    )
    validating: bool = Field(False, description="notary only: verify transactions, not just inputs")
    key_type: Literal["p256", "ed25519", "mldsa65"] = Field(
        "p256",
        description="its identity's signing key: ECDSA P-256, Ed25519, or ML-DSA-65 (post-quantum;"
        " its TLS key stays P-256)",
    )
    standby_of: Id | None = Field(
        None,
        description="a standby of this peer or vault node (same org): it holds that node's "
        "identity, follows its channels by Deliver and replicates its private payloads and "
        "vault, and serves in its place once promoted "
        "(`dltmw failover`; docs/operations.md)",
    )

    @model_validator(mode="before")
    @classmethod
    def _listen_on_the_endpoint(cls, data: Any) -> Any:
        if isinstance(data, dict) and "listen" not in data and data.get("endpoint"):
            return {**data, "listen": data["endpoint"]}
        return data

    @model_validator(mode="after")
    def _roles(self) -> NodeSpec:
        check_roles(self.roles)
        if self.endpoint is not None:
            split_endpoint(self.endpoint)
        return self


class ClientSpec(Strict):
    """`[[clients]]`: a client identity (admins `admin.<org>` are added for every org)."""

    id: Id = Field(description="client id, e.g. user1.org1")
    org: Id = Field(description="its organisation")
    role: Literal["client", "admin"] = Field("client", description="role in its certificate")
    gateway: str | None = Field(None, description="default gateway node (else its org's)")
    key_type: Literal["p256", "ed25519", "mldsa65"] = Field(
        "p256",
        description="its identity's signing key: ECDSA P-256, Ed25519, or ML-DSA-65 (post-quantum;"
        " its TLS key stays P-256)",
    )


class ContractSpec(Strict):
    """`contracts = [{...}]` of a channel: a deployed contract."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="a built-in contract (bank, bank_rmw, kv, bus), or the name in the package's"
        " manifest",
    )
    endorsement_policy: str = Field("", description="policy of this contract (else the channel's)")
    package_id: str = Field(
        "",
        pattern=r"^([0-9a-f]{64})?$",
        description="SHA-256 of the contract package (`dltmw contract package`) the channel"
        " runs; peers endorse once it is installed there (empty: the package of the built-in"
        " `name`, which `dltmw init` installs on every peer)",
    )
    by_name: bool = Field(
        False,
        description="legacy: block 0 names no package id and peers run the built-in `name`"
        " registered in their code, outside the lifecycle's package check",
    )

    @model_validator(mode="after")
    def _builtin_or_package(self) -> ContractSpec:
        if not self.package_id and self.name not in ("bank", "bank_rmw", "bus", "kv", "xfer"):
            raise ValueError(f"contract {self.name!r} is not built in: give its package_id")
        if self.by_name and self.package_id:
            raise ValueError(f"contract {self.name!r}: by_name runs no package (drop package_id)")
        return self


class Batch(Strict):
    """`batch = {...}` of a channel: when the orderer cuts a block."""

    max_tx_count: int = Field(100, gt=0, description="transactions per block at most")
    max_bytes: int = Field(1024 * 1024, gt=0, description="bytes of envelopes per block at most")
    timeout_ms: int = Field(250, gt=0, description="cut a non-empty block after this long")
    cut_by_limits_only: bool = Field(
        False,
        description="cut only by the limits above (Fabric's rule); by default the orderer also "
        "cuts as soon as nothing more is queued (adaptive: no timer on an idle path)",
    )
    reorder: bool = Field(
        False,
        description="reorder each block's transactions so that readers precede the writers of "
        "what they read (Fabric++, docs/ordering.md); off: arrival order",
    )
    pbft_dissemination: bool = Field(
        True,
        description="PBFT-lite: replicas spread and certify batches (f+1 stores) and order only "
        "their certificates (docs/ordering.md, issue 18); false: pre-prepares carry the "
        "envelopes (channels made before it was the default)",
    )
    pbft_collector: bool = Field(
        True,
        description="PBFT-lite: backups send votes to the primary only, which sends them the "
        "prepared and commit certificates (O(n) messages per slot; docs/ordering.md); false: "
        "all-to-all votes (channels made before it existed)",
    )
    pbft_carried_batches: bool = Field(
        True,
        description="PBFT-lite with dissemination: the primary's own batch is certified by its "
        "own ack and stored by the backups before they prepare (no ack round; docs/ordering.md); "
        "false: every batch acked by f+1 replicas (channels made before it existed)",
    )


def _default_contracts() -> list[ContractSpec]:
    return [ContractSpec(name="bank"), ContractSpec(name="kv")]


class ChannelSpec(Strict):
    """`[[channels]]`: a channel, its members, orderers and policies."""

    id: Id = Field(description="channel id")
    members: list[Id] = Field(min_length=1, description="member organisations")
    orderers: list[Id] = Field(min_length=1, description="orderer nodes (first signs block 0)")
    ordering: Literal["none", "pbft", "jetstream"] = Field(
        "none",
        description="solo orderer, PBFT-lite, or crash-tolerant ordering on the topology's "
        "NATS JetStream cluster ([jetstream])",
    )
    endorsement_policy: str | None = Field(
        None, description="default policy, e.g. AND(Org1.peer, Org2.peer) (else a majority)"
    )
    contracts: list[ContractSpec] = Field(
        default_factory=_default_contracts, description="deployed contracts (default: bank, kv)"
    )
    batch: Batch = Field(default_factory=Batch, description="block cutting")
    privacy_auditors: list[Id] = Field(
        default_factory=list, description="peers that receive every private payload"
    )
    private_key_wrap: Literal["x25519", "x25519-mlkem768"] = Field(
        "x25519",
        description="key wrap of private payloads: X25519, or hybrid X25519 + ML-KEM-768"
        " (secure while either holds; docs/privacy.md)",
    )
    private_agreement: str = Field(
        "all-recipients",
        description="agreements a private transaction must carry: every recipient's signed"
        " agreement on its execution (all-recipients), none (the old path), or a policy"
        " expression over the recipients' peers, e.g. OutOf(2, Org1.peer, Org2.peer, Org3.peer)"
        " (the sender always; docs/privacy.md)",
    )
    creator_batches: bool | None = Field(
        None,
        description="clients may sign one Merkle root per request over their proposals and"
        " envelopes (docs/governance.md; default: dltmw's default for new channels)",
    )
    private_creator_batches: bool | None = Field(
        None,
        description="clients may sign private transactions' envelopes per request too"
        " (core/creator_batch.py; default: dltmw's default for new channels)",
    )
    endorsement_batches: bool = Field(
        True,
        description="endorsers sign one Merkle root per batch of endorsements they answer"
        " together (Endorsement.batch_proof, docs/wire.md); false: one signature each",
    )
    identity_references: bool = Field(
        True,
        description="the channel's peers and orderers may sign endorsements and agreements as"
        " a reference to their certificate in the config (Identity.certificate_ref, docs/wire.md"
        ' "Identity references"); false: every identity in full',
    )
    client_identity_references: bool | None = Field(
        None,
        description="clients may name themselves by a reference to their certificate once a"
        " block carried it in full (with identity_references; core/identity_table.py,"
        ' docs/wire.md "Identity references"; default: as identity_references); false:'
        " clients always in full",
    )
    lifecycle_policy: str | None = Field(
        None,
        description="what committing a contract definition needs, over the approving orgs'"
        " admins, e.g. AND(Org1.admin, Org2.admin) (else a majority of the members)",
    )


class NotaryCluster(Strict):
    """`[[notary_clusters]]`: n = 3f+1 notary nodes acting as one notary named `id`."""

    id: Id = Field(description="the cluster's notary name")
    members: list[Id] = Field(description="notary nodes")


class JetStreamCluster(Strict):
    """`[jetstream]`: the NATS JetStream cluster that orders every channel with ordering
    "jetstream". `dltmw init` chooses its ports and writes one nats-server config per member
    under `jetstream/`; `dltmw up` starts them as processes, each with its own store."""

    servers: int = Field(3, ge=1, le=5, description="nats-servers (3 or 5 to survive crashes)")
    replicas: int = Field(3, ge=1, le=5, description="replicas of each channel's stream")
    hosts: list[str] = Field(
        default_factory=list,
        description="across hosts: the address of each nats-server, one per server (each then"
        " listens there on ports 4222/6222/8222); empty: all on 127.0.0.1 on free ports below"
        " the kernel's ephemeral range",
    )

    tls: bool = Field(
        True,
        description="mutual TLS on every link of the cluster, and only the orderers of its"
        " channels may connect (their TLS certificates' subjects); off: plain TCP, anyone",
    )

    @model_validator(mode="after")
    def _one_host_each(self) -> JetStreamCluster:
        if self.hosts and len(self.hosts) != self.servers:
            raise ValueError(f"jetstream.hosts: {len(self.hosts)} hosts for {self.servers} servers")
        if len(set(self.hosts)) != len(self.hosts):
            raise ValueError("jetstream.hosts: a host is named twice")
        return self


class TopologyFile(Strict):
    """A topology file."""

    name: str | None = Field(None, description="network name (default: the file's stem)")
    orgs: list[Org] = Field(min_length=1)
    nodes: list[NodeSpec] = Field(min_length=1)
    clients: list[ClientSpec] = Field(default_factory=list)
    channels: list[ChannelSpec] = Field(default_factory=list)
    notary_clusters: list[NotaryCluster] = Field(default_factory=list)
    encrypt_at_rest: bool = Field(
        False,
        description="every node gets a storage key: its private state, private payloads and"
        " vault records are encrypted per record in its files (docs/privacy.md)",
    )
    jetstream: JetStreamCluster | None = Field(
        None, description="the NATS cluster of jetstream ordering (needed by such a channel)"
    )

    @model_validator(mode="after")
    def _references(self) -> TopologyFile:
        orgs = {o.id for o in self.orgs}
        nodes = {n.id: n for n in self.nodes}
        _unique("orgs", [o.id for o in self.orgs])
        _unique("nodes", [n.id for n in self.nodes])
        _unique("clients", [c.id for c in self.clients])
        _unique("channels", [c.id for c in self.channels])
        for i, node in enumerate(self.nodes):
            _known(f"nodes[{i}].org", node.org, orgs, "org")
            if node.standby_of is not None:
                _standby(f"nodes[{i}].standby_of", node, nodes)
        for i, client in enumerate(self.clients):
            _known(f"clients[{i}].org", client.org, orgs, "org")
        for i, ch in enumerate(self.channels):
            for org in ch.members:
                _known(f"channels[{i}].members", org, orgs, "org")
            for oid in ch.orderers:
                if "orderer" not in (nodes[oid].roles if oid in nodes else []):
                    raise ValueError(f"channels[{i}].orderers: {oid} is not an orderer node")
            if ch.ordering == "jetstream" and self.jetstream is None:
                raise ValueError(f"channels[{i}]: ordering jetstream needs a [jetstream] table")
        if self.jetstream is not None and self.jetstream.replicas > self.jetstream.servers:
            raise ValueError("jetstream: more replicas than servers")
        return self


STANDBY_ROLES = frozenset({"peer", "gateway", "vault"})


def _standby(where: str, node: NodeSpec, nodes: dict[str, NodeSpec]) -> None:
    """A standby names an active peer or vault node of its own organisation that is not a
    standby itself, and hosts only roles the active hosts (peer, gateway, vault)."""
    active = nodes.get(node.standby_of or "")
    if active is None:
        raise ValueError(f"{where}: unknown node {node.standby_of!r}")
    if active.standby_of is not None or not {"peer", "vault"} & set(active.roles):
        raise ValueError(f"{where}: {active.id} is not an active peer or vault node")
    if active.org != node.org:
        raise ValueError(f"{where}: {active.id} belongs to {active.org}, not {node.org}")
    if not set(node.roles) <= set(active.roles) & STANDBY_ROLES:
        raise ValueError(
            f"{where}: a standby hosts only the peer/gateway/vault roles of its active"
        )


def _unique(what: str, ids: list[str]) -> None:
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"{what}: ids used twice: {dup}")


def _known(where: str, value: str, known: set[str], what: str) -> None:
    if value not in known:
        raise ValueError(f"{where}: unknown {what} {value!r}")


@dataclass(frozen=True)
class Topology:
    """A validated topology: its name and the document with every default filled in."""

    name: str
    raw: dict[str, Any]

    @staticmethod
    def load(path: Path) -> Topology:
        """Read and validate a topology file; FileError (a ValueError) says where and why."""
        model = tomlmodel.load(path, TopologyFile)
        return Topology(model.name or path.stem, model.model_dump(exclude_none=True))
