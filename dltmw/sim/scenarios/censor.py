"""Scenarios `pbft-censor` and `pbft-cut-off`: view 0's primary does not order, the channel must.

The network of `eov-pbft` (four PBFT-lite replicas, orderer.a the primary of view 0; two peers
with gateways; the bank contract). Both gateways send every envelope to orderer.a first (index 0
of the orderer list), and orderer.a never gets it ordered:

- `pbft-censor`: orderer.a runs the TEST-ONLY `CensorHook` (`DLTMW_TEST_BYZANTINE=orderer.a:
  censor`, `runtime/roles/orderer/byzantine.py`): as primary it admits every request and never
  proposes or relays it, while voting, checkpointing and changing views like a correct replica;
- `pbft-cut-off`: orderer.a is correct but cut off from the three other replicas for the whole
  workload, while the peers and their gateways still reach it; the partition heals at the end.

Either way no backup hears of a request orderer.a admitted (a primary relays nothing), so no
backup times it and no view change comes — unless the gateway's ordering deadline
(`limits.ordering_deadline_s`, `runtime/roles/gateway/orderer_choice.py`) sends the envelope to
a backup too, which relays it to every replica; their request timers then replace orderer.a.

Asserted (`ok`): every transaction of the workload is answered VALID before the workload's end
(`ANSWERED_BY_S`: the partition still holds); the backups moved past view 0; the chains agree
and hold every acknowledged transaction exactly once where its client was told (a copy ordered
twice would be DUPLICATE_TXID, never applied twice: `check_exactly_once`), state == replay.
`run(..., deadline_s=0)` switches the deadline off: the negative control, where nothing commits.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc

from dltmw.client.gateway import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.runtime.config_file import ORDERING_DEADLINE_S
from dltmw.runtime.roles.orderer.withhold import HOOK_ENV
from dltmw.sim.deployment import Deployment
from dltmw.sim.ledger_checks import Ack, code_name, read_chain
from dltmw.sim.scenarios.eov import CHANNEL, CLIENTS, PEERS, checks, heights
from dltmw.sim.scenarios.eov import ORDERERS as EOV_ORDERERS
from dltmw.sim.scenarios.eov import topology as eov_topology
from dltmw.sim.scenarios.result import ScenarioResult, conclude
from dltmw.v1 import transaction_pb2

ORDERERS = EOV_ORDERERS["pbft"]
PRIMARY, BACKUPS = ORDERERS[0], ORDERERS[1:]
ACCOUNTS = ("A", "B", "C")
OPS = 8
OPS_FROM_S, OPS_UNTIL_S = 0.5, 3.0
ANSWERED_BY_S = 40.0  # every op answered by then: deadline + request timer + view change
LIVENESS_S = 30.0
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
MODES = ("censor", "cut-off")


@dataclass
class Work:
    """What the clients did and were told."""

    acks: list[Ack] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    open_ops: int = 0


async def run(
    seed: int, mode: str, trace: bool = False, deadline_s: float = ORDERING_DEADLINE_S
) -> ScenarioResult:
    """One seeded run of `pbft-<mode>` (module docstring); `deadline_s` 0: the deadline off."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    with byzantine_hook(f"{PRIMARY}:censor" if mode == "censor" else None):
        return await _run(seed, mode, trace, deadline_s)


@contextmanager
def byzantine_hook(value: str | None) -> Iterator[None]:
    """`DLTMW_TEST_BYZANTINE` set to `value` (None: left as it is) while nodes are built in
    the block (a node reads it when it builds its orderer channel), then restored."""
    saved = os.environ.get(HOOK_ENV)
    if value is not None:
        os.environ[HOOK_ENV] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(HOOK_ENV, None)
        else:
            os.environ[HOOK_ENV] = saved


async def _run(seed: int, mode: str, trace: bool, deadline_s: float) -> ScenarioResult:
    # The envelope path (channels made before `dltmw init` turned dissemination on): the
    # byzantine hook acts on the primary's envelope proposals; docs/ordering.md says so.
    dep = Deployment(eov_topology("pbft", dissemination=False), trace)
    for peer in PEERS:  # the gateways' ordering deadline
        dep.add_to_node_toml(peer, f"[limits]\nordering_deadline_s = {deadline_s}\n")
    work = Work()
    lacking: list[str] = []
    views: dict[str, int] = {}
    try:
        await dep.start()
        dep.net.faults.delay_max_s = dep.rng.choice((0.002, 0.005, 0.02))
        if mode == "cut-off":
            _cut_off(dep)
        clients = [dep.gateway_client(c, g) for c, g in CLIENTS]
        ops = [open_later(dep, clients[k % 2], work, k) for k in range(OPS)]
        await asyncio.gather(*ops)
        views = _views(dep)
        lacking = _answered(work, views)
        if mode == "cut-off":
            await dep.heal()
        lacking += await _converge(dep, work)
    finally:
        await dep.stop()
    summary = {
        "acked": len(work.acks),
        "failed": len(work.failed),
        "view": min(views.values(), default=0),
        "latest_answer_ms": round(1000 * max(work.answered_at, default=0.0)),
    }
    name = f"pbft-{mode}"
    return conclude(dep, name, seed, lacking, lambda: check_chains(dep, work.acks), summary)


def _cut_off(dep: Deployment) -> None:
    for backup in BACKUPS:
        dep.net.partition(PRIMARY, backup)
    dep.net.count("primary-cut-off")
    dep.log(f"partition {PRIMARY} | {', '.join(BACKUPS)} (the gateways still reach it)")


async def open_later(dep: Deployment, client: GatewayClient, work: Work, k: int) -> None:
    """Op `k`: at a random moment of the workload, open an account; record what the client was
    told (answered by `ANSWERED_BY_S`, or failed)."""
    await asyncio.sleep(dep.rng.uniform(OPS_FROM_S, OPS_UNTIL_S))
    account = ACCOUNTS[k % len(ACCOUNTS)]
    function, args = ("open", [f"{account}{k}", "100"])
    what = f"op{k} {function} {' '.join(args)}"
    work.open_ops += 1
    try:
        done = await asyncio.wait_for(
            client.submit_transaction(CHANNEL, "bank", function, *args), ANSWERED_BY_S - dep.now
        )
        status = done.status
        work.acks.append(Ack(done.tx_id, status.result, status.block_number, status.tx_index))
        work.answered_at.append(dep.now)
        dep.log(f"{what}: {done.tx_id[:8]} {code_name(status.result)} at {status.block_number}")
    except grpc.aio.AioRpcError as exc:
        work.failed.append(f"{what}: {exc.code().name} {reason_of(exc) or ''}".rstrip())
        dep.log(work.failed[-1])
    except TimeoutError:
        work.failed.append(f"{what}: not answered by {ANSWERED_BY_S}s")
        dep.log(work.failed[-1])
    finally:
        work.open_ops -= 1


def _views(dep: Deployment) -> dict[str, int]:
    out = {}
    for backup in BACKUPS:
        node = dep.hosts[backup].node
        role = node.orderers.get(CHANNEL) if node is not None else None
        out[backup] = getattr(role, "current_view", 0)
    return out


def _answered(work: Work, views: dict[str, int]) -> list[str]:
    out = [f"liveness: {f}" for f in work.failed]
    not_valid = [a.tx_id[:8] for a in work.acks if a.code != VALID]
    if not_valid:
        out.append(f"not VALID: {not_valid}")
    if len(work.acks) != OPS:
        out.append(f"liveness: {len(work.acks)} of {OPS} transactions answered")
    if any(view == 0 for view in views.values()):
        out.append(f"no view change on every backup: {views}")
    return out


async def _converge(dep: Deployment, work: Work) -> list[str]:
    def converged() -> bool:
        return work.open_ops == 0 and len(set(heights(dep).values())) == 1

    if await dep.settle(converged, dep.now + LIVENESS_S):
        return []
    return [f"liveness: not converged within {LIVENESS_S}s: {heights(dep)}"]


def check_chains(dep: Deployment, acks: list[Ack]) -> list[str]:
    """The eov checkers over every peer's and orderer's chain of a stopped PBFT-lite run."""
    peers = [read_chain(p, dep.data(p) / f"{CHANNEL}.peer.sqlite") for p in PEERS]
    orderers = [read_chain(o, dep.data(o) / f"{CHANNEL}.orderer.sqlite") for o in ORDERERS]
    return checks(peers, orderers, acks)
