"""The demo's notarised-UTXO part (Corda style, on the capital-market network's vault nodes).

1. The bank issues JPY cash to BrokerB; the exchange issues shares to BrokerA.
2. Delivery versus payment: BrokerA sells shares to BrokerB for cash in ONE transaction, signed
   by both brokers, notarised by `notary.exchange`, recorded by the two brokers and by the
   regulator (an observer) — and by nobody else: the bank's node, the exchange's peer and the
   notary hold no byte of it (a random trade reference is searched in their files).
3. A double-spend attempt: BrokerB's trader asks the notary to spend cash that the DvP already
   consumed; the notary refuses with ABORTED, naming only the hash of the DvP's tx_id.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

from dltmw.client.utxo import (
    NotaryClient,
    PartyFiles,
    VaultClient,
    error_metadata,
    holdings_of,
)
from dltmw.core.utxo.build import (
    TxSpec,
    build_transaction,
    cash_output,
    notarisation_payload,
    sign_request,
)
from dltmw.core.utxo.model import Command, Ref, read_transaction
from dltmw.rpc.status import reason_of
from dltmw.v1 import utxo_pb2

NOTARY = "notary.exchange"
ISIN = "JP3633400001"
VAULTS = {
    "BrokerA": ("trader.brokera", "peer.brokera"),
    "BrokerB": ("trader.brokerb", "peer.brokerb"),
    "Bank": ("treasury.bank", "peer.bank"),
    "Exchange": ("admin.exchange", "peer.exchange"),
    "Regulator": ("admin.regulator", "regulator"),
}


def _holds(network: Path, node: str, needle: bytes) -> bool:
    root = network / "nodes" / node / "data"
    return any(needle in p.read_bytes() for p in root.rglob("*") if p.is_file())


async def _double_spend(console: Console, network: Path, brokerb: VaultClient, dvp_tx: str) -> bool:
    """Try to spend BrokerB's cash that the DvP consumed; True if the notary refused it right."""
    spent = [
        s for s in await brokerb.query(contract="cash", include_consumed=True) if s.consumed_by
    ]
    trader = PartyFiles.load(network, "trader.brokerb")
    me = trader.signer.identity_bytes
    raw = build_transaction(
        TxSpec(
            notary=NOTARY,
            nonce=secrets.token_bytes(32),
            inputs=[Ref(spent[0].ref.tx_id, spent[0].ref.index)],
            outputs=[cash_output(me, me, "JPY", 1)],
            commands=[Command("cash", "move", (me,))],
        )
    )
    wire = read_transaction(raw)
    async with await NotaryClient.connect(trader, NOTARY) as notary:
        try:
            await notary.notarise(sign_request(notarisation_payload(wire, me), trader.signer))
        except grpc.aio.AioRpcError as err:
            named = error_metadata(err).get("consuming_tx_id_hash", "")
            expected = hashlib.sha256(dvp_tx.encode()).hexdigest()
            ok = err.code() == grpc.StatusCode.ABORTED and named == expected
            console.print(
                f"double spend of {spent[0].ref.tx_id[:12]}…:{spent[0].ref.index} refused: "
                f"{err.code().name} {reason_of(err)}, consumed by tx hash {named[:16]}… "
                + ("[green]as expected[/]" if ok else "[red]unexpected[/]")
            )
            return ok
    console.print("[red]the notary signed a double spend[/]")
    return False


async def utxo_trade(console: Console, network: Path) -> bool:
    """Issue, DvP with an observer, privacy check, double-spend attempt; True if all held."""
    clients = {
        org: await VaultClient.connect(PartyFiles.load(network, c), node)
        for org, (c, node) in VAULTS.items()
    }
    try:
        a, b = (
            clients["BrokerA"].identity_of("peer.brokera"),
            clients["BrokerB"].identity_of("peer.brokerb"),
        )
        await clients["Bank"].issue("cash", b, "JPY", 10_000_000)
        await clients["Exchange"].issue("security", a, ISIN, 1_000)
        reference = b"DVP-REF-" + secrets.token_hex(12).encode()
        terms = utxo_pb2.DvpTerms(
            buyer=b, seller=a, isin=ISIN, quantity=300, currency="JPY", amount=900_000
        )
        dvp = await clients["BrokerA"].dvp(terms, observers=["regulator"], memo=reference)
        table = Table(title=f"DvP {dvp.tx_id[:12]}…: 300 {ISIN} for JPY 900,000")
        for col in ("vault", "shares", "JPY", "holds the trade"):
            table.add_column(col)
        privacy_ok = True
        for org, (_, node) in VAULTS.items():
            h = holdings_of(await clients[org].query(owner=clients[org].identity_of(node)))
            seen = _holds(network, node, reference)
            if org in ("Bank", "Exchange"):
                privacy_ok &= not seen
            table.add_row(
                node,
                str(h.get(("security", ISIN), 0)),
                f"{h.get(('cash', 'JPY'), 0):,}",
                "yes" if seen else "no",
            )
        console.print(table)
        privacy_ok &= not _holds(network, NOTARY, reference)
        observed = holdings_of(await clients["Regulator"].query())
        console.print(f"regulator observed: {observed}")
        console.print(
            "only the brokers and the regulator hold the trade: "
            + ("[green]yes[/]" if privacy_ok else "[red]NO[/]")
        )
        spend_ok = await _double_spend(console, network, clients["BrokerB"], dvp.tx_id)
        return privacy_ok and spend_ok and observed[("security", ISIN)] == 1_000
    finally:
        for c in clients.values():
            await c.close()
