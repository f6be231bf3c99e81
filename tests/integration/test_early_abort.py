"""Early abort and reordering on real node processes (issue 13 item 3; docs/ordering.md).

One network whose channel reorders blocks (`reorder = true`) and cuts by the limits only
(300 ms), so transactions submitted one after another share a block:

1. early abort: a deposit endorsed on `bank_rmw` (it records the account's version), then
   another deposit on the account commits, then the first is submitted: Submit refuses it with
   ABORTED / STALE_READ naming the key (the SDK's StaleRead, retryable), nothing is ordered;
2. reordering: on `bank`, a deposit (a delta on H) is submitted BEFORE a payment H -> X that
   read H; in arrival order the payment would be MVCC_READ_CONFLICT (the sequential model says
   so), the reordered block puts the payment first and both commit VALID — what the sequential
   model says of the block's own order — and both peers agree on the balances.
"""

from __future__ import annotations

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.core.reorder import reorder
from dltmw.sdk.errors import StaleRead, from_rpc_error
from dltmw.v1 import transaction_pb2

from .conftest import TWO_ORG

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
REORDERING = TWO_ORG.replace("timeout_ms = BATCH_MS", "timeout_ms = BATCH_MS, reorder = true")


async def test_a_stale_read_is_refused_and_a_reader_goes_before_the_writer(network) -> None:
    net, _ = network(REORDERING, batch_ms=300, by_limits_only=True)
    c = await GatewayClient.connect(net, "user1.org1")
    other = await GatewayClient.connect(net, "user1.org2")
    try:
        for contract, account, amount in (("bank_rmw", "K", "10"), ("bank", "H", "100")):
            opened = await c.submit_transaction("trades", contract, "open", account, amount)
            assert opened.status.result == VALID
        opened = await c.submit_transaction("trades", "bank", "open", "X", "0")
        assert opened.status.result == VALID

        # 1. early abort
        signed, _ = c.proposal("trades", "bank_rmw", "deposit", ["K", "1"])
        stale = c.envelope((await c.endorse(signed)).prepared_payload)
        moved = await c.submit_transaction("trades", "bank_rmw", "deposit", "K", "5")
        assert moved.status.result == VALID
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.submit(stale)
        assert refused.value.code() == grpc.StatusCode.ABORTED
        error = from_rpc_error(refused.value)
        assert isinstance(error, StaleRead) and error.retryable
        assert error.reason == "STALE_READ" and error.metadata["key"] == "K"
        assert int((await c.evaluate("trades", "bank_rmw", "balance", "K")).payload) == 15

        # 2. reordering: the deposit arrives first, the payment that read H is placed before it
        deposit, dep_id = c.proposal("trades", "bank", "deposit", ["H", "7"])
        payment, pay_id = c.proposal("trades", "bank", "payment", ["H", "X", "30"])
        envelopes = [c.envelope((await c.endorse(p)).prepared_payload) for p in (deposit, payment)]
        assert reorder([e.SerializeToString() for e in envelopes]) == [
            envelopes[1].SerializeToString(),
            envelopes[0].SerializeToString(),
        ]
        for envelope in envelopes:  # one after the other: the orderer sees this arrival order
            await c.submit(envelope)
        dep = await c.commit_status("trades", dep_id)
        pay = await c.commit_status("trades", pay_id)
        assert dep.block_number == pay.block_number
        assert (pay.tx_index, dep.tx_index) == (0, 1)
        assert (pay.result, dep.result) == (VALID, VALID)
        other.observe_block("trades", c.seen_block("trades"))
        for g in (c, other):
            held = [int((await g.evaluate("trades", "bank", "balance", a)).payload) for a in "HX"]
            assert held == [100 - 30 + 7, 30]
    finally:
        await c.close()
        await other.close()
