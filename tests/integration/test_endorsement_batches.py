"""Endorsements signed per batch (core/endorsement_batch.py) on real nodes: a channel made by
`dltmw init` signs them per batch, transactions endorsed in batches (AND of both orgs' peers)
commit VALID on every peer and the blocks carry the proofs; a config update
(`dltmw channel update --no-endorsement-batches`) makes endorsers sign alone again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.v1 import common_pb2, proposal_pb2, transaction_pb2

from .cli import dltmw
from .conftest import TWO_ORG
from .ledgers import blocks, height, ledger_path

pytestmark = pytest.mark.integration

PEERS = ("peer0.org1", "peer0.org2")
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


def _endorsements(
    net: Path, node: str, ours: set[str]
) -> list[tuple[int, proposal_pb2.Endorsement]]:
    """(validation code, endorsement) of every endorsement of the transactions `ours` on `node`."""
    out: list[tuple[int, proposal_pb2.Endorsement]] = []
    for block in blocks(ledger_path(net, node))[1:]:
        for raw, code in zip(block.data.envelopes, block.metadata.validation_codes, strict=True):
            payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload)
            header = common_pb2.Header.FromString(payload.header)
            if header.tx_id in ours:
                tx = transaction_pb2.Transaction.FromString(payload.data)
                out.extend((code, e) for e in tx.endorsements)
    return out


async def _caught_up(net: Path, at: int) -> None:
    """Until every peer holds `at` blocks (bounded). A transaction is committed on its
    gateway's peer when the client hears of it, not yet on the other one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    for node in PEERS:
        while height(ledger_path(net, node)) < at:
            assert loop.time() < deadline, f"{node} did not reach block {at - 1}"
            await asyncio.sleep(0.1)


async def _opened(clients: list[GatewayClient], tag: str, n: int) -> set[str]:
    """`n` accounts opened concurrently through both gateways (AND policy); their tx ids."""
    done = await asyncio.gather(
        *(
            clients[i % 2].submit_transaction("trades", "bank", "open", f"{tag}{i}", "100")
            for i in range(n)
        )
    )
    assert {d.status.result for d in done} == {VALID}
    return {d.tx_id for d in done}


async def _set_batches(net: Path, tmp: Path, on: bool) -> int:
    """A config update by both members' admins; the number of its block."""
    flag = "--endorsement-batches" if on else "--no-endorsement-batches"
    upd, net_s = str(tmp / f"endorsement-batches-{on}.update"), str(net)
    await asyncio.to_thread(
        dltmw, "channel", "update", net_s, "trades", flag, "-o", upd, "-c", "admin.org1"
    )
    for admin in ("admin.org1", "admin.org2"):
        await asyncio.to_thread(
            dltmw, "channel", "update", net_s, "trades", "--sign", upd, "-c", admin
        )
    said = await asyncio.to_thread(
        dltmw, "channel", "update", net_s, "trades", "--submit", upd, "-c", "admin.org1"
    )
    assert " VALID in block " in said, said
    return int(said.split(" VALID in block ")[1].split()[0])


async def test_endorsements_signed_per_batch_then_alone_after_a_config_update(
    network, tmp_path: Path
) -> None:
    net, _ = network(TWO_ORG, batch_ms=50)
    clients = [
        await GatewayClient.connect(net, "user1.org1"),
        await GatewayClient.connect(net, "user1.org2"),
    ]
    try:
        ours = await _opened(clients, "a", 80)
        await _caught_up(net, max(height(ledger_path(net, p)) for p in PEERS))
        for node in PEERS:
            found = _endorsements(net, node, ours)
            assert len(found) == 2 * len(ours) and {c for c, _ in found} == {VALID}
            batched = [e for _, e in found if e.HasField("batch_proof")]
            # both endorsers answered several proposals at once: one signature for many
            endorsers = {e.endorser for _, e in found}
            assert len(endorsers) == 2 and {e.endorser for e in batched} == endorsers
            for endorser in endorsers:
                theirs = [e for e in batched if e.endorser == endorser]
                assert len({e.signature for e in theirs}) < len(theirs)
                assert all(e.batch_proof.leaf_count > 1 for e in theirs)

        at = await _set_batches(net, tmp_path, on=False)
        await _caught_up(net, at + 1)  # endorsers sign under their latest config
        ours = await _opened(clients, "b", 40)
        await _caught_up(net, max(height(ledger_path(net, p)) for p in PEERS))
        for node in PEERS:
            found = _endorsements(net, node, ours)
            assert len(found) == 2 * len(ours) and {c for c, _ in found} == {VALID}
            assert not any(e.HasField("batch_proof") for _, e in found)
            assert len({e.signature for _, e in found}) == len(found)  # one each
    finally:
        for c in clients:
            await c.close()
