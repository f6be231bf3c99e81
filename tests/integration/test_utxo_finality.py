"""Durable finality: a final transaction reaches every recipient that was down when the flow
ended — after the recipient comes back, and even if the initiator crashed in between (the
outbox row is written with the transaction, `runtime/roles/vault/outbox.py`)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from dltmw.client.utxo import PartyFiles, VaultClient, holdings_of
from dltmw.rpc.status import reason_of

from .test_utxo_flows import ISIN, NODE_OF, Market, Start, open_market, stored_tx_ids, terms

pytestmark = pytest.mark.integration
DEADLINE_S = 90.0


def outbox_of(net: Path, node: str) -> set[tuple[str, str]]:
    with sqlite3.connect(net / "nodes" / node / "data" / "vault.sqlite") as conn:
        return {(t, n) for t, n in conn.execute("SELECT tx_id, node FROM outbox")}


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until true, at most DEADLINE_S (no fixed sleeps in the assertions)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except grpc.aio.AioRpcError:  # the restarted node may not answer yet
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {DEADLINE_S}s: {what}")


async def restart(m: Market, *nodes: str) -> None:
    """Start stopped nodes in order; reconnect their clients (a node listens on a new port)."""
    for node in nodes:
        m.sup.start(node)
        m.sup.wait_ready(node, 60)
        for client, n in NODE_OF.items():
            if n == node:
                await m.vaults[client].close()
                m.vaults[client] = await VaultClient.connect(PartyFiles.load(m.net, client), n)


async def pending_flow(flow: Awaitable[object]) -> str:
    """Run a flow whose final delivery fails; returns the error text (PEER_UNAVAILABLE)."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await flow
    assert (err.value.code(), reason_of(err.value)) == (
        grpc.StatusCode.UNAVAILABLE,
        "PEER_UNAVAILABLE",
    )
    return str(err.value.details())


async def test_final_transactions_reach_recipients_that_were_down(network: Start) -> None:
    m: Market = await open_market(network)
    try:
        await _counterparty_down_and_initiator_crash(m)
        await _observer_down_during_dvp(m)
    finally:
        for v in m.vaults.values():
            await v.close()


async def _counterparty_down_and_initiator_crash(m: Market) -> None:
    m.sup.stop("brokerb")
    details = await pending_flow(
        m.vaults["trader.brokera"].move(
            "security", m.id("brokerb"), ISIN, 10, observers=["regulator"]
        )
    )
    assert "brokerb" in details
    [(tx_id, node)] = outbox_of(m.net, "brokera")
    assert node == "brokerb"
    # the transaction is final: the initiator and the (up) observer recorded it
    assert await m.holdings("trader.brokera") == {("security", ISIN): 90}
    assert tx_id in stored_tx_ids(m.net, "regulator")
    # the initiator crashes with the delivery still owed; then both come back
    m.sup.kill("brokera")
    await restart(m, "brokerb", "brokera")

    async def delivered() -> bool:
        got = await m.holdings("trader.brokerb")
        return got == {("security", ISIN): 10, ("cash", "JPY"): 1_000_000}

    await eventually(delivered, "brokerb records the move after both restarts")
    assert tx_id in stored_tx_ids(m.net, "brokerb")
    await eventually(_empty_outbox(m, "brokera"), "brokera's outbox drains")


async def _observer_down_during_dvp(m: Market) -> None:
    m.sup.stop("regulator")
    details = await pending_flow(
        m.vaults["trader.brokera"].dvp(terms(m, 40, 400_000), observers=["regulator"])
    )
    assert "regulator" in details and "brokerb" not in details
    [(tx_id, _)] = outbox_of(m.net, "brokera")
    assert await m.holdings("trader.brokerb") == {("security", ISIN): 50, ("cash", "JPY"): 600_000}
    assert tx_id not in stored_tx_ids(m.net, "regulator")
    await restart(m, "regulator")

    async def observed() -> bool:
        return tx_id in stored_tx_ids(m.net, "regulator")

    await eventually(observed, "the regulator records the DvP once it is back")
    # the observer's vault shows every output of the DvP (and of the earlier move)
    reg = holdings_of(await m.vaults["ops.regulator"].query(contract="security"))
    assert reg == {("security", ISIN): 100}
    cash = holdings_of(await m.vaults["ops.regulator"].query(owner=m.id("brokera")))
    assert cash == {("security", ISIN): 50, ("cash", "JPY"): 400_000}
    await eventually(_empty_outbox(m, "brokera"), "brokera's outbox drains")


def _empty_outbox(m: Market, node: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not outbox_of(m.net, node)

    return check
