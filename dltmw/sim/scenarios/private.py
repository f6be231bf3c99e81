"""Scenario (c): private payloads between two organisations, with an auditor and an outsider.

Network: a solo orderer; peers (with privacy managers and gateways) of Org1 and Org2, who trade
privately; the Regulator's peer, the channel's privacy auditor (a recipient of every payload);
and Org3's peer, a channel member that is never a recipient. Clients of Org1 and Org2 send
private `kv` invocations to each other with the SDK (`PrivacyClient.submit_private`: Send, then
order the payload hash, then wait for the commit): blind writes of values carrying the run's
secret markers, and counter increments whose result depends on the order and on executing each
transaction exactly once. A failed send is tried again (a fresh payload); an ordered envelope is
sometimes submitted again (a duplicate on the ledger).

Faults until `HEAL_AT_S`: Push streams broken mid-way (pushes lost before or after the recipient
stored them, so Sends fail and are repeated), Deliver messages dropped, duplicated and
reordered, a recipient down for a while, a recipient killed in the middle of executing a
block's private transactions, and a recipient that loses its whole private store (file deleted
while it is down) and must recover it from the others when it restarts. Then the faults end,
every node is restarted, and within `LIVENESS_S` every node must be at one height with every
private transaction executed.

Checkers (`sim/privacy_checks.py`): the recipients executed every private transaction with the
same outcome and hold equal private states; the outsider holds nothing readable (hash-only
records, no private state, no marker anywhere in its files), and no public ledger file of any
node holds a marker.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from dltmw.client.privacy import PrivacyClient
from dltmw.sim.deployment import Deployment
from dltmw.sim.ledger_checks import VALID, check_one_chain, code_name, read_chain
from dltmw.sim.privacy_checks import (
    check_agreed,
    check_nothing_readable,
    check_recipients_agree,
    private_hashes,
    read_private,
)
from dltmw.sim.scenarios.result import ScenarioResult, conclude
from dltmw.sim.wire import MessageFaults

logger = logging.getLogger(__name__)

CHANNEL = "trades"
ORGS = ("Org1", "Org2")
PEERS = {"Org1": "peer0.org1", "Org2": "peer0.org2"}
AUDITOR, OUTSIDER, ORDERER = "peer0.regulator", "peer0.org3", "orderer0"
RECIPIENTS = (PEERS["Org1"], PEERS["Org2"], AUDITOR)
OPS = 12
ATTEMPTS = 6
OPS_FROM_S, OPS_UNTIL_S, HEAL_AT_S = 0.05, 1.2, 1.6
LIVENESS_S = 60.0
PUSH = "/dltmw.v1.PrivacyManagerService/Push"
DELIVER = "/dltmw.v1.OrdererService/Deliver"

TOPOLOGY = """
name = "sim-private"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "Org3"
[[orgs]]
id = "Regulator"
[[orgs]]
id = "OrdererOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org3"
org = "Org3"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.regulator"
org = "Regulator"
roles = ["peer", "gateway"]
[[clients]]
id = "user1.org1"
org = "Org1"
[[clients]]
id = "user1.org2"
org = "Org2"
[[channels]]
id = "trades"
members = ["Org1", "Org2", "Org3", "Regulator"]
orderers = ["orderer0"]
privacy_auditors = ["peer0.regulator"]
contracts = [{ name = "kv" }]
batch = { max_tx_count = 10, max_bytes = 1048576, timeout_ms = 50 }
"""


@dataclass
class Workload:
    """The run's secrets and what the clients were told."""

    markers: list[bytes] = field(default_factory=list)
    committed: int = 0
    given_up: int = 0
    open_ops: int = 0


async def run(seed: int, trace: bool = False) -> ScenarioResult:
    """One seeded run of `private` (see the module docstring)."""
    dep = Deployment(TOPOLOGY, trace)
    work = Workload()
    lacking: list[str] = []
    try:
        await dep.start()
        clients = {org: PrivacyClient(dep.gateway_client(f"user1.{org.lower()}")) for org in ORGS}
        _faults(dep)
        dep.at(HEAL_AT_S, dep.heal)
        await asyncio.gather(*(_op_later(dep, clients, work, k) for k in range(OPS)))
        lacking = await _converge(dep, work)
    finally:
        await dep.stop()
    summary = {"committed": work.committed, "given_up": work.given_up}
    return conclude(dep, "private", seed, lacking, lambda: _check(dep, work), summary)


# --- workload --------------------------------------------------------------------------------


async def _op_later(
    dep: Deployment, clients: dict[str, PrivacyClient], work: Workload, k: int
) -> None:
    rng = dep.rng
    await asyncio.sleep(rng.uniform(OPS_FROM_S, OPS_UNTIL_S))
    sender = rng.choice(ORGS)
    other = ORGS[1 - ORGS.index(sender)]
    args: list[str | bytes] = ["counter"]
    function = "incr"
    if rng.random() < 0.5:
        marker = b"SECRET-" + rng.randbytes(12).hex().encode()
        work.markers.append(marker)
        function, args = "put", [f"k{k % 4}", marker]
    work.open_ops += 1
    try:
        what = f"op{k} {sender}->{other} {function}"
        await _submit(dep, clients[sender], work, what, other, function, args)
    finally:
        work.open_ops -= 1


async def _submit(
    dep: Deployment,
    client: PrivacyClient,
    work: Workload,
    what: str,
    other: str,
    function: str,
    args: list[str | bytes],
) -> None:
    """Send privately and order; a failed attempt is tried again (a fresh payload)."""
    for attempt in range(ATTEMPTS):
        try:
            done = await client.submit_private(CHANNEL, [other], "kv", function, *args)
        except grpc.aio.AioRpcError as exc:
            dep.log(f"{what}: attempt {attempt} {exc.code().name}")
            dep.net.count("client-resent")
            await asyncio.sleep(0.1 * 2**attempt)
            continue
        work.committed += 1
        if done.status.result != VALID:  # e.g. a recipient's agreement refused at commit
            dep.net.count(f"private-{code_name(done.status.result)}")
        dep.log(f"{what}: {done.payload_hash.hex()[:8]} at {done.status.block_number}")
        if dep.rng.random() < 0.3:
            await _order_again(dep, client, done.payload_hash, what)
        return
    work.given_up += 1
    dep.log(f"{what}: given up")


async def _order_again(dep: Deployment, client: PrivacyClient, digest: bytes, what: str) -> None:
    """Order the same payload hash once more (another tx_id: a recipient must run it again)."""
    nonce, tx_id = client.new_nonce()
    try:
        collected = await client.collect_agreements(CHANNEL, digest, tx_id)
    except grpc.aio.AioRpcError as exc:
        dep.log(f"{what}: agreements for ordering again: {exc.code().name}")
        return
    envelope, _ = client.private_envelope(CHANNEL, digest, collected.agreements, nonce)
    try:
        # The very same envelope twice, concurrently: both must pass the gateway's duplicate
        # check, so the second must not wait for the first to commit (the orderer cuts blocks
        # as soon as it has nothing queued); the ledger then marks the second DUPLICATE_TXID.
        await asyncio.gather(client.client.submit(envelope), client.client.submit(envelope))
    except grpc.aio.AioRpcError as exc:
        dep.log(f"{what}: ordering again: {exc.code().name}")
        return
    dep.net.count("ordered-again")
    dep.log(f"{what}: ordered again as {tx_id[:8]}")


# --- faults ----------------------------------------------------------------------------------


def _faults(dep: Deployment) -> None:
    rng, faults = dep.rng, dep.net.faults
    faults.delay_max_s = rng.choice((0.002, 0.01))
    faults.break_rates[PUSH] = 0.25
    faults.replay_rates[PUSH] = 0.2
    faults.stream_faults[DELIVER] = MessageFaults(drop=0.1, duplicate=0.1, reorder=0.1)
    down, losing = rng.sample(RECIPIENTS, 2)
    start = rng.uniform(OPS_FROM_S, OPS_UNTIL_S / 2)

    def go_down() -> None:
        dep.net.count("recipient-down")
        dep.kill(down, "a recipient goes down")

    dep.at(start, go_down)
    dep.at(start + rng.uniform(0.1, 0.4), lambda: dep.restart(down))
    dep.at(rng.uniform(OPS_UNTIL_S / 2, OPS_UNTIL_S), lambda: _lose_store(dep, losing))
    _kill_mid_store_job(dep, rng.choice(RECIPIENTS), rng.uniform(OPS_FROM_S, OPS_UNTIL_S / 2))


def _kill_mid_store_job(dep: Deployment, node_id: str, start: float) -> None:
    """Kill a recipient at its private store's next job (a block's private execution, a
    pushed batch), just before or just after it; restart it shortly after."""
    after = dep.rng.random() < 0.5

    def killed() -> None:
        dep.at(min(HEAL_AT_S, dep.now + 0.2), lambda: dep.restart(node_id))

    dep.at(start, lambda: dep.kill_at(node_id, "private-store", after, killed))


async def _lose_store(dep: Deployment, node_id: str) -> None:
    """Kill a recipient, delete its private store, start it: it must recover the payloads."""
    dep.kill(node_id, "to lose its private store")
    if read_private(node_id, dep.data(node_id) / f"{CHANNEL}.private.sqlite").payloads:
        dep.net.count("store-lost-with-payloads")
    for path in _private_files(dep, node_id):
        path.unlink()
    dep.net.count("store-lost")
    dep.log(f"{node_id}'s private store deleted")
    await asyncio.sleep(dep.rng.uniform(0.05, 0.3))
    await dep.restart(node_id)


def _private_files(dep: Deployment, node_id: str) -> list[Path]:
    return sorted(dep.data(node_id).glob(f"{CHANNEL}.private.sqlite*"))


async def _converge(dep: Deployment, work: Workload) -> list[str]:
    """Wait (bounded) until the clients are done, every node is at one height, and every
    private executor has looked at every block, with no recovery running."""
    if await dep.settle(lambda: work.open_ops == 0 and _settled(dep), HEAL_AT_S + LIVENESS_S):
        return []
    return [f"liveness: not settled {LIVENESS_S}s after the heal: {_progress(dep)}"]


def _progress(dep: Deployment) -> dict[str, tuple[int, int, int]]:
    """node -> (ledger height, private executor height, recoveries running)."""
    out = {}
    for node_id, host in dep.hosts.items():
        node = host.node
        if node is None:
            out[node_id] = (-1, -1, -1)
        elif node_id == ORDERER:
            out[node_id] = (node.orderers[CHANNEL].ledger.height, 0, 0)
        else:
            peer, privacy = node.peers[CHANNEL], node.privacy
            # a node still opening its channel (restarted) has no executor yet: not settled
            executor = privacy.executors.get(CHANNEL) if privacy is not None else None
            executed = executor.height if executor is not None else -1
            running = len(privacy._background) if privacy is not None else 0
            out[node_id] = (peer.ledger.height, executed, running)
    return out


def _settled(dep: Deployment) -> bool:
    progress = _progress(dep)
    heights = {h for h, _, _ in progress.values()}
    return len(heights) == 1 and all(
        node_id == ORDERER or (executed == height and running == 0)
        for node_id, (height, executed, running) in progress.items()
    )


# --- checks ----------------------------------------------------------------------------------


def _check(dep: Deployment, work: Workload) -> list[str]:
    peers = [*RECIPIENTS, OUTSIDER]
    chains = [read_chain(p, dep.data(p) / f"{CHANNEL}.peer.sqlite") for p in peers]
    orderer = read_chain(ORDERER, dep.data(ORDERER) / f"{CHANNEL}.orderer.sqlite")
    out = check_one_chain(chains, [orderer])
    hashes = private_hashes(chains[0])
    views = {p: read_private(p, dep.data(p) / f"{CHANNEL}.private.sqlite") for p in peers}
    out += check_recipients_agree(hashes, [views[p] for p in RECIPIENTS])
    out += check_agreed(chains[0], [views[p] for p in RECIPIENTS])
    public = [f for p in (*peers, ORDERER) for f in sorted(dep.data(p).glob("*.peer.sqlite*"))]
    public += sorted(dep.data(ORDERER).glob("*.sqlite*"))
    outsider_files = sorted(f for f in dep.data(OUTSIDER).rglob("*") if f.is_file())
    return out + check_nothing_readable(
        hashes, views[OUTSIDER], [*outsider_files, *public], work.markers
    )
