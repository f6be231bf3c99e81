"""The benchmark network as a topology TOML (fed to `init_network`, like `dltmw init`).

Default: two organisations with one peer each (both gateways), one solo orderer, endorsement
`AND(Org1.peer, Org2.peer)`, mutual TLS on every link (always on in dltmw), and channels
`bench0..benchN-1` on the same nodes — the parallel-channels experiment varies N. `orderers` and
`ordering` are the extension point for the consensus-replicas experiment (PBFT-lite) and the
jetstream experiment (two orderers on a stream replicated over three nats-servers).

The other flows come from the same builder with `flow`: `notary` (the organisations' clients
and `notaries` notary nodes: one is a single notary `notary0`, more form the PBFT-lite cluster
`notaries` with one organisation per member, as Corda's replicated notaries are run by
different parties) and `utxo` (one vault node per organisation, `vault.orgN`, and the
notaries). Private payloads need no option: every organisation's peer is a recipient.
"""

from __future__ import annotations

from dataclasses import dataclass

import tomli_w

from dltmw.core.creator_batch import CREATOR_BATCHES


@dataclass(frozen=True)
class NetworkShape:
    """What the benchmark network looks like."""

    orgs: int = 2
    channels: int = 1
    orderers: int = 1
    ordering: str = "none"
    policy: str = "AND"
    batch_max_tx: int = 100
    batch_timeout_ms: int = 200
    batch_max_bytes: int = 1024 * 1024
    cut_by_limits_only: bool = False  # True: Fabric's cutter (no cut when the intake drains)
    reorder: bool = False  # True: Fabric++ reordering of each block (core/reorder.py)
    pbft_dissemination: bool = True  # PBFT-lite orders batch certificates (issue 18)
    pbft_collector: bool = True  # PBFT-lite votes via a collector (core/pbft/collector.py)
    flow: str = "ledger"  # "ledger" (peers, orderers, channels), "notary" or "utxo"
    notaries: int = 0  # 1: a single notary; more: a notary cluster of that many members
    nats_tls: bool = True  # jetstream ordering: mutual TLS to and between the nats-servers
    private_agreement: str = "all-recipients"  # the channels' (topology `private_agreement`)
    creator_batches: bool = CREATOR_BATCHES  # clients sign per request (core/creator_batch.py)
    endorsement_batches: bool = True  # endorsers sign a root per batch (core/endorsement_batch)

    def channel_ids(self) -> tuple[str, ...]:
        """Channel names, in order."""
        return tuple(f"bench{i}" for i in range(self.channels))

    def peer_ids(self) -> tuple[str, ...]:
        """Every peer node id (none outside the ledger flow)."""
        if self.flow != "ledger":
            return ()
        return tuple(f"peer0.org{i + 1}" for i in range(self.orgs))

    def vault_ids(self) -> tuple[str, ...]:
        """Every vault node id (the utxo flow: one per organisation, `client_ids` order)."""
        if self.flow != "utxo":
            return ()
        return tuple(f"vault.org{i + 1}" for i in range(self.orgs))

    def notary_ids(self) -> tuple[str, ...]:
        """Every notary node id (a single notary, or the members of the cluster)."""
        return tuple(f"notary{i}" for i in range(self.notaries))

    def notary(self) -> str:
        """What transactions name as their notary: `notary0`, or the cluster `notaries`."""
        return "notary0" if self.notaries == 1 else "notaries"

    def client_ids(self) -> tuple[str, ...]:
        """One client per organisation; each uses its own organisation's gateway."""
        return tuple(f"user1.org{i + 1}" for i in range(self.orgs))

    def endorsement_policy(self) -> str:
        """`AND(...)` of every org's peer, or `OR(...)`, or a single org."""
        principals = ", ".join(f"Org{i + 1}.peer" for i in range(self.orgs))
        return principals if self.orgs == 1 else f"{self.policy}({principals})"

    def batch(self) -> dict[str, int | bool]:
        """The channels' block-cutting settings."""
        return {
            "max_tx_count": self.batch_max_tx,
            "max_bytes": self.batch_max_bytes,
            "timeout_ms": self.batch_timeout_ms,
            "cut_by_limits_only": self.cut_by_limits_only,
            "reorder": self.reorder,
            "pbft_dissemination": self.pbft_dissemination,
            "pbft_collector": self.pbft_collector,
        }


def check_ordering(ordering: str, replicas: int) -> None:
    """`--ordering none` is one solo orderer; `pbft` is PBFT-lite over at least 4 = 3f+1
    replicas (f >= 1); anything else is refused (ValueError) before a network is made."""
    if (ordering, replicas) == ("none", 1) or (ordering == "pbft" and replicas >= 4):
        return
    raise ValueError(
        f"--ordering none runs one orderer, pbft at least 4 replicas; got {ordering} with "
        f"--replicas {replicas}"
    )


def topology_toml(shape: NetworkShape, contracts: tuple[str, ...]) -> str:
    """The topology file text for `shape`, each channel carrying `contracts`."""
    if shape.orgs < 1 or shape.channels < 1 or shape.orderers < 1:
        raise ValueError("orgs, channels and orderers must each be at least 1")
    if shape.flow not in ("ledger", "notary", "utxo"):
        raise ValueError(f"flow must be ledger, notary or utxo, got {shape.flow!r}")
    if shape.flow != "ledger" and shape.notaries < 1:
        raise ValueError(f"the {shape.flow} flow needs at least one notary")
    doc: dict[str, object] = {"name": "bench", **_parties(shape)}
    if shape.flow == "ledger":
        _add_ledger(doc, shape, contracts)
    return tomli_w.dumps(doc)


def _parties(shape: NetworkShape) -> dict[str, list[dict[str, object]]]:
    """Organisations, their clients, and the notary and vault nodes of the non-ledger flows."""
    orgs: list[dict[str, object]] = [{"id": f"Org{i + 1}"} for i in range(shape.orgs)]
    nodes: list[dict[str, object]] = [
        {"id": vid, "org": f"Org{i + 1}", "roles": ["vault"]}
        for i, vid in enumerate(shape.vault_ids())
    ]
    single = shape.notaries == 1
    for i, nid in enumerate(shape.notary_ids()):
        org = "NotaryOrg" if single else f"NotaryOrg{i}"
        if not single or i == 0:
            orgs.append({"id": org})
        nodes.append({"id": nid, "org": org, "roles": ["notary"]})
    clients: list[dict[str, object]] = [
        {"id": cid, "org": f"Org{i + 1}"} for i, cid in enumerate(shape.client_ids())
    ]
    out = {"orgs": orgs, "nodes": nodes, "clients": clients}
    if shape.notaries > 1:
        out["notary_clusters"] = [{"id": shape.notary(), "members": list(shape.notary_ids())}]
    return out


def _add_ledger(doc: dict[str, object], shape: NetworkShape, contracts: tuple[str, ...]) -> None:
    """Orderers, peers and channels of the endorse/order/validate flow."""
    orgs, nodes = doc["orgs"], doc["nodes"]
    assert isinstance(orgs, list) and isinstance(nodes, list)
    orgs.append({"id": "OrdererOrg"})
    nodes[:0] = [
        {"id": f"orderer{i}", "org": "OrdererOrg", "roles": ["orderer"]}
        for i in range(shape.orderers)
    ] + [
        {"id": pid, "org": f"Org{i + 1}", "roles": ["peer", "gateway"]}
        for i, pid in enumerate(shape.peer_ids())
    ]
    doc["channels"] = [
        {
            "id": cid,
            "members": [f"Org{i + 1}" for i in range(shape.orgs)],
            "orderers": [f"orderer{i}" for i in range(shape.orderers)],
            "ordering": shape.ordering,
            "endorsement_policy": shape.endorsement_policy(),
            "contracts": [{"name": c} for c in contracts],
            "batch": shape.batch(),
            "private_agreement": shape.private_agreement,
            "creator_batches": shape.creator_batches,
            "private_creator_batches": shape.creator_batches,  # one bench flag for both kinds
            "endorsement_batches": shape.endorsement_batches,
        }
        for cid in shape.channel_ids()
    ]
    if shape.ordering == "jetstream":  # the replicated log: 3 nats-servers, 3 replicas
        doc["jetstream"] = {"servers": 3, "replicas": 3, "tls": shape.nats_tls}
