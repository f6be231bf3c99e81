"""The benchmark network as a topology TOML (fed to `init_network`, like `dltmw init`).

Default: two organisations with one peer each (both gateways), one solo orderer, endorsement
`AND(Org1.peer, Org2.peer)`, mutual TLS on every link (always on in dltmw), and channels
`bench0..benchN-1` on the same nodes — the parallel-channels experiment varies N. `orderers` and
`ordering` are the extension point for the consensus-replicas experiment (PBFT-lite) and the
jetstream experiment (two orderers on a stream replicated over three nats-servers).
"""

from __future__ import annotations

from dataclasses import dataclass

import tomli_w


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

    def channel_ids(self) -> tuple[str, ...]:
        """Channel names, in order."""
        return tuple(f"bench{i}" for i in range(self.channels))

    def peer_ids(self) -> tuple[str, ...]:
        """Every peer node id."""
        return tuple(f"peer0.org{i + 1}" for i in range(self.orgs))

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
        }


def topology_toml(shape: NetworkShape, contracts: tuple[str, ...]) -> str:
    """The topology file text for `shape`, each channel carrying `contracts`."""
    if shape.orgs < 1 or shape.channels < 1 or shape.orderers < 1:
        raise ValueError("orgs, channels and orderers must each be at least 1")
    orgs = [{"id": f"Org{i + 1}"} for i in range(shape.orgs)] + [{"id": "OrdererOrg"}]
    nodes = [
        {"id": f"orderer{i}", "org": "OrdererOrg", "roles": ["orderer"]}
        for i in range(shape.orderers)
    ] + [
        {"id": pid, "org": f"Org{i + 1}", "roles": ["peer", "gateway"]}
        for i, pid in enumerate(shape.peer_ids())
    ]
    clients = [{"id": cid, "org": f"Org{i + 1}"} for i, cid in enumerate(shape.client_ids())]
    channels = [
        {
            "id": cid,
            "members": [f"Org{i + 1}" for i in range(shape.orgs)],
            "orderers": [f"orderer{i}" for i in range(shape.orderers)],
            "ordering": shape.ordering,
            "endorsement_policy": shape.endorsement_policy(),
            "contracts": [{"name": c} for c in contracts],
            "batch": shape.batch(),
        }
        for cid in shape.channel_ids()
    ]
    doc: dict[str, object] = {
        "name": "bench",
        "orgs": orgs,
        "nodes": nodes,
        "clients": clients,
        "channels": channels,
    }
    if shape.ordering == "jetstream":  # the replicated log: 3 nats-servers, 3 replicas
        doc["jetstream"] = {"servers": 3, "replicas": 3}
    return tomli_w.dumps(doc)
