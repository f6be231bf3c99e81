"""A cross-channel DvP with one private leg on real processes (docs/cross-channel.md "A private
leg"): securities on `trading` in clear, cash on `cash` as private transactions among BrokerA
and BrokerB only (the Bank is a member of `cash` but no recipient). Claimed on both; refunded
after the deadline; forged disclosures refused with their reasons, nothing claimed; and a
canary: no file of a non-recipient (the Exchange's peer and orderer, the Bank's peer) holds
the private leg's accounts, the recipients' do (the scan's positive control)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.crosschain import fetch_commit_proof
from dltmw.client.privacy import PrivacyClient
from dltmw.client.private_transfer import (
    PrivateLeg,
    private_step,
    private_terms,
    run_private_transfer,
)
from dltmw.client.transfer import Leg
from dltmw.core.block import block_hash
from dltmw.core.private_leg import (
    abort_disclosure,
    details_bytes,
    disclosure_bytes,
    lock_disclosure,
)
from dltmw.v1 import block_pb2, common_pb2, crosschain_pb2, private_leg_pb2, transaction_pb2

pytestmark = pytest.mark.integration
TOPOLOGY = Path(__file__).resolve().parents[2] / "services" / "networks" / "capital-market.toml"
TRADING = ["peer.exchange", "peer.brokera"]
CASH = ["peer.brokera", "peer.brokerb"]  # the recipients' peers attest the private lock
RECIPIENTS = ["BrokerA", "BrokerB"]
CANARY = os.urandom(8).hex()
BUYER, SELLER = f"B-cash-{CANARY}", f"A-cash-{CANARY}"
FAR = 2_000_000_000


def _private_balances(net: Path, node: str) -> dict[str, int]:
    """The private `xfer` balances a node's private store holds (read-only, WAL allows it)."""
    path = net / "nodes" / node / "data" / "cash.private.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, value FROM pstate WHERE namespace = 'xfer'").fetchall()
    finally:
        db.close()
    return {k[2:]: int(v) for k, v in rows if k.startswith("a/")}


def _files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*")) if p.is_file()]


def _holds_canary(root: Path) -> list[str]:
    needles = (CANARY.encode(), CANARY.encode().hex().encode())
    return [str(p) for p in _files(root) if any(n in p.read_bytes() for n in needles)]


async def test_a_dvp_with_a_private_leg(network) -> None:
    net, _ = network(TOPOLOGY.read_text())
    genesis_raw = (net / "channels" / "trading.block").read_bytes()
    trading_hash = block_hash(block_pb2.Block.FromString(genesis_raw))
    cash_genesis = (net / "channels" / "cash.block").read_bytes()
    admin = await GatewayClient.connect(net, "admin.brokera", "peer.brokera")
    conns = {n: await GatewayClient.connect(net, "trader.brokera", n) for n in {*TRADING, *CASH}}
    trader = conns["peer.brokera"]
    privacy = PrivacyClient(trader)
    try:
        await admin.submit_transaction("trading", "xfer", "trust", cash_genesis)
        await trader.submit_transaction("trading", "xfer", "open", "A-sec", "1000")
        await trader.submit_transaction("trading", "xfer", "open", "B-sec", "0")
        for account, amount in ((BUYER, "1000"), (SELLER, "0")):
            opened = await privacy.submit_private(
                "cash", ["BrokerB"], "xfer", "open", account, amount
            )
            assert opened.status.result == transaction_pb2.TX_VALIDATION_CODE_VALID
        public = Leg("trading", trader, [(n, conns[n].channel) for n in TRADING])
        cash_peers = [(n, conns[n].channel) for n in CASH]

        def leg(salt: str, amount: int = 500) -> tuple[PrivateLeg, bytes]:
            details = details_bytes(BUYER, SELLER, amount, f"{salt}-{CANARY}")
            return PrivateLeg("cash", privacy, ["BrokerB"], cash_peers, details), details

        def terms(salt: str, deadline: int, amount: int = 500) -> bytes:
            details = leg(salt, amount)[1]
            public_leg = ("trading", "A-sec", "B-sec", 10)
            return private_terms(
                public_leg, "cash", details, RECIPIENTS, trading_hash, deadline, salt
            )

        async def public_balances() -> tuple[int, int]:
            a = await trader.evaluate("trading", "xfer", "balance", "A-sec")
            b = await trader.evaluate("trading", "xfer", "balance", "B-sec")
            return int(a.payload), int(b.payload)

        # 1. claimed on both
        t1 = terms("dvp-1", FAR)
        done = await run_private_transfer(public, leg("dvp-1")[0], t1, genesis_raw, FAR)
        assert done.outcome == "claimed"
        assert await public_balances() == (990, 10)
        for node in ("peer.brokera", "peer.brokerb"):  # every recipient holds the same result
            assert _private_balances(net, node) == {BUYER: 500, SELLER: 500}
        assert _private_balances(net, "peer.bank") == {}  # a non-recipient member: nothing

        # 2. refunded: the public side locked, the private side never did; after the deadline
        # the private leg is aborted privately and its abort proof refunds the public side
        deadline = int(time.time()) + 2
        t2 = terms("refund-1", deadline)
        await trader.submit_transaction("trading", "xfer", "lock", t2)
        assert await public_balances() == (980, 10)
        await asyncio.sleep(max(0.0, deadline + 1.5 - time.time()))  # the private side missed it
        refunded = await run_private_transfer(
            public, leg("refund-1")[0], t2, genesis_raw, deadline, wait_max_s=10
        )
        assert refunded.outcome == "refunded"
        assert await public_balances() == (990, 10)

        # 3. forged disclosures: nothing claimed
        t3 = terms("forged-1", FAR)
        leg3 = leg("forged-1")[0]
        assert await private_step(leg3, "pescrow", t3, "cash", leg3.details)
        plock = await private_step(leg3, "plock", t3, "cash")
        assert plock is not None
        await trader.submit_transaction("trading", "xfer", "lock", t3)
        t3_id = hashlib.sha256(t3).hexdigest()
        proof = await fetch_commit_proof(cash_peers, "cash", plock)
        lie = disclosure_bytes(abort_disclosure("cash", t3_id))  # bytes not matching the hash
        other = await fetch_commit_proof(cash_peers, "cash", done.tx_ids[1])  # t1's plock
        forgeries = {
            "PRIVATE_DISCLOSURE_MISMATCH": (proof, lie),
            "PROOF_MISMATCH": (other, disclosure_bytes(lock_disclosure("cash", done.transfer_id))),
            "PRIVATE_LEG_MALFORMED": (proof, b"not json"),
        }
        stripped = crosschain_pb2.CommitProof()  # the lock with one agreement removed
        stripped.CopyFrom(proof)
        envelope = common_pb2.Envelope.FromString(stripped.envelope)
        payload = common_pb2.Payload.FromString(envelope.payload)
        ptx = transaction_pb2.PrivateTransaction.FromString(payload.data)
        assert len(ptx.agreements) == 2
        del ptx.agreements[1]
        payload.data = ptx.SerializeToString()
        envelope.payload = payload.SerializeToString()
        stripped.envelope = envelope.SerializeToString()
        right = disclosure_bytes(lock_disclosure("cash", t3_id))
        forgeries["PROOF_INCLUSION_INVALID"] = (stripped, right)
        for reason, (commit_proof, disclosure) in forgeries.items():
            forged = private_leg_pb2.PrivateLegProof(
                commit_proof=commit_proof, disclosure=disclosure
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await trader.submit_transaction(
                    "trading", "xfer", "claim", t3, forged.SerializeToString()
                )
            details = err.value.details() or ""
            assert details.startswith(f"CONTRACT_FAILED: {reason}:"), (reason, details)
        assert (await trader.evaluate("trading", "xfer", "status", t3_id)).payload == b"locked"
        assert await public_balances() == (980, 10)
        # the genuine one claims (the forgeries above failed for what they forged)
        genuine = private_leg_pb2.PrivateLegProof(
            commit_proof=proof, disclosure=disclosure_bytes(lock_disclosure("cash", t3_id))
        )
        await trader.submit_transaction("trading", "xfer", "claim", t3, genuine.SerializeToString())
        assert await public_balances() == (980, 20)
    finally:
        await privacy.close()
        for c in (*conns.values(), admin):
            await c.close()

    # 4. canary: the private leg's accounts are in no non-recipient's files
    nodes = net / "nodes"
    assert _holds_canary(nodes / "peer.brokera")  # positive control: the scan finds it
    assert _holds_canary(nodes / "peer.brokerb")
    for outsider in ("peer.exchange", "orderer.exchange", "peer.bank"):
        assert _holds_canary(nodes / outsider) == [], outsider


async def test_a_private_leg_on_a_channel_without_the_agreement_policy_proves_nothing(
    network,
) -> None:
    """`cash` with `private_agreement = "none"`: its private transactions commit VALID with no
    agreement, so nothing says the disclosed outcome is what the recipients hold: refused."""
    topology = TOPOLOGY.read_text().replace(
        'id = "cash"\n', 'id = "cash"\nprivate_agreement = "none"\n', 1
    )
    assert 'private_agreement = "none"' in topology
    net, _ = network(topology)
    genesis_raw = (net / "channels" / "trading.block").read_bytes()
    trading_hash = block_hash(block_pb2.Block.FromString(genesis_raw))
    admin = await GatewayClient.connect(net, "admin.brokera", "peer.brokera")
    conns = {n: await GatewayClient.connect(net, "trader.brokera", n) for n in {*TRADING, *CASH}}
    trader = conns["peer.brokera"]
    privacy = PrivacyClient(trader)
    try:
        cash_genesis = (net / "channels" / "cash.block").read_bytes()
        await admin.submit_transaction("trading", "xfer", "trust", cash_genesis)
        await trader.submit_transaction("trading", "xfer", "open", "A-sec", "1000")
        await trader.submit_transaction("trading", "xfer", "open", "B-sec", "0")
        for account, amount in ((BUYER, "1000"), (SELLER, "0")):
            await privacy.submit_private("cash", ["BrokerB"], "xfer", "open", account, amount)
        details = details_bytes(BUYER, SELLER, 500, f"np-{CANARY}")
        cash_peers = [(n, conns[n].channel) for n in CASH]
        leg = PrivateLeg("cash", privacy, ["BrokerB"], cash_peers, details)
        public_leg = ("trading", "A-sec", "B-sec", 10)
        t = private_terms(public_leg, "cash", details, RECIPIENTS, trading_hash, FAR, "np")
        assert await private_step(leg, "pescrow", t, "cash", details)
        plock = await private_step(leg, "plock", t, "cash")
        assert plock is not None  # executed by both recipients, with no agreement
        await trader.submit_transaction("trading", "xfer", "lock", t)
        proof = private_leg_pb2.PrivateLegProof(
            commit_proof=await fetch_commit_proof(cash_peers, "cash", plock),
            disclosure=disclosure_bytes(lock_disclosure("cash", hashlib.sha256(t).hexdigest())),
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await trader.submit_transaction(
                "trading", "xfer", "claim", t, proof.SerializeToString()
            )
        details_text = err.value.details() or ""
        assert details_text.startswith("CONTRACT_FAILED: PRIVATE_LEG_AGREEMENT_INVALID:"), (
            details_text
        )
        assert "require" in details_text
        tid = hashlib.sha256(t).hexdigest()
        assert (await trader.evaluate("trading", "xfer", "status", tid)).payload == b"locked"
    finally:
        await privacy.close()
        for c in (*conns.values(), admin):
            await c.close()
