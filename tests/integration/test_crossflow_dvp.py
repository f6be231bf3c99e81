"""A cross-flow DvP on real processes (issue 19 item 3): securities on the capital-market
topology's `trading` channel, cash as a state notarised by the (validating) notary; the
channel trusts the notary by a config update made with `dltmw channel update --trust-notary`.
One DvP through `run_crossflow` (deliver, then the escrow paid to the seller with the record's
commit proof) and a second run that finds it paid; one resumed after a "crash" following the
delivery; one whose delivery cannot commit, aborted after its deadline and refunded to the
buyer; and a forged notarisation (signed by someone the channel does not trust) that delivers
nothing."""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.crossflow import (
    Escrow,
    crossflow_terms,
    escrow_output,
    notarise,
    open_escrow,
    run_crossflow,
)
from dltmw.client.transfer import Leg
from dltmw.client.utxo import NotaryClient, PartyFiles
from dltmw.core.block import block_hash
from dltmw.core.utxo.build import TxSpec, build_transaction, cash_output, sign_transaction
from dltmw.core.utxo.contracts import cash_state
from dltmw.core.utxo.model import Command, read_transaction
from dltmw.core.utxo.verify import read_signed
from dltmw.v1 import block_pb2, utxo_pb2

from .cli import dltmw
from .test_transfer_dvp import TOPOLOGY

pytestmark = pytest.mark.integration
NOTARY = "notary.exchange"
PEERS = ["peer.exchange", "peer.brokera"]
DEADLINE_S = 2_000_000_000


async def _issue(net: Path, notary_id: str, to: bytes, amount: int) -> bytes:
    """The Bank issues `amount` USD to `to`, notarised (a validating notary)."""
    bank = PartyFiles.load(net, "treasury.bank")
    issuer = bank.signer.identity_bytes
    raw = build_transaction(
        TxSpec(
            notary=notary_id,
            nonce=secrets.token_bytes(32),
            outputs=[cash_output(issuer, to, "USD", amount)],
            commands=[Command("cash", "issue", (issuer,))],
        )
    )
    stx = sign_transaction(raw, read_transaction(raw).tx_id, [bank.signer]).SerializeToString()
    async with await NotaryClient.connect(bank, notary_id) as notary:
        return await notarise(notary, bank.signer, stx, [])


def _paid(payout: bytes) -> list[tuple[bytes, int]]:
    """(owner, amount) of each output of a notarised payout."""
    return [(cash_state(o).owner, cash_state(o).amount) for o in read_signed(payout).wire.outputs]


async def _securities(c: GatewayClient) -> tuple[int, int]:
    out = []
    for account in ("B-sec", "A-sec"):
        out.append(int((await c.evaluate("trading", "xfer", "balance", account)).payload or b"0"))
    return out[0], out[1]


async def test_a_cross_flow_dvp_settles_and_a_forged_notarisation_delivers_nothing(
    network, tmp_path: Path
) -> None:
    topology = TOPOLOGY.read_text().replace(
        'roles = ["notary"]', 'roles = ["notary"]\nvalidating = true', 1
    )
    net, _ = network(topology)
    update = tmp_path / "trust-notary.bin"
    args = ["--client", "admin.brokera"]
    dltmw("channel", "update", str(net), "trading", *args, "--out", str(update),
          "--trust-notary", NOTARY)  # fmt: skip
    for admin in ("admin.brokera", "admin.exchange"):
        dltmw("channel", "update", str(net), "trading", "--client", admin, "--sign", str(update))
    assert "VALID" in dltmw(
        "channel", "update", str(net), "trading", *args, "--submit", str(update)
    )

    buyer, seller = PartyFiles.load(net, "trader.brokera"), PartyFiles.load(net, "trader.brokerb")
    admin = await GatewayClient.connect(net, "admin.brokera", "peer.brokera")
    conns = {n: await GatewayClient.connect(net, "trader.brokerb", n) for n in PEERS}
    notary = await NotaryClient.connect(buyer, NOTARY)
    sellers_notary = await NotaryClient.connect(seller, NOTARY)
    try:
        await admin.submit_transaction("trading", "xfer", "open", "B-sec", "1000")  # seller's
        await admin.submit_transaction("trading", "xfer", "open", "A-sec", "0")  # buyer's
        funding = await _issue(net, NOTARY, buyer.signer.identity_bytes, 1000)
        genesis = (net / "channels" / "trading.block").read_bytes()
        root = block_hash(block_pb2.Block.FromString(genesis))
        cash = Escrow(
            buyer.signer.identity_bytes,
            seller.signer.identity_bytes,
            PartyFiles.load(net, "treasury.bank").signer.identity_bytes,
            "USD",
            500,
        )
        terms = crossflow_terms("trading", ("B-sec", "A-sec", 10), cash, DEADLINE_S, "cf-1")
        held = escrow_output(terms, cash, "trading", root, DEADLINE_S)
        escrow_tx = await open_escrow(
            notary, buyer.signer, funding, 0, held, secrets.token_bytes(32)
        )

        # Forged: the same escrow transaction "notarised" by the seller's own key.
        forged = utxo_pb2.SignedUtxoTransaction.FromString(escrow_tx)
        tx_id = read_signed(escrow_tx).wire.tx_id
        forged.ClearField("notary_batch_proof")
        forged.notary_signature.signer = seller.signer.identity_bytes
        forged.notary_signature.signature = seller.signer.sign(tx_id.encode())
        trader = conns["peer.brokera"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await trader.submit_transaction(
                "trading", "xfer", "deliver", terms, forged.SerializeToString()
            )
        assert "NOTARY_NOT_TRUSTED" in (err.value.details() or ""), err.value.details()
        tid = hashlib.sha256(terms).hexdigest()
        assert (await trader.evaluate("trading", "xfer", "status", tid)).payload == b"absent"
        assert await _securities(trader) == (1000, 0)

        leg = Leg("trading", trader, [(n, conns[n].channel) for n in PEERS])
        done = await run_crossflow(
            leg, sellers_notary, seller.signer, terms, escrow_tx, genesis, DEADLINE_S
        )
        assert done.outcome == "claimed" and done.payout
        assert await _securities(trader) == (990, 10)
        assert _paid(done.payout) == [(seller.signer.identity_bytes, 500)]
        again = await run_crossflow(
            leg, notary, buyer.signer, terms, escrow_tx, genesis, DEADLINE_S
        )
        assert (again.outcome, again.payout) == ("claimed", b"")  # paid once, found done
        assert await _securities(trader) == (990, 10)

        # The driver "crashed" after the delivery: a run by another party finds the record
        # claimed and pays the escrow out.
        cash2 = Escrow(cash.payer, cash.payee, cash.issuer, "USD", 200)
        terms2 = crossflow_terms("trading", ("B-sec", "A-sec", 10), cash2, DEADLINE_S, "cf-2")
        held2 = escrow_output(terms2, cash2, "trading", root, DEADLINE_S)
        escrow2 = await open_escrow(
            notary, buyer.signer, escrow_tx, 1, held2, secrets.token_bytes(32)
        )
        await trader.submit_transaction("trading", "xfer", "deliver", terms2, escrow2)
        resumed = await run_crossflow(
            leg, notary, buyer.signer, terms2, escrow2, genesis, DEADLINE_S
        )
        assert resumed.outcome == "claimed" and _paid(resumed.payout) == [(cash.payee, 200)]
        assert await _securities(trader) == (980, 20)

        # Delivery impossible (the seller holds 980, not 10**6): after the deadline the run
        # aborts and the escrow pays the buyer back.
        deadline = int(time.time()) + 3
        cash3 = Escrow(cash.payer, cash.payee, cash.issuer, "USD", 100)
        terms3 = crossflow_terms("trading", ("B-sec", "A-sec", 10**6), cash3, deadline, "cf-3")
        held3 = escrow_output(terms3, cash3, "trading", root, deadline)
        escrow3 = await open_escrow(
            notary, buyer.signer, escrow2, 1, held3, secrets.token_bytes(32)
        )
        refunded = await run_crossflow(
            leg, notary, buyer.signer, terms3, escrow3, genesis, deadline, wait_max_s=20
        )
        assert refunded.outcome == "aborted" and _paid(refunded.payout) == [(cash.payer, 100)]
        assert await _securities(trader) == (980, 20)
    finally:
        await notary.close()
        await sellers_notary.close()
        await admin.close()
        for c in conns.values():
            await c.close()
