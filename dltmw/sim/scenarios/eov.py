"""Scenario (a): endorse → order → validate, two organisations, AND policy, the bank contract.

The network: peer0.org1 and peer0.org2 (peers and gateways), and either one solo orderer
(`eov-solo`) or four PBFT-lite orderer replicas (`eov-pbft`). Two clients, one per
organisation, each through its own gateway, open accounts and then run deposits, withdrawals
and payments at random moments — half of them through the SDK's pipelined Transact stream,
half step by step (Endorse, Submit, CommitStatus) re-submitting the same envelope when the
gateway was unreachable, which is how duplicates reach the ledger.

Faults until `HEAL_AT_S`, all from the seed: network delays; Deliver messages dropped,
duplicated and reordered (orderer → peer); connections reset on every stream; peers killed in
the middle of a block (just before or just after the block's sqlite transaction) and restarted;
an orderer replica (or the solo orderer) killed the same way; a partition between a peer and
the ordering service. Then every fault is removed and every node restarted, and the run must
converge within `LIVENESS_S`: all clients answered, every node at the same height.

Checkers (`sim/ledger_checks.py`): one chain (same hashes, same codes), every acknowledged
transaction committed exactly once where and how the client was told, world state == replay
of the blocks with a naive MVCC model (codes, state, state hash); no node failed for good and
no servicer raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import grpc

from dltmw.client.gateway import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.sim.deployment import Deployment
from dltmw.sim.ledger_checks import (
    Ack,
    Chain,
    check_exactly_once,
    check_one_chain,
    check_replay,
    code_name,
    read_chain,
)
from dltmw.sim.scenarios.result import ScenarioResult, conclude
from dltmw.sim.wire import MessageFaults
from dltmw.v1 import gateway_service_pb2

logger = logging.getLogger(__name__)

CHANNEL = "trades"
ACCOUNTS = ("A", "B", "C", "D")
OPENING_BALANCE = 1000
OPS = 20
FAULTS_FROM_S, OPS_UNTIL_S, HEAL_AT_S = 0.05, 1.5, 2.0
LIVENESS_S = 60.0
DELIVER = "/dltmw.v1.OrdererService/Deliver"
PEERS = ("peer0.org1", "peer0.org2")
CLIENTS = (("user1.org1", "peer0.org1"), ("user1.org2", "peer0.org2"))

_COMMON = """
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway"]
[[clients]]
id = "user1.org1"
org = "Org1"
[[clients]]
id = "user1.org2"
org = "Org2"
"""
_CHANNEL = """
[[channels]]
id = "trades"
members = ["Org1", "Org2"]
orderers = [{orderers}]
ordering = "{ordering}"
endorsement_policy = "AND(Org1.peer, Org2.peer)"
contracts = [{{ name = "bank" }}, {{ name = "bank_rmw" }}]
[channels.batch]
max_tx_count = 10
max_bytes = 1048576
timeout_ms = {batch_ms}
cut_by_limits_only = {by_limits}
{extra}"""
ORDERERS = {"solo": ("orderer0",), "pbft": ("orderer.a", "orderer.b", "orderer.c", "orderer.d")}


def topology(
    ordering: str,
    batch_ms: int = 50,
    by_limits_only: bool = False,
    reorder: bool = False,
    dissemination: bool | None = None,
) -> str:
    """The scenario's topology TOML for `ordering` ("solo" or "pbft"); blocks are cut after
    10 transactions or `batch_ms`, and (unless `by_limits_only`) as soon as the orderer has
    nothing more queued (adaptive cutting); `reorder`: Fabric++ order in each block;
    `dissemination`: PBFT-lite's `pbft_dissemination` (None: what `dltmw init` sets)."""
    orderers = ORDERERS[ordering]
    lines = [f'name = "sim-eov-{ordering}"', _COMMON]
    for i, node in enumerate(orderers):
        org = f"Orderer{i}"
        lines.append(
            f'[[orgs]]\nid = "{org}"\n[[nodes]]\nid = "{node}"\norg = "{org}"\nroles = ["orderer"]'
        )
    names = ", ".join(f'"{o}"' for o in orderers)
    kind = "none" if ordering == "solo" else "pbft"
    by_limits = str(by_limits_only).lower()
    extra = "reorder = true\n" if reorder else ""
    if dissemination is not None:
        extra += f"pbft_dissemination = {str(dissemination).lower()}\n"
    lines.append(
        _CHANNEL.format(
            orderers=names, ordering=kind, batch_ms=batch_ms, by_limits=by_limits, extra=extra
        )
    )
    return "\n".join(lines)


@dataclass
class Workload:
    """What the clients did and were told."""

    acks: list[Ack] = field(default_factory=list)
    failed: int = 0
    open_ops: int = 0


Phase = Callable[[Deployment, GatewayClient, "Workload"], Awaitable[None]]
Extra = Callable[[Deployment, list[Chain]], list[str]]


async def run(
    seed: int,
    ordering: str,
    trace: bool = False,
    name: str = "",
    network: str = "",
    before_ops: Phase | None = None,
    extra_check: Extra | None = None,
) -> ScenarioResult:
    """One seeded run of `eov-<ordering>` (see the module docstring). A variant (`name`) may
    bring its own `network` (topology TOML), a phase run by the first client once the
    accounts are open (`before_ops`, before the faults begin) and checks of its own over the
    peers' chains (`extra_check`; `scenarios/reorder.py`)."""
    dep = Deployment(network or topology(ordering), trace)
    work = Workload()
    lacking: list[str] = []
    height = 0
    try:
        await dep.start()
        clients = [dep.gateway_client(c, g) for c, g in CLIENTS]
        await _open_accounts(dep, clients[0], work)
        if before_ops is not None:
            await before_ops(dep, clients[0], work)
        _schedule_faults(dep, ordering)
        dep.at(HEAL_AT_S, dep.heal)
        ops = [_op_later(dep, clients[k % 2], work, k) for k in range(OPS)]
        await asyncio.gather(*ops)
        lacking = await _converge(dep, work)
        height = max(heights(dep).values(), default=0)
    finally:
        await dep.stop()
    summary = {"acked": len(work.acks), "failed": work.failed, "height": height}
    check = partial(_check, dep, ordering, work, extra_check)
    return conclude(dep, name or f"eov-{ordering}", seed, lacking, check, summary)


# --- workload --------------------------------------------------------------------------------


async def _open_accounts(dep: Deployment, client: GatewayClient, work: Workload) -> None:
    for account in ACCOUNTS:
        done = await client.submit_transaction(
            CHANNEL, "bank", "open", account, str(OPENING_BALANCE)
        )
        _record(dep, work, f"open {account}", done.tx_id, done.status)


def _random_op(dep: Deployment) -> tuple[str, list[str]]:
    rng = dep.rng
    kind = rng.choice(("deposit", "withdraw", "payment", "payment"))
    amount = str(rng.randint(1, 300))
    if kind == "payment":
        src, dst = rng.sample(ACCOUNTS, 2)
        return kind, [src, dst, amount]
    return kind, [rng.choice(ACCOUNTS), amount]


async def _op_later(dep: Deployment, client: GatewayClient, work: Workload, k: int) -> None:
    await asyncio.sleep(dep.rng.uniform(FAULTS_FROM_S, OPS_UNTIL_S))
    function, args = _random_op(dep)
    stepwise = dep.rng.random() < 0.5
    what = f"op{k} {function} {' '.join(args)} ({'stepwise' if stepwise else 'pipelined'})"
    work.open_ops += 1
    try:
        if stepwise:
            await _stepwise(dep, client, work, what, function, args)
        else:
            done = await client.submit_transaction(CHANNEL, "bank", function, *args)
            _record(dep, work, what, done.tx_id, done.status)
    except grpc.aio.AioRpcError as exc:
        work.failed += 1
        dep.log(f"{what}: {exc.code().name} {reason_of(exc) or ''} {exc.details()}".rstrip())
    finally:
        work.open_ops -= 1


async def _stepwise(
    dep: Deployment,
    client: GatewayClient,
    work: Workload,
    what: str,
    function: str,
    args: list[str],
) -> None:
    signed, tx_id = client.proposal(CHANNEL, "bank", function, args)
    endorsed = await client.endorse(signed)
    envelope = client.envelope(endorsed.prepared_payload)
    for attempt in range(3):
        try:
            await client.submit(envelope)
            break
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                break  # an earlier attempt reached the ledger
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 2:
                raise
            dep.net.count("client-resubmitted")
            dep.log(f"{what}: submit UNAVAILABLE, re-submitting the same envelope")
            await asyncio.sleep(0.2)
    status = await client.commit_status(CHANNEL, tx_id)
    _record(dep, work, what, tx_id, status)


def _record(
    dep: Deployment,
    work: Workload,
    what: str,
    tx_id: str,
    status: gateway_service_pb2.CommitStatusResponse,
) -> None:
    work.acks.append(Ack(tx_id, status.result, status.block_number, status.tx_index))
    dep.log(
        f"{what}: {tx_id[:8]} {code_name(status.result)} at {status.block_number}/{status.tx_index}"
    )


# --- faults ----------------------------------------------------------------------------------


def _schedule_faults(dep: Deployment, ordering: str) -> None:
    rng, faults = dep.rng, dep.net.faults
    faults.delay_max_s = rng.choice((0.002, 0.005, 0.02))
    faults.stream_faults[DELIVER] = MessageFaults(drop=0.25, duplicate=0.1, reorder=0.35)
    faults.break_rate = 0.01
    for peer in PEERS:  # each peer killed mid-block once, restarted a little later
        _crash_later(dep, peer, "ledger")
    orderers = ORDERERS[ordering]
    if rng.random() < 0.5:
        store = "ledger" if ordering == "solo" else rng.choice(("ledger", "pbft-store"))
        _crash_later(dep, rng.choice(orderers), store)
    if rng.random() < 0.5:
        peer, orderer = rng.choice(PEERS), rng.choice(orderers)
        start = rng.uniform(FAULTS_FROM_S, HEAL_AT_S - 0.3)
        end = start + rng.uniform(0.1, 0.8)

        def cut() -> None:
            dep.net.partition(peer, orderer)
            dep.log(f"partition {peer} | {orderer}")

        def mend() -> None:
            dep.net.heal(peer, orderer)
            dep.log(f"partition {peer} | {orderer} healed")

        dep.at(start, cut)
        dep.at(min(end, HEAL_AT_S), mend)


def _crash_later(dep: Deployment, node_id: str, store: str) -> None:
    """From a random early moment on, kill `node_id` at its next `store` job (just before or
    just after it), and restart it a little after the kill."""
    rng = dep.rng
    start = rng.uniform(FAULTS_FROM_S, OPS_UNTIL_S / 2)
    after = rng.random() < 0.5
    down_s = rng.uniform(0.1, 0.4)

    def killed() -> None:
        dep.at(min(HEAL_AT_S, dep.now + down_s), lambda: dep.restart(node_id))

    dep.at(start, lambda: dep.kill_at(node_id, store, after, killed))


async def _converge(dep: Deployment, work: Workload) -> list[str]:
    """Wait (bounded) until every client op ended and every node is at one height."""

    def converged() -> bool:
        return work.open_ops == 0 and len(set(heights(dep).values())) == 1

    if await dep.settle(converged, HEAL_AT_S + LIVENESS_S):
        return []
    return [
        f"liveness: not converged {LIVENESS_S}s after the heal: {heights(dep)} "
        f"(client ops still open: {work.open_ops})"
    ]


def heights(dep: Deployment) -> dict[str, int]:
    out = {}
    for node_id, host in dep.hosts.items():
        node = host.node
        if node is None:
            out[node_id] = -1
            continue
        role = node.peers.get(CHANNEL) or node.orderers.get(CHANNEL)
        out[node_id] = role.ledger.height if role is not None else -1
    return out


# --- checks ----------------------------------------------------------------------------------


def _check(dep: Deployment, ordering: str, work: Workload, extra: Extra | None) -> list[str]:
    peers = [read_chain(p, dep.data(p) / f"{CHANNEL}.peer.sqlite") for p in PEERS]
    orderers = [
        read_chain(o, dep.data(o) / f"{CHANNEL}.orderer.sqlite") for o in ORDERERS[ordering]
    ]
    out = checks(peers, orderers, work.acks) + dep.fatal() + dep.net.unexpected
    return out + (extra(dep, peers) if extra is not None else [])


def checks(peers: list[Chain], orderers: list[Chain], acks: list[Ack]) -> list[str]:
    """Every checker of the scenario over the chains read after a run."""
    out = check_one_chain(peers, orderers)
    for peer in peers:
        out += check_exactly_once(peer, acks)
        out += check_replay(peer)
    return out
