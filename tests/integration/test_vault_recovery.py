"""A deleted UTXO vault is rebuilt from the node's counterparties and equals the original; a
vault node's standby replicates its vault and serves it after failover (issue 20 item 6;
runtime/roles/vault/recovery.py, runtime/standby.py, docs/operations.md).

Real processes: brokerb receives cash, buys securities by DvP, moves some back; then its vault
file (with -wal/-shm) is deleted and the node restarted empty; `dltmw vault recover` asks every
other vault node, verifies what they serve and records it. Bad input first: a non-admin cannot
start a recovery, a client identity cannot list transactions (NOT_AUTHORIZED, nothing served).
Forged transactions from a malicious counterparty are refused in tests/unit/test_vault_recovery.py
(a node process cannot be made to lie here).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest

from dltmw.client.contracts import NodeAdmin
from dltmw.client.utxo import PartyFiles, VaultClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import vault_recovery_pb2 as V
from dltmw.v1 import vault_recovery_pb2_grpc, vault_service_pb2

from .cli import dltmw
from .ledgers import wait_until
from .test_failover import _refused
from .test_utxo_finality import eventually, restart
from .test_utxo_flows import ISIN, MARKET, Market, Start, open_market, terms

pytestmark = pytest.mark.integration
State = tuple[str, int, bytes, str]


def states(rows: list[vault_service_pb2.VaultState]) -> list[State]:
    return sorted((s.ref.tx_id, s.ref.index, s.output, s.consumed_by) for s in rows)


async def vault_of(m: Market, client: str) -> tuple[list[State], list[State]]:
    """(unconsumed, all) states of the client's node."""
    v = m.vaults[client]
    return states(await v.query()), states(await v.query(include_consumed=True))


async def test_a_deleted_vault_is_rebuilt_from_counterparties(network: Start) -> None:
    m = await open_market(network)
    try:
        await m.vaults["trader.brokera"].dvp(terms(m, 40, 400_000), observers=["regulator"])
        await m.vaults["trader.brokerb"].move("security", m.id("brokera"), ISIN, 5)
        await m.vaults["ops.bank"].issue("cash", m.id("brokerb"), "JPY", 7)
        original = await vault_of(m, "trader.brokerb")
        # unconsumed: cash 600k change, securities 35 after the move, cash 7; consumed: the 1M
        # cash and the 40 securities of the DvP
        assert (len(original[0]), len(original[1])) == (3, 5), original

        await _outsiders_are_refused(m)

        m.sup.stop("brokerb")
        data = m.net / "nodes" / "brokerb" / "data"
        for suffix in ("", "-wal", "-shm"):
            (data / f"vault.sqlite{suffix}").unlink(missing_ok=True)
        await restart(m, "brokerb")
        assert await vault_of(m, "trader.brokerb") == ([], [])

        out = dltmw("vault", "recover", str(m.net), "brokerb")
        assert "recorded" in out and "refused" not in out, out
        assert await vault_of(m, "trader.brokerb") == original
        # idempotent: a second run (in process this time) records nothing new
        again = await NodeAdmin(m.net, "brokerb").recover_vault()
        assert (again.recorded, list(again.refused), list(again.unreachable)) == (0, [], [])
        assert await vault_of(m, "trader.brokerb") == original
        # and the rebuilt vault works: brokerb spends recovered states (the recipient may hold
        # a channel to brokerb's old port: then the delivery is retried in the background)
        try:
            await m.vaults["trader.brokerb"].move("cash", m.id("brokera"), "JPY", 100)
        except grpc.aio.AioRpcError as err:
            assert reason_of(err) == "PEER_UNAVAILABLE", err
        assert (await m.holdings("trader.brokerb"))[("cash", "JPY")] == 600_007 - 100
    finally:
        for v in m.vaults.values():
            await v.close()


async def _outsiders_are_refused(m: Market) -> None:
    code, reason = await _refused(NodeAdmin(m.net, "brokerb", "trader.brokerb").recover_vault())
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_AUTHORIZED")
    trader = PartyFiles.load(m.net, "trader.brokerb")  # a client of brokerb's org, not a node
    query = V.TransactionPageQuery(requester=trader.signer.identity_bytes)
    query.timestamp.GetCurrentTime()
    raw = query.SerializeToString()
    channel = await trader.channel_to("brokera")
    try:
        stub = vault_recovery_pb2_grpc.VaultRecoveryServiceStub(channel)
        request = V.ListTransactionsRequest(query=raw, signature=trader.signer.sign(raw))
        code, reason = await _refused(stub.ListTransactions(request, timeout=30))
    finally:
        await channel.close(None)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "NOT_AUTHORIZED")


STANDBY = "brokerb-standby"
WITH_STANDBY = MARKET.replace(
    "[[clients]]",
    f'[[nodes]]\nid = "{STANDBY}"\norg = "BrokerB"\nroles = ["vault"]\nstandby_of = "brokerb"\n'
    "[[clients]]",
    1,
)


def state_rows(net: Path, node: str) -> list[tuple[bytes, bytes, str]]:
    """The vault's states as stored in the node's file (read-only)."""
    path = net / "nodes" / node / "data" / "vault.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT ref, output, consumed_by FROM states ORDER BY ref").fetchall()
    finally:
        db.close()


async def test_a_vault_standby_replicates_and_serves_after_failover(network: Start) -> None:
    m = await open_market(network, WITH_STANDBY)
    try:
        await m.vaults["trader.brokera"].dvp(terms(m, 40, 400_000), observers=["regulator"])
        original = await vault_of(m, "trader.brokerb")
        assert (len(original[0]), len(original[1])) == (2, 3), original
        await wait_until(
            lambda: state_rows(m.net, STANDBY) == state_rows(m.net, "brokerb"),
            30,
            "the standby's vault equals the active's",
        )
        # before promotion the standby serves nobody, not even its own organisation
        trader = PartyFiles.load(m.net, "trader.brokerb")
        async with await VaultClient.connect(trader, STANDBY) as early:
            code, reason = await _refused(early.query())
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "STANDBY_NOT_PROMOTED")

        m.sup.kill("brokerb")
        assert "promoted" in dltmw("failover", str(m.net), "brokerb")
        await m.vaults["trader.brokerb"].close()  # reconnect: the id now resolves to the standby
        m.vaults["trader.brokerb"] = await VaultClient.connect(trader, "brokerb")
        assert await vault_of(m, "trader.brokerb") == original
        # and it acts as brokerb: it moves replicated states, brokera records them
        try:
            await m.vaults["trader.brokerb"].move("security", m.id("brokera"), ISIN, 5)
        except grpc.aio.AioRpcError as err:  # brokera's link to the dead active may fail once
            assert reason_of(err) == "PEER_UNAVAILABLE", err

        async def delivered() -> bool:
            return (await m.holdings("trader.brokera")).get(("security", ISIN)) == 65

        await eventually(delivered, "brokera records the move from the promoted standby")
    finally:
        for v in m.vaults.values():
            await v.close()
