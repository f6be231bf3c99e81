"""Scenarios `pbft-withhold` and `pbft-forged-headers`: a peer's Deliver source misbehaves.

The network of `eov-pbft` (four PBFT-lite replicas; two peers with gateways, which follow
orderer.a first: index 0 of the orderer list; the bank contract). A few transactions are
submitted through both gateways; nobody asks a peer for a block it lacks (no endorsement names
a newer block), so the quiet-stream re-dial (`runtime/roles/peer/deliver_watch.py`) never fires:
the peers are query-only as far as their Deliver streams go.

- `pbft-withhold`: orderer.a runs the TEST-ONLY withhold fault from block 1 on
  (`DLTMW_TEST_BYZANTINE=orderer.a:withhold:1`, `runtime/roles/orderer/withhold.py`): it orders
  correctly and answers Broadcast, but its Deliver streams stay open and silent. Each peer's
  censorship monitor (`runtime/roles/peer/header_monitor.py`) sees orderer.b's verified header
  of a block orderer.a did not deliver; after `limits.censorship_timeout_s` the peer follows
  orderer.b. Asserted: every transaction answered VALID; both peers catch up with the orderers
  within the timeout plus `CATCH_UP_BOUND_S` of the first block being withheld; each peer
  switched (`CensorWatch.switches`); one chain everywhere, every acknowledged transaction on it
  exactly once where its client was told.
- `pbft-forged-headers`: orderer.b, the orderer the peers' monitors watch, shows forged headers
  (`orderer.b:forge`: numbers far ahead, signatures of other blocks); orderer.a is correct.
  Asserted: no switch at all, each peer counted the forgery once per stream, every transaction
  VALID, one chain.

`run(..., monitor=False)` sets `censorship_timeout_s = 0` on the peers: the negative control,
where under `pbft-withhold` the peers stay at block 0 and no transaction is answered.
"""

from __future__ import annotations

import asyncio

from dltmw.runtime.config_file import CENSORSHIP_TIMEOUT_S
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.sim.deployment import Deployment
from dltmw.sim.scenarios.censor import OPS_UNTIL_S, Work, byzantine_hook, check_chains, open_later
from dltmw.sim.scenarios.eov import CHANNEL, CLIENTS, PEERS, heights
from dltmw.sim.scenarios.eov import ORDERERS as EOV_ORDERERS
from dltmw.sim.scenarios.eov import topology as eov_topology
from dltmw.sim.scenarios.result import ScenarioResult, conclude
from dltmw.v1 import transaction_pb2

ORDERERS = EOV_ORDERERS["pbft"]
MODES = {"withhold": f"{ORDERERS[0]}:withhold:1", "forged-headers": f"{ORDERERS[1]}:forge"}
OPS = 4
CATCH_UP_BOUND_S = 5.0  # past the timeout: a header, a re-dial, the blocks
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


async def run(seed: int, mode: str, trace: bool = False, monitor: bool = True) -> ScenarioResult:
    """One seeded run of `pbft-<mode>` (module docstring); `monitor` False: the monitor off."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {sorted(MODES)}")
    with byzantine_hook(MODES[mode]):
        return await _run(seed, mode, trace, monitor)


async def _run(seed: int, mode: str, trace: bool, monitor: bool) -> ScenarioResult:
    # The envelope path (channels made before `dltmw init` turned dissemination on): the
    # byzantine hook acts on the primary's envelope proposals; docs/ordering.md says so.
    dep = Deployment(eov_topology("pbft", dissemination=False), trace)
    timeout_s = CENSORSHIP_TIMEOUT_S if monitor else 0.0
    for peer in PEERS:
        dep.add_to_node_toml(peer, f"[limits]\ncensorship_timeout_s = {timeout_s}\n")
    work = Work()
    lacking: list[str] = []
    caught_up_at = -1.0
    switches = forged = 0
    try:
        await dep.start()
        dep.net.faults.delay_max_s = dep.rng.choice((0.002, 0.005, 0.02))
        clients = [dep.gateway_client(c, g) for c, g in CLIENTS]
        started = dep.now
        await asyncio.gather(*(open_later(dep, clients[k % 2], work, k) for k in range(OPS)))
        by_s = started + OPS_UNTIL_S + CENSORSHIP_TIMEOUT_S + CATCH_UP_BOUND_S
        if await dep.settle(lambda: len(set(heights(dep).values())) == 1, max(by_s, dep.now)):
            caught_up_at = dep.now - started
        else:
            lacking.append(f"liveness: the peers did not catch up by {by_s:.1f}s: {heights(dep)}")
        if mode == "forged-headers":  # the forged header's suspicion comes due, is checked
            await asyncio.sleep(CENSORSHIP_TIMEOUT_S + CATCH_UP_BOUND_S)
        lacking += _outcome(dep, mode, work)
        switches, forged = _monitor_counts(dep)
    finally:
        await dep.stop()
    summary = {
        "acked": len(work.acks),
        "failed": len(work.failed),
        "switches": switches,
        "forged": forged,
        "caught_up_ms": round(1000 * caught_up_at),
    }
    return conclude(
        dep, f"pbft-{mode}", seed, lacking, lambda: check_chains(dep, work.acks), summary
    )


def _peer_channels(dep: Deployment) -> list[PeerChannel]:
    out = []
    for peer in PEERS:
        node = dep.hosts[peer].node
        role = node.peers.get(CHANNEL) if node is not None else None
        if role is not None:
            out.append(role)
    return out


def _monitor_counts(dep: Deployment) -> tuple[int, int]:
    roles = _peer_channels(dep)
    switches = sum(r.censor_watch.switches for r in roles)
    forged = sum(r.censor_watch.forged for r in roles)
    return switches, forged


def _outcome(dep: Deployment, mode: str, work: Work) -> list[str]:
    out = [f"liveness: {f}" for f in work.failed]
    not_valid = [a.tx_id[:8] for a in work.acks if a.code != VALID]
    if not_valid:
        out.append(f"not VALID: {not_valid}")
    roles = _peer_channels(dep)
    for peer, role in zip(PEERS, roles, strict=True):
        censor = role.censor_watch
        if mode == "withhold" and censor.switches < 1:
            out.append(f"{peer} never left the withholding orderer")
        if mode == "forged-headers" and (censor.switches or censor.forged < 1):
            out.append(f"{peer}: {censor.switches} switches, {censor.forged} forgeries seen")
    return out
