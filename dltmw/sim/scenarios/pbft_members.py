"""Scenario `cfg-pbft-members`: the PBFT-lite replica set changes at config blocks, under faults.

The network of `cfg-pbft` plus orderer.e, a second orderer node of Orderer0, and orderer.c2, a
second one of Orderer2, that block 0 does not name: each runs from the start as a follower
(fetching blocks) until an update adds it. Four config updates, each built on the config the
previous one leads to, signed by the admins of Org1 and Org2 and submitted like any client would:

1. add orderer.e at the end of the orderer list: 4 -> 5 replicas (f = 1, quorum 4 of 5);
2. remove orderer.b: 5 -> 4 (quorum 3);
3. and 4. re-key orderer.c the operator's way (docs/governance.md): add orderer.c2, Orderer2's
   node with a new identity (4 -> 5), then remove orderer.c (5 -> 4); from that block on,
   orderer.c's key is outside the set in force and no block may carry it.

Each update's block ends an epoch (docs/governance.md). Faults until `HEAL_AT_S`, from the seed
(`pbft_config._schedule_faults`): network delays; Deliver messages dropped, duplicated and
reordered; connections reset; a peer and an original replica killed mid-store and restarted; one
original replica cut off from the other three for a while, often across a boundary. Then every
fault ends and every node restarts; the run must converge within `LIVENESS_S`: every client
answered, the four updates applied, every node (the added and the removed ones included, as
followers fetch) at one height.

Checkers: those of `cfg-pbft` (one chain, exactly once, state == replay, every node recorded the
config its chain applies at the block that applies it) and `config_checks.check_signers`: every
block, on every peer and orderer, carries signatures of at least a quorum of the replica set in
force at its height (replayed from block 0) and of nobody outside it — so the block after each
boundary is signed by the NEW set (after the re-key: orderer.c2's key, never orderer.c's); and
`ledger_checks.check_ordered`: every envelope an orderer's Broadcast accepted is in exactly one
block of every peer (DUPLICATE_TXID copies aside; the orderers hold the peers' chain), whether
or not its client heard the answer.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable

from dltmw.client import GatewayClient
from dltmw.client.governance import genesis_of
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.genesis import read_genesis
from dltmw.core.identity import identity_bytes
from dltmw.sim.config_checks import check_configs, check_signers, read_configs
from dltmw.sim.deployment import Deployment
from dltmw.sim.ledger_checks import check_ordered, read_chain
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
REKEYED, REKEY, REKEY_ORG = "orderer.c", "orderer.c2", "Orderer2"  # old node, new node, its org
ALL_ORDERERS = (*ORDERERS, ADDED, REKEY)
UPDATES = 4
AFTER_OPS = 3  # deposits after the last update
Edit = Callable[[config_pb2.ChannelConfig], config_pb2.ChannelConfig]


def topology(dissemination: bool = False) -> str:
    """`cfg-pbft`'s topology with orderer nodes of Orderer0 and Orderer2 not named by block 0.
    The envelope path unless `dissemination` (which `dltmw init` sets on new channels): with
    it, seed 1 stalls after the last replica-set change (`cfg-pbft-members-dissemination`;
    not fixed yet, benchmarks/RESULTS.md and the dflt56 report)."""
    nodes = "".join(
        f'\n[[nodes]]\nid = "{node}"\norg = "{org}"\nroles = ["orderer"]\n'
        for node, org in ((ADDED, ADDED_ORG), (REKEY, REKEY_ORG))
    )
    return cfg_topology(dissemination) + nodes


async def run(seed: int, trace: bool = False, dissemination: bool = False) -> ScenarioResult:
    """One seeded run (see the module docstring; `dissemination`: `topology`)."""
    dep = Deployment(topology(dissemination), trace)
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
        jobs.append(_governance(dep, work, genesis, users))
        await asyncio.gather(*jobs)
        lacking = await _converge(dep, work)
    finally:
        await dep.stop()
    summary = {"acked": len(work.acks), "failed": work.failed, "updates": len(work.updates)}
    name = "cfg-pbft-members-dissemination" if dissemination else "cfg-pbft-members"
    return conclude(dep, name, seed, lacking, lambda: _check(dep, work, genesis), summary)


def node_identity(dep: Deployment, node: str, org: str) -> bytes:
    """`node`'s identity, as its node.toml names its certificate."""
    home = dep.root / "nodes" / node
    config = tomllib.loads((home / "node.toml").read_text())
    cert = (home / config["files"]["identity_cert"]).read_bytes()
    return identity_bytes(org, cert)


def _next(view: ChannelView, config: config_pb2.ChannelConfig) -> ChannelView:
    after = config_pb2.ChannelConfig()
    after.CopyFrom(config)
    after.sequence = view.sequence + 1
    return channel_view(after)


def _adding(
    config: config_pb2.ChannelConfig, node: str, org: str, identity: bytes
) -> config_pb2.ChannelConfig:
    grown = config_pb2.ChannelConfig()
    grown.CopyFrom(config)
    grown.orderers.add(node_id=node, org_id=org, identity=identity)
    return grown


def _removing(config: config_pb2.ChannelConfig, node: str) -> config_pb2.ChannelConfig:
    shrunk = config_pb2.ChannelConfig()
    shrunk.CopyFrom(config)
    kept = [o for o in config.orderers if o.node_id != node]
    del shrunk.orderers[:]
    shrunk.orderers.extend(kept)
    return shrunk


async def _governance(
    dep: Deployment, work: Work, genesis: ChannelView, users: list[GatewayClient]
) -> None:
    """Add orderer.e, remove orderer.b, then re-key orderer.c: add orderer.c2, remove
    orderer.c; then a few deposits, so blocks follow the last boundary (the signers checker
    judges them against the set without orderer.c's key)."""
    await asyncio.sleep(dep.rng.uniform(0.2, 0.6))
    e, c2 = node_identity(dep, ADDED, ADDED_ORG), node_identity(dep, REKEY, REKEY_ORG)
    steps: tuple[tuple[str, Edit], ...] = (
        (f"add {ADDED}", lambda c: _adding(c, ADDED, ADDED_ORG, e)),
        (f"remove {REMOVED}", lambda c: _removing(c, REMOVED)),
        (f"add {REKEY}", lambda c: _adding(c, REKEY, REKEY_ORG, c2)),
        (f"remove {REKEYED} (re-keyed as {REKEY})", lambda c: _removing(c, REKEYED)),
    )
    view = genesis
    for what, edit in steps:
        config = edit(view.config)
        if not await _update(dep, work, view, config, what):
            return
        view = _next(view, config)
    for k in range(AFTER_OPS):
        account = ACCOUNTS[k % len(ACCOUNTS)]
        await _op(dep, users[k % 2], work, f"after{k} deposit {account}", "deposit", [account, "1"])


async def _converge(dep: Deployment, work: Work) -> list[str]:
    def converged() -> bool:
        return work.open_ops == 0 and len(set(heights(dep).values())) == 1

    out = []
    if not await dep.settle(converged, HEAL_AT_S + LIVENESS_S):
        out.append(f"liveness: not converged {LIVENESS_S}s after the heal: {heights(dep)}")
    valid = [b for c, b in work.updates if c == VALID]
    if len(valid) != UPDATES:  # the network healed: all must be applied by now
        out.append(
            f"liveness: {len(valid)} of {UPDATES} replica-set updates applied ({work.updates})"
        )
    elif not any(a.code == VALID and a.block > max(valid) for a in work.acks):
        out.append(f"liveness: no transaction ordered after the last boundary (block {max(valid)})")
    return out


def _check(dep: Deployment, work: Work, genesis: ChannelView) -> list[str]:
    peer_files = [(p, dep.data(p) / f"{CHANNEL}.peer.sqlite") for p in PEERS]
    orderer_files = [(o, dep.data(o) / f"{CHANNEL}.orderer.sqlite") for o in ALL_ORDERERS]
    peers = [read_chain(p, path) for p, path in peer_files]
    orderers = [read_chain(o, path) for o, path in orderer_files]
    out = checks(peers, orderers, work.acks)
    for peer in peers:  # the orderers' chains are the peers' (`checks`), without codes
        out += check_ordered(peer, dep.net.acknowledged)
    records = [read_configs(n, path) for n, path in (*peer_files, *orderer_files)]
    out += check_configs(records, genesis)
    for node, path in (*peer_files, *orderer_files):
        out += check_signers(node, path, genesis)
    return out
