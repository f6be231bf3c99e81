"""Scenario `cfg-pbft-members`: the PBFT-lite replica set changes at config blocks, under faults.

The network of `cfg-pbft` plus orderer.e, a second orderer node of Orderer0 that block 0 does not
name: it runs from the start as a follower (fetching blocks) until an update adds it. Two config
updates, each signed by the admins of Org1 and Org2 and submitted like any client would:

1. add orderer.e at the end of the orderer list: 4 -> 5 replicas (f = 1, quorum 4 of 5);
2. built on the config 1 leads to: remove orderer.b: 5 -> 4 (quorum 3).

Each update's block ends an epoch (docs/governance.md). Faults until `HEAL_AT_S`, from the seed
(`pbft_config._schedule_faults`): network delays; Deliver messages dropped, duplicated and
reordered; connections reset; a peer and an original replica killed mid-store and restarted; one
original replica cut off from the other three for a while, often across a boundary. Then every
fault ends and every node restarts; the run must converge within `LIVENESS_S`: every client
answered, both updates applied, every node (orderer.e and the removed orderer.b included, as
followers fetch) at one height.

Checkers: those of `cfg-pbft` (one chain, exactly once, state == replay, every node recorded the
config its chain applies at the block that applies it) and `config_checks.check_signers`: every
block, on every peer and orderer, carries signatures of at least a quorum of the replica set in
force at its height (replayed from block 0) and of nobody outside it — so the block after each
boundary is signed by the NEW set.
"""

from __future__ import annotations

import asyncio
import tomllib

from dltmw.client.governance import genesis_of
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.genesis import read_genesis
from dltmw.core.identity import identity_bytes
from dltmw.sim.config_checks import check_configs, check_signers, read_configs
from dltmw.sim.deployment import Deployment
from dltmw.sim.ledger_checks import read_chain
from dltmw.sim.scenarios.eov import ACCOUNTS, CHANNEL, CLIENTS, PEERS, checks, heights
from dltmw.sim.scenarios.pbft_config import (
    HEAL_AT_S,
    LIVENESS_S,
    OPS,
    ORDERERS,
    VALID,
    Work,
    _op,
    _random_op_later,
    _schedule_faults,
    _update,
)
from dltmw.sim.scenarios.pbft_config import topology as cfg_topology
from dltmw.sim.scenarios.result import ScenarioResult, conclude
from dltmw.v1 import config_pb2

ADDED, ADDED_ORG, REMOVED = "orderer.e", "Orderer0", "orderer.b"
ALL_ORDERERS = (*ORDERERS, ADDED)


def topology() -> str:
    """`cfg-pbft`'s topology with one more orderer node of Orderer0, not named by block 0."""
    node = f'\n[[nodes]]\nid = "{ADDED}"\norg = "{ADDED_ORG}"\nroles = ["orderer"]\n'
    return cfg_topology() + node


async def run(seed: int, trace: bool = False) -> ScenarioResult:
    """One seeded run (see the module docstring)."""
    dep = Deployment(topology(), trace)
    work = Work()
    lacking: list[str] = []
    genesis = read_genesis(genesis_of(dep.root, CHANNEL))
    try:
        await dep.start()
        users = [dep.gateway_client(c, g) for c, g in CLIENTS]
        for account in ACCOUNTS:
            await _op(dep, users[0], work, f"open {account}", "open", [account, "1000"])
        _schedule_faults(dep)
        dep.at(HEAL_AT_S, dep.heal)
        jobs = [_random_op_later(dep, users[k % 2], work, k) for k in range(OPS)]
        jobs.append(_governance(dep, work, genesis))
        await asyncio.gather(*jobs)
        lacking = await _converge(dep, work)
    finally:
        await dep.stop()
    summary = {"acked": len(work.acks), "failed": work.failed, "updates": len(work.updates)}
    name = "cfg-pbft-members"
    return conclude(dep, name, seed, lacking, lambda: _check(dep, work, genesis), summary)


def added_identity(dep: Deployment) -> bytes:
    """orderer.e's identity, as its node.toml names its certificate."""
    home = dep.root / "nodes" / ADDED
    config = tomllib.loads((home / "node.toml").read_text())
    cert = (home / config["files"]["identity_cert"]).read_bytes()
    return identity_bytes(ADDED_ORG, cert)


def _next(view: ChannelView, config: config_pb2.ChannelConfig) -> ChannelView:
    after = config_pb2.ChannelConfig()
    after.CopyFrom(config)
    after.sequence = view.sequence + 1
    return channel_view(after)


async def _governance(dep: Deployment, work: Work, genesis: ChannelView) -> None:
    """Add orderer.e, then remove orderer.b."""
    await asyncio.sleep(dep.rng.uniform(0.2, 0.6))
    grown = config_pb2.ChannelConfig()
    grown.CopyFrom(genesis.config)
    grown.orderers.add(node_id=ADDED, org_id=ADDED_ORG, identity=added_identity(dep))
    if not await _update(dep, work, genesis, grown, f"add {ADDED}"):
        return
    five = _next(genesis, grown)
    shrunk = config_pb2.ChannelConfig()
    shrunk.CopyFrom(five.config)
    kept = [o for o in five.config.orderers if o.node_id != REMOVED]
    del shrunk.orderers[:]
    shrunk.orderers.extend(kept)
    await _update(dep, work, five, shrunk, f"remove {REMOVED}")


async def _converge(dep: Deployment, work: Work) -> list[str]:
    def converged() -> bool:
        return work.open_ops == 0 and len(set(heights(dep).values())) == 1

    out = []
    if not await dep.settle(converged, HEAL_AT_S + LIVENESS_S):
        out.append(f"liveness: not converged {LIVENESS_S}s after the heal: {heights(dep)}")
    valid = [b for c, b in work.updates if c == VALID]
    if len(valid) != 2:  # the network healed: both must be applied by now
        out.append(f"liveness: {len(valid)} of 2 replica-set updates applied ({work.updates})")
    return out


def _check(dep: Deployment, work: Work, genesis: ChannelView) -> list[str]:
    peer_files = [(p, dep.data(p) / f"{CHANNEL}.peer.sqlite") for p in PEERS]
    orderer_files = [(o, dep.data(o) / f"{CHANNEL}.orderer.sqlite") for o in ALL_ORDERERS]
    peers = [read_chain(p, path) for p, path in peer_files]
    orderers = [read_chain(o, path) for o, path in orderer_files]
    out = checks(peers, orderers, work.acks)
    records = [read_configs(n, path) for n, path in (*peer_files, *orderer_files)]
    out += check_configs(records, genesis)
    for node, path in (*peer_files, *orderer_files):
        out += check_signers(node, path, genesis)
    return out
