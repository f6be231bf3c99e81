"""The explorer names an identity by reference through the config in force at its block, not
the current one (`runtime/explorer/epochs.py`): after peer0.org2's certificate is renewed and
rotated into the channel config (`channel update --rotate-peer`), the current config no
longer lists the certificate its older endorsements name by reference, yet the explorer of
a running peer still shows those endorsements as peer0.org2's — and the newer ones, naming
the renewed certificate, too, whichever is asked first and after a later config block.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dltmw.core.identity import identity_bytes, reference_bytes

from .cli import dltmw
from .ledgers import blocks, endorsements, ledger_path
from .operations_http import get
from .test_peer_changes import change, put

pytestmark = pytest.mark.integration
CHANNEL = "trades"


async def _api(address: str, path: str) -> dict:  # type: ignore[type-arg]
    status, body = await asyncio.to_thread(get, address, path)
    assert status == 200, (path, status, body)
    return dict(json.loads(body))


def _endorsers(tx: dict) -> list[dict]:  # type: ignore[type-arg]
    return sorted(tx["endorsers"], key=lambda e: e["org"])


async def test_an_older_block_still_names_a_peer_whose_certificate_was_rotated(
    network, tmp_path: Path
) -> None:
    net, sup = network(batch_ms=50)  # TWO_ORG; "trades" takes references (dltmw init's default)
    home = net / "nodes" / "peer0.org2"
    old = identity_bytes("Org2", (home / "identity.pem").read_bytes())
    before = await put(net, "k0")  # endorsed by peer0.org2's first certificate, by reference

    renewed = await asyncio.to_thread(dltmw, "cert", "renew", str(net), "peer0.org2", "--identity")
    assert "renewed" in renewed
    await asyncio.to_thread(change, net, tmp_path, "rotate", "--rotate-peer", "peer0.org2")
    assert sup.stop("peer0.org2") == 0  # it signs with the renewed certificate from its restart
    sup.start("peer0.org2")
    sup.wait_ready("peer0.org2")
    after = await put(net, "k1")
    new = identity_bytes("Org2", (home / "identity.pem").read_bytes())
    assert new != old
    # one more config block after both: neither transaction's block is governed by the
    # current config, so each is named through the configs replayed from the chain
    await asyncio.to_thread(change, net, tmp_path, "timeout", "--timeout-ms", "60")

    ops = sup.operations_address("peer0.org1")
    assert ops is not None
    # the newer first: its replay passes the rotation, the older one then bisects to before it
    shown = {t: await _api(ops, f"/api/channels/{CHANNEL}/txs/{t}") for t in (after, before)}
    assert shown[before]["block_number"] < shown[after]["block_number"]
    for tx_id, cert in ((before, old), (after, new)):
        org2 = _endorsers(shown[tx_id])[1]
        # red with the current config resolving every block (the older endorsement's reference
        # names no peer any more: {"org": "Org2", "name": "", "certificate_ref": ...}), and
        # with the newest config replayed so far (the older one after the newer one)
        assert org2 == {"org": "Org2", "name": "peer0.org2", "by_reference": True}, tx_id
        stored = endorsements(blocks(ledger_path(net, "peer0.org1")), tx_id)["Org2"]
        assert stored == reference_bytes(cert)  # the block names it by reference
    # the block page of the older transaction: its signers and endorsers are named alike
    block = await _api(ops, f"/api/channels/{CHANNEL}/blocks/{shown[before]['block_number']}")
    [tx] = [t for t in block["txs"] if t["tx_id"] == before]
    assert _endorsers(tx)[1]["name"] == "peer0.org2"
    assert [(s["name"], s.get("by_reference")) for s in block["orderer_signatures"]] == [
        ("orderer0", True)
    ]
