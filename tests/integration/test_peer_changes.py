"""One peer at a time, on a running channel (docs/governance.md): Org1 issues a new peer from
its own CA (`dltmw org add-node`), starts it, puts it into the channel by a config update
(`channel update --add-peer`) and joins it — it catches up and serves queries; it is taken out
again (gateways stop asking it); and a peer's renewed identity certificate replaces its old one
(`dltmw cert renew --identity`, `channel update --rotate-peer`, restart): its endorsements carry
the new identity and are accepted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.client.governance import current_config
from dltmw.core.identity import identity_bytes, reference_bytes
from dltmw.v1 import transaction_pb2

from .cli import dltmw
from .ledgers import blocks, endorsements, height, ledger_path

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CHANNEL = "trades"
ADMINS = ("admin.org1", "admin.org2")


def change(net: Path, tmp: Path, name: str, *options: str) -> None:
    """Build, sign by both admins and submit one config update; it must be VALID."""
    upd = str(tmp / f"{name}.update")
    dltmw("channel", "update", str(net), CHANNEL, *options, "-o", upd, "-c", "admin.org1")
    for admin in ADMINS:
        dltmw("channel", "update", str(net), CHANNEL, "--sign", upd, "-c", admin)
    said = dltmw("channel", "update", str(net), CHANNEL, "--submit", upd, "-c", "admin.org1")
    assert " VALID in block " in said, said


async def peers_in_config(net: Path) -> list[str]:
    return [p.node_id for p in (await current_config(net, "user1.org1", CHANNEL)).config.peers]


async def put(net: Path, key: str) -> str:
    async with await GatewayClient.connect(net, "user1.org1", "peer0.org1", pipelined=False) as c:
        done = await c.submit_transaction(CHANNEL, "bank", "open", key, "1")
    assert done.status.result == VALID
    return done.tx_id


async def test_a_new_peer_is_issued_added_taken_out_and_an_identity_rotated(
    network, tmp_path: Path
) -> None:
    net, sup = network(batch_ms=50)  # TWO_ORG: bank under AND(Org1.peer, Org2.peer)
    assert await peers_in_config(net) == ["peer0.org1", "peer0.org2"]
    await put(net, "k0")

    said = dltmw("org", "add-node", str(net), "peer1.org1", "--role", "peer", "--role",
                 "gateway", "--org", "Org1")  # fmt: skip
    assert "peer1.org1 (peer, gateway) written to" in said
    sup.start("peer1.org1")
    sup.wait_ready("peer1.org1")
    change(net, tmp_path, "in", "--add-peer", "peer1.org1")
    assert await peers_in_config(net) == ["peer0.org1", "peer0.org2", "peer1.org1"]
    dltmw("channel", "join", str(net), CHANNEL, "peer1.org1")
    mine, theirs = ledger_path(net, "peer1.org1"), ledger_path(net, "peer0.org1")
    deadline = time.monotonic() + 30
    while not mine.exists() or height(mine) < height(theirs):  # it catches up from block 0
        assert time.monotonic() < deadline, "peer1.org1 did not catch up"
        await asyncio.sleep(0.1)
    async with await GatewayClient.connect(net, "user1.org1", "peer1.org1") as c:
        assert (await c.evaluate(CHANNEL, "bank", "balance", "k0")).payload == b"1"

    change(net, tmp_path, "out", "--remove-peer", "peer1.org1")
    assert await peers_in_config(net) == ["peer0.org1", "peer0.org2"]
    await put(net, "k1")  # the policy is met without it

    home = net / "nodes" / "peer0.org2"
    old = identity_bytes("Org2", (home / "identity.pem").read_bytes())
    assert "renewed" in dltmw("cert", "renew", str(net), "peer0.org2", "--identity")
    new = identity_bytes("Org2", (home / "identity.pem").read_bytes())
    assert new != old
    change(net, tmp_path, "rotate", "--rotate-peer", "peer0.org2")
    [entry] = [
        p for p in (await current_config(net, "user1.org1", CHANNEL)).config.peers
        if p.node_id == "peer0.org2"
    ]  # fmt: skip
    assert entry.identity == new
    assert sup.stop("peer0.org2") == 0  # it signs with the renewed certificate from its restart
    sup.start("peer0.org2")
    sup.wait_ready("peer0.org2")
    tx_id = await put(net, "k2")
    # named by its reference to the renewed certificate (the channel takes references)
    assert endorsements(blocks(ledger_path(net, "peer0.org1")), tx_id)["Org2"] == reference_bytes(
        new
    )
