"""A cross-channel DvP between two brokers on the capital-market topology (issue 19): securities
on `trading`, cash on `cash`, no node in both. One DvP through the SDK call, one through
`dltmw transfer`, and a forged proof that claims nothing."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.crosschain import fetch_commit_proof
from dltmw.client.files import ClientFiles
from dltmw.client.transfer import Leg, dvp_terms, run_transfer
from dltmw.core.block import header_block_hash
from dltmw.v1 import crosschain_pb2

from .cli import dltmw

pytestmark = pytest.mark.integration
TOPOLOGY = Path(__file__).resolve().parents[2] / "services" / "networks" / "capital-market.toml"
PEERS = {"trading": ["peer.exchange", "peer.brokera"], "cash": ["peer.bank", "peer.brokerb"]}
LEGS = {"trading": ("A-sec", "B-sec", 10), "cash": ("B-cash", "A-cash", 500)}


async def _setup(net: Path) -> None:
    """Each channel trusts the other's block 0 (an admin, once) and opens the accounts."""
    genesis = {c: (net / "channels" / f"{c}.block").read_bytes() for c in PEERS}
    admin = await GatewayClient.connect(net, "admin.brokera", "peer.brokera")
    try:
        for here, other in (("trading", "cash"), ("cash", "trading")):
            await admin.submit_transaction(here, "xfer", "trust", genesis[other])
        for channel, (src, dst, _) in LEGS.items():
            await admin.submit_transaction(channel, "xfer", "open", src, "1000")
            await admin.submit_transaction(channel, "xfer", "open", dst, "0")
    finally:
        await admin.close()


def _forgeries(
    net: Path,
    full: crosschain_pb2.CommitProof,
    own: crosschain_pb2.CommitProof,
    other: crosschain_pb2.CommitProof,
) -> dict[str, bytes]:
    """Issue 19's forged proofs, each from `full` (cash's genuine lock proof) with one thing
    broken, or a genuine proof of something else: reason -> proof bytes."""
    signer = ClientFiles.load(net, "trader.brokera").signer  # no orderer of cash
    wrong_signer = crosschain_pb2.CommitProof()
    wrong_signer.CopyFrom(full)
    wrong_signer.orderer_signatures[0].signer = signer.identity_bytes
    wrong_signer.orderer_signatures[0].signature = signer.sign(header_block_hash(full.header))
    bent = crosschain_pb2.CommitProof()
    bent.CopyFrom(full)
    bent.tx_count += 1  # a made-up sibling: the path no longer leads to tx_root
    bent.tx_index = bent.tx_count - 1
    bent.inclusion_path.append(b"\x01" * 32)
    return {
        "PROOF_BAD_ORDERER_SIGNATURE": wrong_signer.SerializeToString(),
        "PROOF_INCLUSION_INVALID": bent.SerializeToString(),
        "PROOF_WRONG_CHANNEL": own.SerializeToString(),  # trading's own lock, on trading
        "PROOF_MISMATCH": other.SerializeToString(),  # cash's lock of another transfer
    }


async def connect_legs(net: Path) -> tuple[dict[str, GatewayClient], list[Leg]]:
    """A trader's connection to every peer of both channels, and the two legs (trading, cash)
    submitting through peer.brokera (the caller closes the connections)."""
    conns = {
        n: await GatewayClient.connect(net, "trader.brokera", n)
        for ns in PEERS.values()
        for n in ns
    }
    trader = conns["peer.brokera"]
    return conns, [Leg(c, trader, [(n, conns[n].channel) for n in PEERS[c]]) for c in PEERS]


async def _balances(c: GatewayClient) -> dict[str, int]:
    out = {}
    for channel, (src, dst, _) in LEGS.items():
        for account in (src, dst):
            reply = await c.evaluate(channel, "xfer", "balance", account)
            out[account] = int(reply.payload or b"0")
    return out


async def test_dvp_across_channels_sdk_cli_and_a_forged_proof(network) -> None:
    net, _ = network(TOPOLOGY.read_text())
    await _setup(net)
    conns, legs = await connect_legs(net)
    trader = conns["peer.brokera"]
    try:
        terms = dvp_terms(LEGS, 2_000_000_000, "sdk-1")
        done = await run_transfer(legs[0], legs[1], terms, 2_000_000_000)
        assert done.outcome == "claimed"
        assert await _balances(trader) == {"A-sec": 990, "B-sec": 10, "B-cash": 500, "A-cash": 500}

        args = [f"--leg={c}:{s}:{d}:{a}" for c, (s, d, a) in LEGS.items()]
        args += [f"--peers={c}={','.join(ns)}" for c, ns in PEERS.items()]
        out = json.loads(dltmw("transfer", str(net), "--client", "trader.brokera", *args, "--json"))
        assert out["outcome"] == "claimed"
        assert await _balances(trader) == {"A-sec": 980, "B-sec": 20, "B-cash": 0, "A-cash": 1000}

        # The coordinator "crashed" after both locks: a new run finds the locks in the
        # records and claims both.
        resumed = dvp_terms({c: (d, s, 1) for c, (s, d, _) in LEGS.items()}, 2_000_000_000, "r")
        await trader.submit_transaction("trading", "xfer", "lock", resumed)
        await trader.submit_transaction("cash", "xfer", "lock", resumed)
        assert (await run_transfer(legs[0], legs[1], resumed, 2_000_000_000)).outcome == "claimed"
        # A lock that cannot commit (B-sec holds 19, not 10**6): abort after the deadline, refund.
        failing = {"trading": ("B-sec", "A-sec", 10**6), "cash": ("A-cash", "B-cash", 7)}
        deadline = int(time.time()) + 2
        refunded = await run_transfer(
            legs[0], legs[1], dvp_terms(failing, deadline, "fail-1"), deadline, wait_max_s=10
        )
        assert refunded.outcome == "refunded"
        assert await _balances(trader) == {"A-sec": 981, "B-sec": 19, "B-cash": 1, "A-cash": 999}

        # Forged: cash's lock proof with one attestation only, presented on trading.
        small = {c: (s, d, 1) for c, (d, s, _) in LEGS.items()}  # the other way round
        forged_terms = dvp_terms(small, 2_000_000_000, "forged-1")
        locked = await trader.submit_transaction("cash", "xfer", "lock", forged_terms)
        await trader.submit_transaction("trading", "xfer", "lock", forged_terms)
        proof = await fetch_commit_proof(legs[1].peers[:1], "cash", locked.tx_id)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await trader.submit_transaction(
                "trading", "xfer", "claim", forged_terms, proof.SerializeToString()
            )
        assert "PROOF_ATTESTATION_INVALID" in (err.value.details() or "")
        full = await fetch_commit_proof(legs[1].peers, "cash", locked.tx_id)
        own = await fetch_commit_proof(legs[0].peers, "trading", done.tx_ids[0])
        other = await fetch_commit_proof(legs[1].peers, "cash", done.tx_ids[1])
        for reason, forged in _forgeries(net, full, own, other).items():
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await trader.submit_transaction("trading", "xfer", "claim", forged_terms, forged)
            assert reason in (err.value.details() or ""), (reason, err.value.details())
        tid = hashlib.sha256(forged_terms).hexdigest()
        assert (await trader.evaluate("trading", "xfer", "status", tid)).payload == b"locked"
    finally:
        for c in conns.values():
            await c.close()
