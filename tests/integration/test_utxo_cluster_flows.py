"""Vault flows notarised by a PBFT-lite notary CLUSTER (4 members, f = 1) between real vault
nodes: an issuance and a DvP between two brokers with a regulator observing, each carrying f+1
member signatures that every receiver checks against the network map before recording."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from dltmw.client.utxo import PartyFiles, VaultClient, holdings_of
from dltmw.core.identity import SigningIdentity
from dltmw.core.notary_batch import signed_message
from dltmw.core.utxo.verify import read_signed
from dltmw.net.netmap import NetworkMap
from dltmw.ops.supervisor import Supervisor
from dltmw.rpc.status import reason_of
from dltmw.v1 import flow_service_pb2, flow_service_pb2_grpc, utxo_pb2

pytestmark = pytest.mark.integration
Start = Callable[..., tuple[Path, Supervisor]]

CLUSTER = "notaries"
MEMBERS = [f"notary{i}" for i in range(4)]
VAULTS = {"ops.bank": "bank", "trader.brokera": "brokera", "trader.brokerb": "brokerb"}
VAULTS["ops.regulator"] = "regulator"
ORGS = {"bank": "Bank", "brokera": "BrokerA", "brokerb": "BrokerB", "regulator": "Regulator"}
NET = (
    'name = "utxo-cluster-it"\n'
    + "".join(f'[[orgs]]\nid = "{o}"\n' for o in [*ORGS.values(), "N0", "N1", "N2", "N3"])
    + "".join(
        f'[[nodes]]\nid = "{m}"\norg = "N{i}"\nroles = ["notary"]\n' for i, m in enumerate(MEMBERS)
    )
    + "".join(f'[[nodes]]\nid = "{n}"\norg = "{o}"\nroles = ["vault"]\n' for n, o in ORGS.items())
    + "".join(f'[[clients]]\nid = "{c}"\norg = "{ORGS[n]}"\n' for c, n in VAULTS.items())
    + f'[[notary_clusters]]\nid = "{CLUSTER}"\nmembers = {MEMBERS!r}\n'.replace("'", '"')
)
ISIN = "JP3000000001"


def member_signers(raw: bytes, net: Path) -> set[str]:
    """Cluster members whose signature a recorded transaction carries (verified again here)."""
    netmap = NetworkMap.load(net / "network-map.toml")
    stx = read_signed(raw)
    assert stx.wire.notary == CLUSTER and stx.notary_signature is None
    out = set()
    assert len(stx.cluster_proofs) == len(stx.cluster_signatures)  # batch-signed
    for (signer, signature), proof in zip(stx.cluster_signatures, stx.cluster_proofs, strict=True):
        data = signed_message(stx.wire.tx_id, proof)
        netmap.membership().verify(signer, data, signature, datetime.now(UTC))
        node = netmap.node_of(signer)
        assert node in MEMBERS
        out.add(node)
    return out


async def record_as_bank(net: Path, signed_transaction: bytes) -> None:
    """RecordTransaction at brokerb, signed by the bank NODE's identity (over the bank
    client's mTLS channel: same organisation)."""
    node = net / "nodes" / "bank"
    signer = SigningIdentity.from_pem(
        "Bank", (node / "identity.pem").read_bytes(), (node / "identity.key").read_bytes()
    )
    msg = flow_service_pb2.FlowMessage(
        requester=signer.identity_bytes, signed_transaction=signed_transaction, observer=True
    )
    msg.timestamp.GetCurrentTime()
    raw = msg.SerializeToString()
    channel = await PartyFiles.load(net, "ops.bank").channel_to("brokerb")
    try:
        await flow_service_pb2_grpc.FlowServiceStub(channel).RecordTransaction(
            flow_service_pb2.RecordTransactionRequest(message=raw, signature=signer.sign(raw)),
            timeout=30,
        )
    finally:
        await channel.close(None)


async def only_f_signatures_are_refused(net: Path, signed_transaction: bytes) -> None:
    """A receiver refuses a transaction that carries f (= 1) member signatures, or one member's
    twice, with PERMISSION_DENIED / BAD_SIGNATURE; the intact one is accepted (idempotent)."""
    full = utxo_pb2.SignedUtxoTransaction.FromString(signed_transaction)
    first, proof = full.notary_signatures[0], full.notary_batch_proofs[0]
    for kept in (1, 2):  # its first signature alone, or twice (with its proof each time)
        cut = utxo_pb2.SignedUtxoTransaction()
        cut.CopyFrom(full)
        del cut.notary_signatures[:]
        del cut.notary_batch_proofs[:]
        cut.notary_signatures.extend([first] * kept)
        cut.notary_batch_proofs.extend([proof] * kept)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await record_as_bank(net, cut.SerializeToString())
        assert (err.value.code(), reason_of(err.value)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "BAD_SIGNATURE",
        )
        assert "1 valid notary cluster member signatures, 2 needed" in str(err.value.details())
    await record_as_bank(net, signed_transaction)


async def test_issue_and_dvp_notarised_by_a_cluster(network: Start) -> None:
    net, sup = network(NET)
    vaults = {c: await VaultClient.connect(PartyFiles.load(net, c), n) for c, n in VAULTS.items()}
    try:
        bank, a, b = vaults["ops.bank"], vaults["trader.brokera"], vaults["trader.brokerb"]
        ident = bank.identity_of
        # no single notary in this network: the default choice is refused, naming the reason
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bank.issue("cash", ident("brokerb"), "JPY", 1_000_000)
        assert reason_of(err.value) == "ROLE_NOT_HOSTED"
        cash = await bank.issue("cash", ident("brokerb"), "JPY", 1_000_000, notary=CLUSTER)
        assert len(member_signers(cash.signed_transaction, net)) >= 2
        await bank.issue("security", ident("brokera"), ISIN, 100, notary=CLUSTER)
        terms = utxo_pb2.DvpTerms(
            buyer=ident("brokerb"),
            seller=ident("brokera"),
            isin=ISIN,
            quantity=40,
            currency="JPY",
            amount=400_000,
        )
        dvp = await a.dvp(terms, observers=["regulator"], notary=CLUSTER)
        assert len(member_signers(dvp.signed_transaction, net)) >= 2
        # both counterparties verified and recorded the DvP, the regulator observed it
        assert holdings_of(await a.query()) == {("security", ISIN): 60, ("cash", "JPY"): 400_000}
        assert holdings_of(await b.query()) == {("security", ISIN): 40, ("cash", "JPY"): 600_000}
        regulator = vaults["ops.regulator"]
        assert holdings_of(await regulator.query(owner=ident("brokerb"))) == {
            ("security", ISIN): 40,
            ("cash", "JPY"): 600_000,
        }
        spent = await a.query(contract="security", include_consumed=True)
        assert sorted(s.consumed_by for s in spent) == ["", dvp.tx_id]
        # a notary name that is neither a notary nor a cluster is refused before anything moves
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await a.dvp(terms, notary="notary0x")
        assert (err.value.code(), reason_of(err.value)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        )
        assert holdings_of(await b.query()) == {("security", ISIN): 40, ("cash", "JPY"): 600_000}
        await only_f_signatures_are_refused(net, dvp.signed_transaction)
        # one member (f = 1) down: flows still gather f+1 signatures from the others (each flow
        # starts at a random member, so the down one is asked first in about half of them)
        assert sup.stop("notary3") == 0
        for k in range(4):
            more = await bank.issue("cash", ident("brokerb"), "JPY", 1 + k, notary=CLUSTER)
            assert len(member_signers(more.signed_transaction, net) - {"notary3"}) >= 2
        owned = await b.query(contract="cash", owner=ident("brokerb"))
        assert holdings_of(owned) == {("cash", "JPY"): 600_010}
    finally:
        for v in vaults.values():
            await v.close()
        codes = {n: sup.stop(n) for n in list(sup.nodes)}
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"
