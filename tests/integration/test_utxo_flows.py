"""Notarised UTXO flows between real vault nodes: issue, DvP between two brokers with a
regulator observing, vault queries, privacy (a bystander holds no byte of the transaction),
and atomicity (if either leg of a DvP is invalid, neither moves)."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from dltmw.client.utxo import NotaryClient, PartyFiles, VaultClient, holdings_of
from dltmw.core.identity import SigningIdentity
from dltmw.core.utxo.build import (
    TxSpec,
    build_transaction,
    cash_output,
    notarisation_payload,
    sign_request,
    sign_transaction,
)
from dltmw.core.utxo.model import Command, Output, Ref, WireTx, read_transaction
from dltmw.ops.supervisor import Supervisor
from dltmw.rpc.status import reason_of
from dltmw.v1 import flow_service_pb2, flow_service_pb2_grpc, utxo_pb2, vault_service_pb2

pytestmark = pytest.mark.integration
Start = Callable[..., tuple[Path, Supervisor]]

MARKET = """
name = "utxo-it"
[[orgs]]
id = "Bank"
[[orgs]]
id = "Exchange"
[[orgs]]
id = "BrokerA"
[[orgs]]
id = "BrokerB"
[[orgs]]
id = "Regulator"
[[orgs]]
id = "Bystander"
[[orgs]]
id = "NotaryOrg"
[[nodes]]
id = "notary0"
org = "NotaryOrg"
roles = ["notary"]
[[nodes]]
id = "bank"
org = "Bank"
roles = ["vault"]
[[nodes]]
id = "exchange"
org = "Exchange"
roles = ["vault"]
[[nodes]]
id = "brokera"
org = "BrokerA"
roles = ["vault"]
[[nodes]]
id = "brokerb"
org = "BrokerB"
roles = ["vault"]
[[nodes]]
id = "regulator"
org = "Regulator"
roles = ["vault"]
[[nodes]]
id = "bystander"
org = "Bystander"
roles = ["vault"]
[[clients]]
id = "ops.bank"
org = "Bank"
[[clients]]
id = "ops.exchange"
org = "Exchange"
[[clients]]
id = "trader.brokera"
org = "BrokerA"
[[clients]]
id = "trader.brokerb"
org = "BrokerB"
[[clients]]
id = "ops.regulator"
org = "Regulator"
[[clients]]
id = "ops.bystander"
org = "Bystander"
"""
ISIN = "JP3000000001"
UNAPPROVED = "ab" * 32  # a package hash no network map approves
NODE_OF = {
    "ops.bank": "bank",
    "ops.exchange": "exchange",
    "trader.brokera": "brokera",
    "trader.brokerb": "brokerb",
    "ops.regulator": "regulator",
    "ops.bystander": "bystander",
}


@dataclass
class Market:
    net: Path
    sup: Supervisor
    vaults: dict[str, VaultClient]
    cash_issue: vault_service_pb2.RunFlowResponse = field(
        default_factory=vault_service_pb2.RunFlowResponse
    )

    def id(self, node: str) -> bytes:
        return self.vaults["ops.bank"].identity_of(node)

    async def holdings(self, client: str) -> dict[tuple[str, str], int]:
        return holdings_of(await self.vaults[client].query())


async def open_market(network: Start, topology: str = MARKET) -> Market:
    net, sup = network(topology)
    vaults = {c: await VaultClient.connect(PartyFiles.load(net, c), n) for c, n in NODE_OF.items()}
    m = Market(net, sup, vaults)
    m.cash_issue = await m.vaults["ops.bank"].issue("cash", m.id("brokerb"), "JPY", 1_000_000)
    await m.vaults["ops.exchange"].issue("security", m.id("brokera"), ISIN, 100)
    return m


@pytest.fixture
async def market(network: Start) -> AsyncIterator[Market]:
    m = await open_market(network)
    yield m
    for v in m.vaults.values():
        await v.close()


def terms(m: Market, quantity: int, amount: int) -> utxo_pb2.DvpTerms:
    return utxo_pb2.DvpTerms(
        buyer=m.id("brokerb"),
        seller=m.id("brokera"),
        isin=ISIN,
        quantity=quantity,
        currency="JPY",
        amount=amount,
    )


def files_of(net: Path, node: str) -> list[Path]:
    return sorted(p for p in (net / "nodes" / node / "data").rglob("*") if p.is_file())


def stored_tx_ids(net: Path, node: str) -> set[str]:
    with sqlite3.connect(net / "nodes" / node / "data" / "vault.sqlite") as conn:
        return {t for (t,) in conn.execute("SELECT tx_id FROM transactions")}


def holds(net: Path, node: str, marker: bytes) -> bool:
    return any(marker in p.read_bytes() for p in files_of(net, node))


async def test_dvp_between_brokers_with_a_regulator_and_nothing_for_bystanders(
    market: Market,
) -> None:
    m = market
    marker = b"MARKER-" + secrets.token_hex(16).encode()
    reply = await m.vaults["trader.brokera"].dvp(
        terms(m, 40, 400_000), observers=["regulator"], memo=marker
    )
    assert marker in reply.signed_transaction
    assert await m.holdings("trader.brokera") == {("security", ISIN): 60, ("cash", "JPY"): 400_000}
    assert await m.holdings("trader.brokerb") == {("security", ISIN): 40, ("cash", "JPY"): 600_000}
    # the regulator observed every output of the DvP
    assert await m.holdings("ops.regulator") == {
        ("security", ISIN): 100,
        ("cash", "JPY"): 1_000_000,
    }
    # vault queries: by contract, owner, participant; consumed states on request
    reg = m.vaults["ops.regulator"]
    owned_by_b = await reg.query(owner=m.id("brokerb"))
    assert holdings_of(owned_by_b) == {("security", ISIN): 40, ("cash", "JPY"): 600_000}
    assert holdings_of(await reg.query(participant=m.id("brokera"))) == {
        ("security", ISIN): 60,
        ("cash", "JPY"): 400_000,
    }
    assert holdings_of(await reg.query(contract="cash")) == {("cash", "JPY"): 1_000_000}
    spent = await m.vaults["trader.brokera"].query(contract="security", include_consumed=True)
    assert sorted(s.consumed_by for s in spent) == ["", reply.tx_id]
    # privacy: the parties and the observer hold the marker, nobody else holds a byte of it
    for node in ("brokera", "brokerb", "regulator"):
        assert holds(m.net, node, marker), node
    for node in ("bystander", "bank", "exchange", "notary0"):
        assert files_of(m.net, node), node
        assert not holds(m.net, node, marker), node
    assert await m.vaults["ops.bystander"].query() == []
    # with a non-validating notary the observer resolved and kept the backchain (2 issuances)
    assert len(stored_tx_ids(m.net, "regulator") - {reply.tx_id}) == 2


async def test_vault_and_flow_services_refuse_outsiders(market: Market) -> None:
    m = market
    reply = await m.vaults["trader.brokera"].dvp(terms(m, 10, 100_000))
    # another organisation's client may not use brokera's vault
    intruder = PartyFiles.load(m.net, "ops.bystander")
    async with await VaultClient.connect(intruder, "brokera") as foreign:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await foreign.query()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(err.value) == "NOT_AUTHORIZED"
    # a bystander cannot fetch a transaction it was never sent, even knowing its id
    msg = flow_service_pb2.FlowMessage(requester=intruder.signer.identity_bytes, tx_id=reply.tx_id)
    msg.timestamp.GetCurrentTime()
    raw = msg.SerializeToString()
    channel = await intruder.channel_to("brokera")
    try:
        stub = flow_service_pb2_grpc.FlowServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as fetched:
            await stub.FetchTransaction(
                flow_service_pb2.FetchTransactionRequest(
                    message=raw, signature=intruder.signer.sign(raw)
                ),
                timeout=30,
            )
    finally:
        await channel.close(None)
    assert fetched.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(fetched.value) == "NOT_FOUND"


async def test_dvp_with_an_invalid_leg_moves_nothing(market: Market) -> None:
    m = market
    before = {c: await m.holdings(c) for c in ("trader.brokera", "trader.brokerb")}
    # cash leg invalid: the buyer cannot pay
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await m.vaults["trader.brokera"].dvp(terms(m, 10, 5_000_000))
    assert (err.value.code(), reason_of(err.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_FOUND",
    )
    # security leg invalid: the seller does not hold enough
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await m.vaults["trader.brokera"].dvp(terms(m, 101, 1))
    assert (err.value.code(), reason_of(err.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_FOUND",
    )
    # cash leg invalid at the notary: the buyer's cash was spent behind its vault's back
    cash = [s for s in await m.vaults["trader.brokerb"].query(contract="cash")]
    assert len(cash) == 1
    buyer = PartyFiles.load(m.net, "trader.brokerb")
    spent_ref = Ref(cash[0].ref.tx_id, cash[0].ref.index)
    me = buyer.signer.identity_bytes
    raw = build_transaction(
        TxSpec(
            notary="notary0",
            nonce=secrets.token_bytes(32),
            inputs=[spent_ref],
            outputs=[cash_output(me, me, "JPY", 1)],
            commands=[Command("cash", "move", (me,))],
        )
    )
    async with await NotaryClient.connect(buyer, "notary0") as notary:
        wire = read_transaction(raw)
        await notary.notarise(sign_request(notarisation_payload(wire, me), buyer.signer))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await m.vaults["trader.brokera"].dvp(terms(m, 10, 100_000))
    assert (err.value.code(), reason_of(err.value)) == (grpc.StatusCode.ABORTED, "INPUT_CONSUMED")
    after = {c: await m.holdings(c) for c in ("trader.brokera", "trader.brokerb")}
    assert after == before
    assert before["trader.brokerb"] == {("cash", "JPY"): 1_000_000}
    # and the seller's securities were released: they can still be moved
    await m.vaults["trader.brokera"].move("security", m.id("brokerb"), ISIN, 10)
    assert (await m.holdings("trader.brokera"))[("security", ISIN)] == 90
    assert (await m.holdings("trader.brokerb"))[("security", ISIN)] == 10


async def test_validating_notary_runs_the_contracts_and_observers_skip_the_backchain(
    network: Start,
) -> None:
    topology = MARKET.replace('roles = ["notary"]', 'roles = ["notary"]\nvalidating = true')
    m = await open_market(network, topology)
    try:
        marker = b"MARKER-" + secrets.token_hex(16).encode()
        dvp = await m.vaults["trader.brokera"].dvp(
            terms(m, 40, 400_000), memo=marker, observers=["regulator"]
        )
        # the observer trusted the validating notary: it fetched no backchain
        assert stored_tx_ids(m.net, "regulator") == {dvp.tx_id}
        await m.vaults["trader.brokerb"].move("security", m.id("brokera"), ISIN, 15)
        assert await m.holdings("trader.brokera") == {
            ("security", ISIN): 75,
            ("cash", "JPY"): 400_000,
        }
        # the validating notary saw the transaction but keeps only its spent-set
        assert not holds(m.net, "notary0", marker)
        # it refuses a transaction whose contracts fail, though every signature is valid
        thief = PartyFiles.load(m.net, "trader.brokerb")
        issued = read_transaction(
            utxo_pb2.SignedUtxoTransaction.FromString(m.cash_issue.signed_transaction).transaction
        )
        me = thief.signer.identity_bytes
        raw = build_transaction(
            TxSpec(
                notary="notary0",
                nonce=secrets.token_bytes(32),
                inputs=[issued.out_ref(0)],
                outputs=[cash_output(m.id("bank"), me, "JPY", 2_000_000)],
                commands=[Command("cash", "move", (me,))],
            )
        )
        wire = read_transaction(raw)
        stx = sign_transaction(raw, wire.tx_id, [thief.signer])
        payload = notarisation_payload(
            wire, me, stx.SerializeToString(), [m.cash_issue.signed_transaction]
        )
        async with await NotaryClient.connect(thief, "notary0") as notary:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await notary.notarise(sign_request(payload, thief.signer))
        assert (err.value.code(), reason_of(err.value)) == (
            grpc.StatusCode.ABORTED,
            "CONTRACT_FAILED",
        )
    finally:
        for v in m.vaults.values():
            await v.close()


async def test_bad_input_gets_a_specific_status_and_moves_nothing(market: Market) -> None:
    m = market
    trader = m.vaults["trader.brokera"]
    party = trader.party
    before = await m.holdings("trader.brokera")

    def signed_query(**fields: object) -> vault_service_pb2.QueryStatesRequest:
        query = vault_service_pb2.VaultQuery(requester=party.signer.identity_bytes, **fields)  # type: ignore[arg-type]
        raw = query.SerializeToString()
        return vault_service_pb2.QueryStatesRequest(query=raw, signature=party.signer.sign(raw))

    stale = signed_query()
    stale_query = vault_service_pb2.VaultQuery.FromString(stale.query)
    stale_query.timestamp.FromDatetime(datetime.now(UTC) - timedelta(hours=2))
    raw = stale_query.SerializeToString()
    fresh = signed_query()
    fresh_query = vault_service_pb2.VaultQuery.FromString(fresh.query)
    fresh_query.timestamp.FromDatetime(datetime.now(UTC))
    fresh_raw = fresh_query.SerializeToString()
    other = PartyFiles.load(m.net, "trader.brokerb").signer
    cases = [
        (
            vault_service_pb2.QueryStatesRequest(query=b"\xff\xff", signature=b"x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "MALFORMED",
        ),
        (
            vault_service_pb2.QueryStatesRequest(query=raw, signature=party.signer.sign(raw)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "TIMESTAMP_OUT_OF_WINDOW",
        ),
        (
            vault_service_pb2.QueryStatesRequest(query=fresh_raw, signature=other.sign(fresh_raw)),
            grpc.StatusCode.PERMISSION_DENIED,
            "BAD_SIGNATURE",
        ),
    ]
    for request, code, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await trader.stub.QueryStates(request, timeout=30)
        assert (err.value.code(), reason_of(err.value)) == (code, reason)
    flows = [
        (vault_service_pb2.FlowCommand(), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"),
        (
            vault_service_pb2.FlowCommand(
                move=vault_service_pb2.MoveFlow(
                    contract="security", new_owner=m.id("brokerb"), asset=ISIN, amount=101
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_FOUND",
        ),
        (
            vault_service_pb2.FlowCommand(
                move=vault_service_pb2.MoveFlow(
                    contract="security", new_owner=party.signer.identity_bytes, asset=ISIN, amount=1
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        ),
        (
            vault_service_pb2.FlowCommand(
                move=vault_service_pb2.MoveFlow(
                    contract="security", new_owner=m.id("brokerb"), asset=ISIN, amount=1
                ),
                observers=["nobody"],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        ),
        (
            vault_service_pb2.FlowCommand(
                dvp=vault_service_pb2.DvpFlow(
                    terms=utxo_pb2.DvpTerms(
                        buyer=m.id("brokera"),
                        seller=m.id("brokerb"),
                        isin=ISIN,
                        quantity=1,
                        currency="JPY",
                        amount=1,
                    )
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        ),
    ]
    for command, code, reason in flows:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await trader.run(command)
        assert (err.value.code(), reason_of(err.value)) == (code, reason), command
    assert await m.holdings("trader.brokera") == before
    assert await m.holdings("trader.brokerb") == {("cash", "JPY"): 1_000_000}


def unapproved_cash_move(
    m: Market,
) -> tuple[PartyFiles, WireTx, utxo_pb2.SignedUtxoTransaction]:
    """brokerb moves its issued cash to brokera by cash's rules, signed by brokerb, but every
    output and command names a package hash the network map does not approve for `cash`."""
    owner = PartyFiles.load(m.net, "trader.brokerb")
    me = owner.signer.identity_bytes
    issued = read_transaction(
        utxo_pb2.SignedUtxoTransaction.FromString(m.cash_issue.signed_transaction).transaction
    )
    moved = cash_output(m.id("bank"), m.id("brokera"), "JPY", 1_000_000)
    raw = build_transaction(
        TxSpec(
            notary="notary0",
            nonce=secrets.token_bytes(32),
            inputs=[issued.out_ref(0)],
            outputs=[Output(moved.contract, moved.data, moved.participants, UNAPPROVED)],
            commands=[Command("cash", "move", (me,), b"", UNAPPROVED)],
        )
    )
    wire = read_transaction(raw)
    assert {o.contract_hash for o in wire.outputs} == {UNAPPROVED}
    return owner, wire, sign_transaction(raw, wire.tx_id, [owner.signer])


async def test_validating_notary_refuses_a_contract_package_the_network_did_not_approve(
    network: Start,
) -> None:
    """A cash move that obeys cash's rules and is signed by the owner, but names a package hash
    the network map does not approve for `cash`: the validating notary refuses it with
    UTXO_CONTRACT_NOT_APPROVED and consumes nothing (the state is then spent normally)."""
    topology = MARKET.replace('roles = ["notary"]', 'roles = ["notary"]\nvalidating = true')
    m = await open_market(network, topology)
    try:
        owner, wire, stx = unapproved_cash_move(m)
        me = owner.signer.identity_bytes
        payload = notarisation_payload(
            wire, me, stx.SerializeToString(), [m.cash_issue.signed_transaction]
        )
        async with await NotaryClient.connect(owner, "notary0") as notary:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await notary.notarise(sign_request(payload, owner.signer))
        assert (err.value.code(), reason_of(err.value)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "UTXO_CONTRACT_NOT_APPROVED",
        )
        # nothing consumed: the same state moves under the approved built-in package
        await m.vaults["trader.brokerb"].move("cash", m.id("brokera"), "JPY", 1_000_000)
        assert await m.holdings("trader.brokera") == {
            ("security", ISIN): 100,
            ("cash", "JPY"): 1_000_000,
        }
    finally:
        for v in m.vaults.values():
            await v.close()


async def test_a_counterparty_vault_refuses_a_contract_package_the_network_did_not_approve(
    market: Market,
) -> None:
    """With a non-validating notary (it sees no outputs), a cash move naming an unapproved
    package hash is notarised, but the counterparty's vault refuses to record it with
    UTXO_CONTRACT_NOT_APPROVED and stores nothing."""
    m = market
    owner, wire, stx = unapproved_cash_move(m)
    me = owner.signer.identity_bytes
    async with await NotaryClient.connect(owner, "notary0") as notary:
        answer = await notary.notarise(sign_request(notarisation_payload(wire, me), owner.signer))
    stx.notary_signature.CopyFrom(answer.notary_signature)
    if answer.HasField("batch_proof"):
        stx.notary_batch_proof.CopyFrom(answer.batch_proof)
    before = stored_tx_ids(m.net, "brokera")
    node = m.net / "nodes" / "brokerb"
    signer = SigningIdentity.from_pem(
        "BrokerB", (node / "identity.pem").read_bytes(), (node / "identity.key").read_bytes()
    )
    msg = flow_service_pb2.FlowMessage(
        requester=signer.identity_bytes, signed_transaction=stx.SerializeToString()
    )
    msg.timestamp.GetCurrentTime()
    body = msg.SerializeToString()
    channel = await owner.channel_to("brokera")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await flow_service_pb2_grpc.FlowServiceStub(channel).RecordTransaction(
                flow_service_pb2.RecordTransactionRequest(
                    message=body, signature=signer.sign(body)
                ),
                timeout=30,
            )
    finally:
        await channel.close(None)
    assert (err.value.code(), reason_of(err.value)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "UTXO_CONTRACT_NOT_APPROVED",
    )
    assert stored_tx_ids(m.net, "brokera") == before
    assert ("cash", "JPY") not in await m.holdings("trader.brokera")
