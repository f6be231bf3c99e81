"""The batched hot-path RPCs: GatewayService.Transact and EndorserService.ProcessProposals.

Each is driven with raw stream messages (many items per message) and must answer every item
exactly as the unary RPC would: the same results, the same ErrorReason for bad items, while the
stream and the other items go on. The duplicate-tx check, now batched against the ledger, must
still refuse a committed tx_id after a restart.
"""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import (
    batch_pb2,
    endorser_service_pb2,
    endorser_service_pb2_grpc,
    errors_pb2,
    proposal_pb2,
    transaction_pb2,
)
from dltmw.v1 import gateway_service_pb2 as G

pytestmark = pytest.mark.integration
S = grpc.StatusCode
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


def _reason(error: batch_pb2.ItemError) -> str:
    return errors_pb2.ErrorReason.Name(error.reason).removeprefix("ERROR_REASON_")


async def _exchange(call, request, want: int, timeout_s: float = 60.0) -> list:
    """Write one request and read responses until `want` outcomes arrived."""
    await call.write(request)
    outcomes: list = []
    async with asyncio.timeout(timeout_s):
        while len(outcomes) < want:
            response = await call.read()
            assert response is not grpc.aio.EOF, "stream ended early"
            outcomes += [*response.endorsed, *response.submitted, *response.committed]
    return outcomes


async def test_transact_endorse_submit_commit_many_per_message(network) -> None:
    net, _ = network()
    c = await GatewayClient.connect(net, "user1.org1", pipelined=False)
    call = c.stub.Transact()
    try:
        proposals = [c.proposal("trades", "bank", "open", [f"T{i}", "100"]) for i in range(20)]
        endorse = [
            G.EndorseItem(ref=i, request=G.EndorseRequest(signed_proposal=sp))
            for i, (sp, _) in enumerate(proposals)
        ]
        endorsed = await _exchange(call, G.TransactRequest(endorse=endorse), 20)
        assert sorted(o.ref for o in endorsed) == list(range(20))
        assert all(o.HasField("response") for o in endorsed), endorsed
        by_ref = {o.ref: o.response for o in endorsed}
        submit = [
            G.SubmitItem(
                ref=100 + i,
                request=G.SubmitRequest(envelope=c.envelope(by_ref[i].prepared_payload)),
            )
            for i in range(20)
        ]
        outcomes = await _exchange(call, G.TransactRequest(submit=submit), 40)
        accepted = [o for o in outcomes if isinstance(o, G.SubmitOutcome)]
        committed = [o for o in outcomes if isinstance(o, G.CommitOutcome)]
        assert {o.response.tx_id for o in accepted} == {tx_id for _, tx_id in proposals}
        assert sorted(o.ref for o in committed) == [100 + i for i in range(20)]
        assert all(o.status.result == VALID for o in committed), committed
        # The status agrees with the unary CommitStatus (the ledger's record).
        unary = await c.commit_status("trades", proposals[3][1])
        streamed = next(o.status for o in committed if o.ref == 103)
        assert (unary.block_number, unary.tx_index) == (
            streamed.block_number,
            streamed.tx_index,
        )
        balance = await c.evaluate("trades", "bank", "balance", "T7")
        assert balance.payload == b"100"
    finally:
        call.cancel()
        await c.close()


async def test_transact_bad_items_get_their_reasons_and_the_stream_goes_on(network) -> None:
    net, _ = network()
    c = await GatewayClient.connect(net, "user1.org1", pipelined=False)
    org2 = await GatewayClient.connect(net, "user1.org2", gateway="peer0.org1", pipelined=False)
    call = c.stub.Transact()
    try:
        await c.submit_transaction("trades", "bank", "open", "A", "100")
        good, good_tx = c.proposal("trades", "bank", "deposit", ["A", "5"])
        signed, _ = c.proposal("trades", "bank", "deposit", ["A", "1"])
        forged_sig = proposal_pb2.SignedProposal(
            proposal_bytes=signed.proposal_bytes, signature=c.signer.sign(b"other bytes")
        )
        wrong_channel, _ = c.proposal("nochannel", "bank", "deposit", ["A", "1"])
        via_org1_tls, _ = org2.proposal("trades", "bank", "balance", ["A"])
        overdraw, _ = c.proposal("trades", "bank", "withdraw", ["A", "1000000"])
        cases = {
            1: (proposal_pb2.SignedProposal(proposal_bytes=b"\xff\xff"), "MALFORMED"),
            2: (None, "MISSING_FIELD"),
            3: (forged_sig, "BAD_SIGNATURE"),
            4: (wrong_channel, "CHANNEL_NOT_FOUND"),
            5: (via_org1_tls, "TLS_IDENTITY_MISMATCH"),
            6: (overdraw, "CONTRACT_FAILED"),
            7: (good, None),
        }
        items = [
            G.EndorseItem(ref=ref, request=G.EndorseRequest(signed_proposal=sp))
            for ref, (sp, _) in cases.items()
        ]
        outcomes = {o.ref: o for o in await _exchange(call, G.TransactRequest(endorse=items), 7)}
        for ref, (_, reason) in cases.items():
            if reason is None:
                assert outcomes[ref].HasField("response"), outcomes[ref]
            else:
                assert _reason(outcomes[ref].error) == reason, (ref, outcomes[ref])
        # Submit: the good one, a garbage envelope, and a second copy of the good one after it
        # committed (duplicate): each gets its own answer.
        envelope = c.envelope(outcomes[7].response.prepared_payload)
        first = await _exchange(
            call,
            G.TransactRequest(
                submit=[
                    G.SubmitItem(ref=10, request=G.SubmitRequest(envelope=envelope)),
                    G.SubmitItem(ref=11, request=G.SubmitRequest()),
                ]
            ),
            3,
        )
        by_kind = {(type(o).__name__, o.ref): o for o in first}
        assert by_kind[("SubmitOutcome", 10)].response.tx_id == good_tx
        assert by_kind[("CommitOutcome", 10)].status.result == VALID
        assert _reason(by_kind[("SubmitOutcome", 11)].error) == "MISSING_FIELD"
        again = G.SubmitItem(ref=12, request=G.SubmitRequest(envelope=envelope))
        (dup,) = await _exchange(call, G.TransactRequest(submit=[again]), 1)
        assert isinstance(dup, G.SubmitOutcome) and _reason(dup.error) == "DUPLICATE_TX_ID"
        assert (await c.evaluate("trades", "bank", "balance", "A")).payload == b"105"
    finally:
        call.cancel()
        await c.close()
        await org2.close()


async def test_pipelined_client_raises_what_the_unary_call_raises(network) -> None:
    net, _ = network()
    c = await GatewayClient.connect(net, "user1.org1", pipelined=True)
    try:
        done = await asyncio.gather(
            *(c.submit_transaction("trades", "kv", "put", f"k{i}", "v") for i in range(30))
        )
        assert all(d.status.result == VALID for d in done)
        assert len({d.tx_id for d in done}) == 30
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.submit_transaction("trades", "bank", "withdraw", "nobody", "5")
        assert err.value.code() == S.FAILED_PRECONDITION  # the contract's 404: NOT_FOUND
        assert reason_of(err.value) == "NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.submit_transaction("nochannel", "kv", "put", "k", "v")
        assert err.value.code() == S.FAILED_PRECONDITION
        assert reason_of(err.value) == "CHANNEL_NOT_FOUND"
    finally:
        await c.close()


async def test_process_proposals_batches_in_order_with_item_errors(network) -> None:
    net, _ = network()
    c = await GatewayClient.connect(net, "user1.org1", pipelined=False)
    endorser = endorser_service_pb2_grpc.EndorserServiceStub(c.channel)
    call = endorser.ProcessProposals()
    try:
        ok = [c.proposal("trades", "kv", "put", [f"p{i}", "x"])[0] for i in range(5)]
        garbage = proposal_pb2.SignedProposal(proposal_bytes=b"\xff\xff\xff", signature=b"x")
        wrong, _ = c.proposal("nochannel", "kv", "put", ["k", "v"])
        batch = [ok[0], garbage, ok[1], wrong, *ok[2:]]
        await call.write(endorser_service_pb2.ProcessProposalsRequest(signed_proposals=batch))
        await call.write(endorser_service_pb2.ProcessProposalsRequest(signed_proposals=ok[:1]))
        first, second = await call.read(), await call.read()
        kinds = [o.WhichOneof("outcome") for o in first.outcomes]
        assert (
            kinds
            == ["proposal_response", "error", "proposal_response", "error"]
            + ["proposal_response"] * 3
        )
        assert _reason(first.outcomes[1].error) == "MALFORMED"
        assert _reason(first.outcomes[3].error) == "CHANNEL_NOT_FOUND"
        responses = [o.proposal_response for o in first.outcomes if o.HasField("proposal_response")]
        assert all(r.response.status == 200 and r.endorsement.signature for r in responses)
        # Each response answers its own proposal, in order.
        payloads = [proposal_pb2.ProposalResponsePayload.FromString(r.payload) for r in responses]
        hashes = [p.proposal_hash for p in payloads]
        assert hashes == [hashlib.sha256(sp.proposal_bytes).digest() for sp in ok]
        assert len(second.outcomes) == 1 and second.outcomes[0].HasField("proposal_response")
    finally:
        call.cancel()
        await c.close()


async def test_duplicate_tx_id_refused_after_restart(network) -> None:
    net, sup = network()
    c = await GatewayClient.connect(net, "user1.org1", pipelined=False)
    try:
        signed, tx_id = c.proposal("trades", "kv", "put", ["d", "1"])
        endorsed = await c.endorse(signed)
        await c.submit(c.envelope(endorsed.prepared_payload))
        assert (await c.commit_status("trades", tx_id)).result == VALID
    finally:
        await c.close()
    sup.stop("peer0.org1")
    sup.start("peer0.org1")
    sup.wait_ready("peer0.org1")
    c = await GatewayClient.connect(net, "user1.org1", pipelined=False)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.stub.Endorse(G.EndorseRequest(signed_proposal=signed), timeout=30)
        assert err.value.code() == S.ALREADY_EXISTS
        assert reason_of(err.value) == "DUPLICATE_TX_ID"
        call = c.stub.Transact()
        try:
            item = G.EndorseItem(ref=1, request=G.EndorseRequest(signed_proposal=signed))
            (outcome,) = await _exchange(call, G.TransactRequest(endorse=[item]), 1)
            assert _reason(outcome.error) == "DUPLICATE_TX_ID"
        finally:
            call.cancel()
    finally:
        await c.close()
