"""Scenarios `eov-pbft-reorder` and `eov-pbft-envelopes-reorder`: `eov-pbft` on a channel with
`batch.reorder = true` (Fabric++, `core/reorder.py`), with PBFT-lite's dissemination (what
`dltmw init` sets) and without it (the envelope path of older channels).

PBFT-lite reorders where a batch's order is fixed: the primary's proposal without
dissemination, the batch a replica forms with it (docs/ordering.md). What must hold, on top of
`eov`'s checkers (one chain on every replica and peer — the blocks are equal everywhere —,
exactly once, state == replay): every block is in the rule's order (ordering it again by the
rule leaves it as it is: `check_rule_order`).

So that batches the rule changes reach the orderers, the first client endorses `PAIRS`
deposits (deltas: writers of an account) and payments out of the same accounts (readers of
it), then submits them at one moment, deposits first: arrival order puts each writer before
its reader, the rule the reader first. The count `burst-in-one-block` (the run's `counts`)
says how many deposits were ordered into one block with the payment reading their account; the tests
require it in most runs, and a negative control (the rule's call replaced by arrival order)
is caught by `check_rule_order`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from functools import partial
from pathlib import Path

from dltmw.client.gateway import GatewayClient
from dltmw.core.reorder import reorder
from dltmw.sim.deployment import Deployment
from dltmw.sim.ledger_checks import Ack, Chain
from dltmw.sim.scenarios.eov import CHANNEL, ORDERERS, Workload, topology
from dltmw.sim.scenarios.eov import run as eov_run
from dltmw.sim.scenarios.result import ScenarioResult
from dltmw.v1 import block_pb2, common_pb2

PAIRS = (("A", "B"), ("C", "D"))  # deposit on the first, then a payment first -> second


async def run(seed: int, dissemination: bool, trace: bool = False) -> ScenarioResult:
    """One seeded run (module docstring)."""
    name = "eov-pbft-reorder" if dissemination else "eov-pbft-envelopes-reorder"
    burst: list[tuple[str, str]] = []  # (deposit tx_id, payment tx_id) per pair
    result = await eov_run(
        seed,
        "pbft",
        trace,
        name=name,
        network=topology("pbft", reorder=True, dissemination=dissemination),
        before_ops=partial(_burst, burst),
        extra_check=partial(_checks, burst),
    )
    return result


async def _burst(
    burst: list[tuple[str, str]], dep: Deployment, client: GatewayClient, work: Workload
) -> None:
    """Endorse every deposit and payment, then submit them together, deposits first."""
    deposits: list[tuple[str, common_pb2.Envelope]] = []
    payments: list[tuple[str, common_pb2.Envelope]] = []
    for src, dst in PAIRS:
        for into, function, args in (
            (deposits, "deposit", [src, "5"]),
            (payments, "payment", [src, dst, "1"]),
        ):
            signed, tx_id = client.proposal(CHANNEL, "bank", function, args)
            endorsed = await client.endorse(signed)
            into.append((tx_id, client.envelope(endorsed.prepared_payload)))
    burst.extend((d[0], p[0]) for d, p in zip(deposits, payments, strict=True))
    await asyncio.gather(*(client.submit(envelope) for _tx, envelope in deposits + payments))
    for tx_id, _envelope in deposits + payments:
        status = await client.commit_status(CHANNEL, tx_id)
        work.acks.append(Ack(tx_id, status.result, status.block_number, status.tx_index))
    dep.log(f"burst: {len(burst)} deposit/payment pairs committed")


def _checks(burst: list[tuple[str, str]], dep: Deployment, peers: list[Chain]) -> list[str]:
    """The rule's order on the first replica's chain (`eov` checked it is everyone's); each
    pair ordered into one block is counted (`burst-in-one-block`: the run's evidence)."""
    first = ORDERERS["pbft"][0]
    out = check_rule_order(dep.data(first) / f"{CHANNEL}.orderer.sqlite")
    blocks = {tx.tx_id: tx.block for tx in peers[0].txs} if peers else {}
    for deposit, payment in burst:
        if deposit in blocks and blocks[deposit] == blocks.get(payment):
            dep.net.count("burst-in-one-block")
    return out


def check_rule_order(path: Path) -> list[str]:
    """Every block of the ledger at `path` is in Fabric++ order: ordering it by the rule
    again leaves it as it is."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT number, data FROM blocks WHERE number > 0 ORDER BY number")
        out = []
        for number, data in rows:
            envelopes = list(block_pb2.Block.FromString(data).data.envelopes)
            if len(envelopes) > 1 and reorder(envelopes) != envelopes:
                out.append(f"block {number} is not in the reorder rule's order")
        return out
    finally:
        conn.close()
