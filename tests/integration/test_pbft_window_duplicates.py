"""A transaction sent again after PBFT-lite's de-duplication window forgot it: refused from the
ledger, never applied twice (issue 18 item 4).

The orderers remember the ids the chain took for `decided_retain` sequences only
(`core/pbft/recent.Recent`: bounded memory, docs/ordering.md "De-duplication window"). A copy
that comes after the window is no longer refused from an orderer's memory, so what stops it is
the ledger: the gateway refuses it from its peer's transaction index (DUPLICATE_TX_ID), and a
copy handed straight to an orderer is ordered again and every peer marks it DUPLICATE_TXID at
commit, its write not applied. Four real orderer processes with dissemination on (what `dltmw
init` makes), `DLTMW_PBFT_DECIDED_RETAIN=8` and two transactions per block.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import transaction_pb2

from .forged_envelopes import broadcast_one, tls_channel
from .ledgers import blocks, ledger_path, tx_codes, wait_until
from .test_pbft_dissemination import ON
from .test_pbft_ordering import VALID, _blocks

pytestmark = pytest.mark.integration
DUPLICATE = transaction_pb2.TX_VALIDATION_CODE_DUPLICATE_TXID
PEERS = ("peer0.org1", "peer0.org2")
RETAIN = 8


async def test_a_copy_after_the_window_is_refused_from_the_ledger_and_never_applied_twice(
    network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLTMW_PBFT_DECIDED_RETAIN", str(RETAIN))
    net, _sup = network(ON.replace("max_tx_count = 100", "max_tx_count = 2"))
    c = await GatewayClient.connect(net, "user1.org1", pipelined=False)
    orderer = tls_channel(net, net / "clients" / "user1.org1", "orderer.b")
    try:
        signed, tx_id = c.proposal("trades", "kv", "put", ["dup", "first"])
        envelope = c.envelope((await c.endorse(signed)).prepared_payload)
        await c.submit(envelope)
        assert (await c.commit_status("trades", tx_id)).result == VALID
        first_height = len(_blocks(net, "orderer.b"))
        # The key changes after it, then enough sequences pass for every window to forget it.
        second = await c.submit_transaction("trades", "kv", "put", "dup", "second")
        assert second.status.result == VALID
        sem = asyncio.Semaphore(8)

        async def put(i: int) -> int:
            async with sem:
                done = await c.submit_transaction("trades", "kv", "put", f"pad{i}", "v")
                return done.status.result

        assert set(await asyncio.gather(*(put(i) for i in range(48)))) == {VALID}
        assert len(_blocks(net, "orderer.b")) - first_height > 2 * RETAIN
        # Through the gateway: refused from its peer's ledger, nothing submitted.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.stub.Submit(G.SubmitRequest(envelope=envelope), timeout=30)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert reason_of(err.value) == "DUPLICATE_TX_ID"
        # Straight to an orderer, which no longer remembers it: ordered again, marked
        # DUPLICATE_TXID by every peer, its write ("first") not applied over "second".
        accepted = await broadcast_one(orderer, envelope.SerializeToString())
        assert accepted == (True, "ERROR_REASON_UNSPECIFIED")
        for peer in PEERS:
            path = ledger_path(net, peer)
            await wait_until(lambda p=path: len(tx_codes(blocks(p))[tx_id]) == 2, 60, peer)
            assert tx_codes(blocks(path))[tx_id] == [VALID, DUPLICATE]
        assert (await c.evaluate("trades", "kv", "get", "dup")).payload == b"second"
    finally:
        await orderer.close()
        await c.close()
