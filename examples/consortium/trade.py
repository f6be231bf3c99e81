"""A trade between two organisations of a consortium, each run on its own host with only its
own directory (made by `dltmw org init`, see docs/deploy.md):

    python trade.py seller /srv/org1 NOTE   # on Org1's host: prints the trade as JSON
    python trade.py buyer /srv/org2 HASH    # on Org2's host: what Org2 holds and received

The seller (Org1's vault `peer0.org1`) issues cash to the buyer's vault (`peer0.org2`) and a
security to itself, then sells the buyer 40 units for 400 JPY in one notarised DvP: both legs
in one transaction, signed by both vaults and notarised by the channel's notary — or neither
moves. Then it sends the buyer a private trade note (Tessera-style: the payload travels only
between the two organisations' privacy managers; the channel orders its hash) and prints the
payload hash the buyer needs. The buyer prints its holdings and the note as its own node
decrypted it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from dltmw.client.gateway import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.utxo import PartyFiles, VaultClient, holdings_of
from dltmw.v1 import private_payload_pb2, utxo_pb2

CHANNEL = "trades"
ISIN = "JP3000000001"
SELLER, BUYER = ("peer0.org1", "user1.org1"), ("peer0.org2", "user1.org2")


async def holdings(vault: VaultClient) -> list[list[Any]]:
    return sorted([*key, amount] for key, amount in holdings_of(await vault.query()).items())


async def seller(org_dir: Path, note: str) -> dict[str, Any]:
    node, client = SELLER
    async with await VaultClient.connect(PartyFiles.load(org_dir, client), node) as vault:
        me, buyer = vault.identity_of(node), vault.identity_of(BUYER[0])
        await vault.issue("cash", buyer, "JPY", 500)
        await vault.issue("security", me, ISIN, 100)
        terms = utxo_pb2.DvpTerms(
            buyer=buyer, seller=me, isin=ISIN, quantity=40, currency="JPY", amount=400
        )
        dvp = await vault.dvp(terms)
        held = await holdings(vault)
    async with await GatewayClient.connect(org_dir, client) as gateway:
        sent = await PrivacyClient(gateway).submit_private(
            CHANNEL, ["Org2"], "kv", "put", "trade-note", note
        )
    return {
        "dvp_tx_id": dvp.tx_id,
        "holdings": held,
        "private_tx_id": sent.tx_id,
        "private_code": int(sent.status.result),
        "payload_hash": sent.payload_hash.hex(),
    }


async def buyer(org_dir: Path, payload_hash: str) -> dict[str, Any]:
    node, client = BUYER
    async with await VaultClient.connect(PartyFiles.load(org_dir, client), node) as vault:
        held = await holdings(vault)
    async with await GatewayClient.connect(org_dir, client) as gateway:
        raw = await PrivacyClient(gateway).receive(CHANNEL, bytes.fromhex(payload_hash))
    call = private_payload_pb2.PrivateInvocation.FromString(raw)
    return {
        "holdings": held,
        "received": [call.contract, call.function, *(a.decode() for a in call.args)],
    }


if __name__ == "__main__":
    side = {"seller": seller, "buyer": buyer}[sys.argv[1]]
    done = asyncio.run(asyncio.wait_for(side(Path(sys.argv[2]), sys.argv[3]), 150))
    print(json.dumps(done), flush=True)
