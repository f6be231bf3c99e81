"""Bad input to every public RPC gets a specific status, changes nothing, and the node serves on."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    common_pb2,
    endorser_service_pb2,
    endorser_service_pb2_grpc,
    errors_pb2,
    orderer_service_pb2,
    orderer_service_pb2_grpc,
    proposal_pb2,
    transaction_pb2,
)
from dltmw.v1 import gateway_service_pb2 as G

from .forged_envelopes import forged_envelope_from_a_member_peer, tls_channel

pytestmark = pytest.mark.integration
S = grpc.StatusCode


async def _fails(call, code: grpc.StatusCode, reason: str | None = None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    if reason is not None:
        assert reason_of(err.value) == reason, err.value.details()


def _resigned(c: GatewayClient, signed: proposal_pb2.SignedProposal) -> proposal_pb2.SignedProposal:
    return proposal_pb2.SignedProposal(
        proposal_bytes=signed.proposal_bytes, signature=c.signer.sign(b"something else")
    )


async def test_bad_input_to_every_rpc(network) -> None:
    net, _ = network()
    c = await GatewayClient.connect(net, "user1.org1")
    other = await GatewayClient.connect(net, "user1.org2", gateway="peer0.org1")
    try:
        await c.submit_transaction("trades", "bank", "open", "A", "100")
        gw = c.stub
        endorser = endorser_service_pb2_grpc.EndorserServiceStub(c.channel)
        admin = admin_service_pb2_grpc.AdminServiceStub(c.channel)
        signed, _ = c.proposal("trades", "bank", "deposit", ["A", "1"])
        garbage = proposal_pb2.SignedProposal(proposal_bytes=b"\xff\xff\xff", signature=b"x")
        # Evaluate / Endorse / ProcessProposal: malformed, missing, bad signature, wrong channel.
        for rpc, make in [
            (gw.Evaluate, lambda sp: G.EvaluateRequest(signed_proposal=sp)),
            (gw.Endorse, lambda sp: G.EndorseRequest(signed_proposal=sp)),
            (
                endorser.ProcessProposal,
                lambda sp: endorser_service_pb2.ProcessProposalRequest(signed_proposal=sp),
            ),
        ]:
            await _fails(rpc(make(garbage)), S.INVALID_ARGUMENT, "MALFORMED")
            await _fails(rpc(make(None)), S.INVALID_ARGUMENT, "MISSING_FIELD")
            await _fails(rpc(make(_resigned(c, signed))), S.PERMISSION_DENIED, "BAD_SIGNATURE")
            unsigned = proposal_pb2.SignedProposal(proposal_bytes=signed.proposal_bytes)
            await _fails(rpc(make(unsigned)), S.PERMISSION_DENIED, "BAD_SIGNATURE")
            wrong, _ = c.proposal("nochannel", "bank", "deposit", ["A", "1"])
            await _fails(rpc(make(wrong)), S.FAILED_PRECONDITION, "CHANNEL_NOT_FOUND")
        # A creator of Org2 over Org1's TLS connection: the TLS identity must match the signer.
        signed_org2, _ = other.proposal("trades", "bank", "balance", ["A"])
        forged = proposal_pb2.SignedProposal(
            proposal_bytes=signed_org2.proposal_bytes, signature=signed_org2.signature
        )
        await _fails(
            gw.Evaluate(G.EvaluateRequest(signed_proposal=forged)),
            S.PERMISSION_DENIED,
            "TLS_IDENTITY_MISMATCH",
        )
        # Oversize message.
        big, _ = c.proposal("trades", "kv", "put", ["k", b"x" * (5 * 1024 * 1024)])
        await _fails(gw.Evaluate(G.EvaluateRequest(signed_proposal=big)), S.RESOURCE_EXHAUSTED)
        # Contract refusal and unknown contract.
        over, _ = c.proposal("trades", "bank", "withdraw", ["A", "1000"])
        await _fails(
            gw.Endorse(G.EndorseRequest(signed_proposal=over)), S.ABORTED, "CONTRACT_FAILED"
        )
        nocontract, _ = c.proposal("trades", "nope", "f", [])
        await _fails(
            gw.Evaluate(G.EvaluateRequest(signed_proposal=nocontract)),
            S.FAILED_PRECONDITION,
            "CONTRACT_NOT_FOUND",
        )
        # Submit: missing, malformed, bad signature, replayed tx_id.
        await _fails(gw.Submit(G.SubmitRequest()), S.INVALID_ARGUMENT, "MISSING_FIELD")
        await _fails(
            gw.Submit(G.SubmitRequest(envelope=common_pb2.Envelope(payload=b"\xff\xff"))),
            S.INVALID_ARGUMENT,
            "MALFORMED",
        )
        good, tx_id = c.proposal("trades", "bank", "deposit", ["A", "5"])
        endorsed = await c.endorse(good)
        envelope = c.envelope(endorsed.prepared_payload)
        tampered = common_pb2.Envelope(payload=envelope.payload, signature=envelope.signature[:-2])
        await _fails(
            gw.Submit(G.SubmitRequest(envelope=tampered)), S.PERMISSION_DENIED, "BAD_SIGNATURE"
        )
        await c.submit(envelope)
        assert (await c.commit_status("trades", tx_id)).result == 1
        await _fails(
            gw.Submit(G.SubmitRequest(envelope=envelope)), S.ALREADY_EXISTS, "DUPLICATE_TX_ID"
        )
        await _fails(
            gw.Endorse(G.EndorseRequest(signed_proposal=good)), S.ALREADY_EXISTS, "DUPLICATE_TX_ID"
        )
        # CommitStatus / Events: missing, malformed, bad signature.
        for rpc, req in [(gw.CommitStatus, G.CommitStatusRequest), (gw.Events, G.EventsRequest)]:
            await _fails(_first(rpc(req())), S.INVALID_ARGUMENT, "MISSING_FIELD")
            await _fails(_first(rpc(req(query=b"\xff\xff"))), S.INVALID_ARGUMENT, "MALFORMED")
        query, _sig = c.signed_query(G.CommitStatusQuery(channel_id="trades", tx_id=tx_id))
        await _fails(
            gw.CommitStatus(G.CommitStatusRequest(query=query, signature=b"bad")),
            S.PERMISSION_DENIED,
            "BAD_SIGNATURE",
        )
        # Admin: a client (not admin) cannot join a channel; garbage is malformed.
        cmd, sig = c.signed_query(admin_service_pb2.JoinChannelCommand(config_block=b"x"))
        await _fails(
            admin.JoinChannel(admin_service_pb2.JoinChannelRequest(command=cmd, signature=sig)),
            S.PERMISSION_DENIED,
            "NOT_AUTHORIZED",
        )
        await _fails(
            admin.NodeStatus(admin_service_pb2.NodeStatusRequest(query=b"\xff")),
            S.INVALID_ARGUMENT,
            "MALFORMED",
        )
        q, sig = c.signed_query(admin_service_pb2.NodeStatusQuery())
        status = await admin.NodeStatus(admin_service_pb2.NodeStatusRequest(query=q, signature=sig))
        assert status.node_id == "peer0.org1"
        # Orderer Deliver with an unsigned request.
        seek = orderer_service_pb2.SeekInfo(channel_id="trades", requester=c.signer.identity_bytes)
        orderer_channel = tls_channel(net, net / "clients" / "user1.org1")
        deliver = orderer_service_pb2_grpc.OrdererServiceStub(orderer_channel)
        await _fails(
            _first(
                deliver.Deliver(
                    orderer_service_pb2.DeliverRequest(seek_info=seek.SerializeToString())
                )
            ),
            S.INVALID_ARGUMENT,
            "MISSING_FIELD",
        )
        await orderer_channel.close()
        # Nothing changed, and the node still serves.
        assert (await c.evaluate("trades", "bank", "balance", "A")).payload == b"105"
        done = await c.submit_transaction("trades", "bank", "deposit", "A", "1")
        assert done.status.result == 1
    finally:
        await c.close()
        await other.close()


async def _first(stream_or_call):
    if hasattr(stream_or_call, "__aiter__"):
        async for item in stream_or_call:
            return item
        return None
    return await stream_or_call


async def test_broadcast_refuses_bad_envelopes_one_by_one(network) -> None:
    net, _ = network()
    c = await GatewayClient.connect(net, "user1.org1")
    orderer_channel = tls_channel(net, net / "clients" / "user1.org1")
    try:
        good, tx_id = c.proposal("trades", "kv", "put", ["bk", "v"])
        envelope = c.envelope((await c.endorse(good)).prepared_payload)
        unsigned = common_pb2.Envelope(payload=envelope.payload)
        stub = orderer_service_pb2_grpc.OrdererServiceStub(orderer_channel)
        call = stub.Broadcast()
        await call.write(
            orderer_service_pb2.BroadcastRequest(
                envelopes=[b"\xff\xff", unsigned.SerializeToString(), envelope.SerializeToString()]
            )
        )
        response = await call.read()
        await call.done_writing()
        got = [(r.accepted, errors_pb2.ErrorReason.Name(r.reason)) for r in response.results]
        assert got == [
            (False, "ERROR_REASON_MALFORMED"),
            (False, "ERROR_REASON_BAD_SIGNATURE"),
            (True, "ERROR_REASON_UNSPECIFIED"),
        ]
        assert response.results[2].tx_id == tx_id
        assert (await c.commit_status("trades", tx_id)).result == 1
        assert (await c.evaluate("trades", "kv", "get", "bk")).payload == b"v"
    finally:
        await orderer_channel.close()
        await c.close()


async def test_a_member_peer_s_forged_envelope_is_ordered_invalid_and_squats_no_tx_id(
    network,
) -> None:
    """A solo orderer does not verify again the creator signature of what a member peer's
    gateway forwards (`rpc/forwarder.py`): from a peer node's TLS identity, an envelope whose
    signature does not verify is ordered, every peer records it BAD_CREATOR_SIGNATURE and
    executes nothing, and the real envelope with the same tx_id then commits VALID. From a
    client's TLS identity the orderer still refuses it."""
    from .ledgers import VALID

    net, _ = network()
    c, tx_id = await forged_envelope_from_a_member_peer(net)
    try:
        assert (await c.evaluate("trades", "kv", "get", "fk")).payload == b"v"
        # Events report the forged envelope without the tx_id it claims (its signature never
        # verified), and the real one with it (BlockMetadata.unauthenticated)
        bad = transaction_pb2.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE
        reported: list[tuple[str, int]] = []
        async with asyncio.timeout(20):
            async for block in c.events("trades"):
                reported += [(t.tx_id, t.validation_code) for t in block.transactions]
                if (tx_id, VALID) in reported:
                    break
        assert ("", bad) in reported and (tx_id, bad) not in reported
    finally:
        await c.close()
