"""Scenario `cfg-pbft`: config updates of a PBFT-lite channel under faults.

The network of `eov-pbft` (four PBFT-lite orderer replicas, peer0.org1 and peer0.org2, the bank
contract) plus a second Org1 client, user2.org1. Clients of both organisations run payments at
random moments; user2.org1 transacts before and after the admins revoke its certificate. Two
config updates, each signed by the admins of Org1 and Org2 (the MAJORITY admin policy) and
submitted through a gateway, retried like any client would while the network misbehaves:

1. revoke user2.org1's certificate;
2. built on the config update 1 leads to: a new default endorsement policy (OR instead of AND)
   and smaller blocks (max_tx_count 10 -> 4).

Faults until `HEAL_AT_S`, from the seed: network delays; Deliver messages dropped, duplicated and
reordered; connections reset; a peer and an orderer replica killed in the middle of a store job
and restarted; one replica cut off from the other three for a while (it catches up across the
config blocks by state transfer or by fetching blocks). Then every fault ends and every node is
restarted; the run must converge within `LIVENESS_S`: every client answered, both updates
applied, every node at one height.

Checkers: the ledger checkers of `eov` (one chain, exactly once, state == replay — the replay
applies a valid config update's config), `config_checks.check_configs` (every replica and peer
recorded the config its chain applies, at the block that applies it) and `check_revoked` (no
transaction of user2.org1 VALID after the block that revoked it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from cryptography import x509

from dltmw.aio.clock import utc_now
from dltmw.client.files import ClientFiles
from dltmw.client.gateway import GatewayClient
from dltmw.client.governance import genesis_of
from dltmw.core import config_edit
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.config_update import add_signature, update_content, update_envelope
from dltmw.core.genesis import read_genesis
from dltmw.rpc.status import reason_of
from dltmw.sim.config_checks import check_configs, check_revoked, read_configs
from dltmw.sim.deployment import Deployment
from dltmw.sim.ledger_checks import Ack, code_name, read_chain
from dltmw.sim.scenarios.eov import ACCOUNTS, CHANNEL, CLIENTS, DELIVER, PEERS, checks, heights
from dltmw.sim.scenarios.eov import ORDERERS as EOV_ORDERERS
from dltmw.sim.scenarios.eov import topology as eov_topology
from dltmw.sim.scenarios.result import ScenarioResult, conclude
from dltmw.sim.wire import MessageFaults
from dltmw.v1 import common_pb2, config_pb2, config_update_pb2, transaction_pb2

ORDERERS = EOV_ORDERERS["pbft"]
REVOKED = "user2.org1"
ADMINS = ("admin.org1", "admin.org2")
OPS = 16
REVOKED_OPS = 6
FAULTS_FROM_S, OPS_UNTIL_S, HEAL_AT_S = 0.05, 1.8, 2.2
LIVENESS_S = 60.0
RETRIES = 20
RETRY_S = 0.25
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def topology(dissemination: bool | None = None) -> str:
    """`eov-pbft`'s topology with one more Org1 client (the one to be revoked);
    `dissemination`: PBFT-lite's `pbft_dissemination` (None: what `dltmw init` sets)."""
    network = eov_topology("pbft", dissemination=dissemination)
    return network + f'\n[[clients]]\nid = "{REVOKED}"\norg = "Org1"\n'


@dataclass
class Work:
    """What the clients did and were told."""

    acks: list[Ack] = field(default_factory=list)
    revoked_tx_ids: list[str] = field(default_factory=list)
    updates: list[tuple[int, int]] = field(default_factory=list)  # (code, block) per update
    open_ops: int = 0
    failed: int = 0


async def run(seed: int, trace: bool = False) -> ScenarioResult:
    """One seeded run (see the module docstring)."""
    dep = Deployment(topology(), trace)
    work = Work()
    lacking: list[str] = []
    genesis = read_genesis(genesis_of(dep.root, CHANNEL))
    try:
        await dep.start()
        users = [dep.gateway_client(c, g) for c, g in CLIENTS]
        revoked = dep.gateway_client(REVOKED, "peer0.org1")
        for account in ACCOUNTS:
            await _op(dep, users[0], work, f"open {account}", "open", [account, "1000"])
        _schedule_faults(dep)
        dep.at(HEAL_AT_S, dep.heal)
        jobs = [_random_op_later(dep, users[k % 2], work, k) for k in range(OPS)]
        jobs += [_revoked_op_later(dep, revoked, work, k) for k in range(REVOKED_OPS)]
        jobs.append(_governance(dep, work, genesis))
        await asyncio.gather(*jobs)
        lacking = await _converge(dep, work)
    finally:
        await dep.stop()
    summary = {"acked": len(work.acks), "failed": work.failed, "updates": len(work.updates)}
    return conclude(dep, "cfg-pbft", seed, lacking, lambda: _check(dep, work, genesis), summary)


# --- workload ---------------------------------------------------------------------------------


async def _op(
    dep: Deployment, client: GatewayClient, work: Work, what: str, function: str, args: list[str]
) -> None:
    work.open_ops += 1
    try:
        done = await client.submit_transaction(CHANNEL, "bank", function, *args)
        status = done.status
        work.acks.append(Ack(done.tx_id, status.result, status.block_number, status.tx_index))
        block = done.status.block_number
        dep.log(f"{what}: {done.tx_id[:8]} {code_name(done.status.result)} at {block}")
    except grpc.aio.AioRpcError as exc:
        work.failed += 1
        dep.log(f"{what}: {exc.code().name} {reason_of(exc) or ''}".rstrip())
    finally:
        work.open_ops -= 1


async def _random_op_later(dep: Deployment, client: GatewayClient, work: Work, k: int) -> None:
    await asyncio.sleep(dep.rng.uniform(FAULTS_FROM_S, OPS_UNTIL_S))
    src, dst = dep.rng.sample(ACCOUNTS, 2)
    amount = str(dep.rng.randint(1, 50))
    what = f"op{k} payment {src} {dst} {amount}"
    await _op(dep, client, work, what, "payment", [src, dst, amount])


async def _revoked_op_later(dep: Deployment, client: GatewayClient, work: Work, k: int) -> None:
    """A deposit by the client to be revoked, step by step (its tx_id is known even when it is
    refused, so the checker can look for it on every chain)."""
    await asyncio.sleep(dep.rng.uniform(FAULTS_FROM_S, OPS_UNTIL_S))
    account = dep.rng.choice(ACCOUNTS)
    what = f"{REVOKED} op{k} deposit {account}"
    work.open_ops += 1
    try:
        signed, tx_id = client.proposal(CHANNEL, "bank", "deposit", [account, "1"])
        work.revoked_tx_ids.append(tx_id)
        endorsed = await client.endorse(signed)
        await client.submit(client.envelope(endorsed.prepared_payload))
        status = await client.commit_status(CHANNEL, tx_id)
        dep.log(f"{what}: {tx_id[:8]} {code_name(status.result)} at {status.block_number}")
    except grpc.aio.AioRpcError as exc:
        dep.log(f"{what}: {exc.code().name} {reason_of(exc) or ''}".rstrip())
    finally:
        work.open_ops -= 1


# --- governance -------------------------------------------------------------------------------


async def _governance(dep: Deployment, work: Work, genesis: ChannelView) -> None:
    """Revoke user2.org1, then change the endorsement policy and the block size."""
    await asyncio.sleep(dep.rng.uniform(0.2, 0.8))
    cert = ClientFiles.load(dep.root, REVOKED).signer.certificate_der
    serial = x509.load_der_x509_certificate(cert).serial_number
    first = config_edit.with_revoked(genesis.config, "Org1", [serial])
    if not await _update(dep, work, genesis, first, "revoke user2.org1"):
        return
    after = config_pb2.ChannelConfig()
    after.CopyFrom(first)
    after.sequence = genesis.sequence + 1
    view = channel_view(after)
    second = config_edit.with_settings(
        view.config, endorsement_policy="OR(Org1.peer, Org2.peer)", max_tx_count=4
    )
    await _update(dep, work, view, second, "policy OR, max_tx_count 4")


async def _update(
    dep: Deployment,
    work: Work,
    view: ChannelView,
    config: config_pb2.ChannelConfig,
    what: str,
) -> bool:
    """Sign by both admins, submit (retrying while the network refuses), wait for its code."""
    update = config_update_pb2.ConfigUpdate(content=update_content(view, config))
    for admin in ADMINS:
        add_signature(update, ClientFiles.load(dep.root, admin).signer)
    submitter = dep.gateway_client(ADMINS[0], "peer0.org1")
    nonce = dep.rng.randbytes(24)
    raw = update_envelope(update, CHANNEL, submitter.signer, nonce, utc_now())
    envelope = common_pb2.Envelope.FromString(raw)
    payload = common_pb2.Payload.FromString(envelope.payload)
    tx_id = common_pb2.Header.FromString(payload.header).tx_id
    submitted = attempted = guessed = False
    work.open_ops += 1
    try:
        for _ in range(RETRIES):
            try:
                if not submitted:
                    attempted = True
                    await submitter.submit(envelope)
                    submitted = True
                status = await submitter.commit_status(CHANNEL, tx_id)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.ALREADY_EXISTS or (
                    attempted and reason_of(exc) == "CONFIG_SEQUENCE_STALE"
                ):
                    # An earlier attempt was ordered (an applied update is stale before it is
                    # a duplicate at admission): ask for its status.
                    guessed = exc.code() != grpc.StatusCode.ALREADY_EXISTS
                    submitted = True
                    continue
                if exc.code() not in RETRYABLE:
                    dep.log(f"update {what}: {exc.code().name} {reason_of(exc) or ''}".rstrip())
                    return False
                if guessed and reason_of(exc) == "WAIT_TIMEOUT":
                    # STALE came from an orderer BEHIND the config the update follows (it
                    # judges it against its own older one; the gateway relays no sequence):
                    # the update was never ordered — submit it again.
                    dep.net.count("update-resubmitted")
                    submitted = guessed = False
                dep.net.count("update-retried")
                await asyncio.sleep(RETRY_S)
        else:
            dep.log(f"update {what}: not answered after {RETRIES} attempts")
            return False
    finally:
        work.open_ops -= 1
    work.updates.append((status.result, status.block_number))
    dep.log(f"update {what}: {code_name(status.result)} at block {status.block_number}")
    if status.result == VALID:
        dep.net.count("config-applied")
        return True
    return False


# --- faults and convergence -------------------------------------------------------------------


def _schedule_faults(dep: Deployment) -> None:
    rng, faults = dep.rng, dep.net.faults
    faults.delay_max_s = rng.choice((0.002, 0.005, 0.02))
    faults.stream_faults[DELIVER] = MessageFaults(drop=0.25, duplicate=0.1, reorder=0.35)
    faults.break_rate = 0.01
    _crash_later(dep, rng.choice(PEERS), "ledger")
    _crash_later(dep, rng.choice(ORDERERS), rng.choice(("ledger", "pbft-store")))
    lone = rng.choice(ORDERERS)
    start = rng.uniform(FAULTS_FROM_S, 0.8)
    end = min(start + rng.uniform(0.3, 1.2), HEAL_AT_S)
    others = [o for o in ORDERERS if o != lone]

    def cut() -> None:
        for other in others:
            dep.net.partition(lone, other)
        dep.net.count("replica-isolated")
        dep.log(f"partition {lone} | other replicas")

    def mend() -> None:
        for other in others:
            dep.net.heal(lone, other)
        dep.log(f"partition {lone} | other replicas healed")

    dep.at(start, cut)
    dep.at(end, mend)


def _crash_later(dep: Deployment, node_id: str, store: str) -> None:
    rng = dep.rng
    start, after = rng.uniform(FAULTS_FROM_S, 1.0), rng.random() < 0.5
    down_s = rng.uniform(0.1, 0.4)

    def killed() -> None:
        dep.at(min(HEAL_AT_S, dep.now + down_s), lambda: dep.restart(node_id))

    dep.at(start, lambda: dep.kill_at(node_id, store, after, killed))


async def _converge(dep: Deployment, work: Work) -> list[str]:
    def converged() -> bool:
        return work.open_ops == 0 and len(set(heights(dep).values())) == 1

    out = []
    if not await dep.settle(converged, HEAL_AT_S + LIVENESS_S):
        out.append(f"liveness: not converged {LIVENESS_S}s after the heal: {heights(dep)}")
    valid = [b for c, b in work.updates if c == VALID]
    if len(valid) != 2:  # the network healed: both must be applied by now
        out.append(f"liveness: {len(valid)} of 2 config updates applied ({work.updates})")
    return out


# --- checks -----------------------------------------------------------------------------------


def _check(dep: Deployment, work: Work, genesis: ChannelView) -> list[str]:
    peers = [read_chain(p, dep.data(p) / f"{CHANNEL}.peer.sqlite") for p in PEERS]
    orderers = [read_chain(o, dep.data(o) / f"{CHANNEL}.orderer.sqlite") for o in ORDERERS]
    out = checks(peers, orderers, work.acks)
    records = [read_configs(p, dep.data(p) / f"{CHANNEL}.peer.sqlite") for p in PEERS]
    records += [read_configs(o, dep.data(o) / f"{CHANNEL}.orderer.sqlite") for o in ORDERERS]
    out += check_configs(records, genesis)
    revoked_at = min((b for c, b in work.updates[:1] if c == VALID), default=None)
    if revoked_at is not None:
        for peer in peers:
            out += check_revoked(peer, revoked_at, work.revoked_tx_ids)
    return out
