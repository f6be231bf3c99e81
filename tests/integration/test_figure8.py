"""The paper's Figure 8, and the endorsement policy, over real node processes."""

from __future__ import annotations

import sqlite3

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import (
    common_pb2,
    endorser_service_pb2,
    endorser_service_pb2_grpc,
    proposal_pb2,
    transaction_pb2,
)
from dltmw.v1 import gateway_service_pb2 as G

from .figure8 import open_accounts, run_steps

pytestmark = pytest.mark.integration
T = transaction_pb2


async def test_figure8_exactly(network) -> None:
    # The paper's Figure 8 needs the three transactions, submitted one by one, in ONE block: the
    # channel cuts by the limits only (Fabric v1.0's rule), so the 1 s timeout gathers them.
    # With adaptive cutting (the default) the orderer would cut each as soon as it is queued.
    net, _ = network(batch_ms=1000, by_limits_only=True)
    c = await GatewayClient.connect(net, "user1.org1")
    try:
        await open_accounts(c)
        versions_before = await _versions(net)
        statuses = [status for _, status in await run_steps(c)]
        assert [s.result for s in statuses] == [
            T.TX_VALIDATION_CODE_VALID,
            T.TX_VALIDATION_CODE_VALID,
            T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT,
        ]
        assert len({s.block_number for s in statuses}) == 1, "all three in one block"
        assert [s.tx_index for s in statuses] == [0, 1, 2]
        balances = {a: (await c.evaluate("trades", "bank", "balance", a)).payload for a in "ABC"}
        assert balances == {"A": b"15000", "B": b"8000", "C": b"10000"}
        versions_after = await _versions(net)
        block = statuses[0].block_number
        assert versions_after["A"] == (block, 0) != versions_before["A"]
        assert versions_after["B"] == (block, 1) != versions_before["B"]
        assert versions_after["C"] == versions_before["C"]
    finally:
        await c.close()


async def _versions(net) -> dict[str, tuple[int, int]]:
    # peer0.org1 is the gateway peer: CommitStatus answered from its ledger, so it has the block.
    db = sqlite3.connect(net / "nodes" / "peer0.org1" / "data" / "trades.peer.sqlite")
    try:
        rows = db.execute("SELECT key, block_number, tx_index FROM state WHERE namespace='bank'")
        return {k: (b, i) for k, b, i in rows}
    finally:
        db.close()


async def test_transaction_with_only_org1_endorsement_fails_policy(network) -> None:
    net, _ = network()
    c = await GatewayClient.connect(net, "user1.org1")
    try:
        await c.submit_transaction("trades", "bank", "open", "A", "100")
        signed, tx_id = c.proposal("trades", "bank", "deposit", ["A", "50"])
        # Ask only Org1's endorser, directly, and build the transaction by hand.
        endorser = endorser_service_pb2_grpc.EndorserServiceStub(c.channel)
        reply = await endorser.ProcessProposal(
            endorser_service_pb2.ProcessProposalRequest(signed_proposal=signed), timeout=10
        )
        pr = reply.proposal_response
        header_bytes = proposal_pb2.Proposal.FromString(signed.proposal_bytes).header
        tx = T.Transaction(
            proposal_bytes=signed.proposal_bytes,
            response_payload=pr.payload,
            endorsements=[pr.endorsement],
        )
        payload = common_pb2.Payload(header=header_bytes, data=tx.SerializeToString())
        await c.submit(c.envelope(payload.SerializeToString()))
        status = await c.commit_status("trades", tx_id)
        assert status.result == T.TX_VALIDATION_CODE_ENDORSEMENT_POLICY_FAILURE
        assert (await c.evaluate("trades", "bank", "balance", "A")).payload == b"100"
        # The gateway itself refuses to prepare such a transaction.
        signed2, _ = c.proposal("trades", "bank", "deposit", ["A", "50"])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.stub.Endorse(
                G.EndorseRequest(signed_proposal=signed2, endorsing_organizations=["Org1"])
            )
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert reason_of(err.value) == "ENDORSEMENT_POLICY_UNSATISFIABLE"
    finally:
        await c.close()
