"""A client's proposals and envelopes signed per Transact request (core/creator_batch.py), on
real node processes: a channel with `creator_batches` commits a client's batch-signed
transactions VALID on every peer, its blocks carry the proofs; a forged proof is refused with
its specific reason and nothing is stored; a channel without the flag refuses any proof, and the
SDK then signs that channel's items alone. The embedding SDK's `Client` (whose profile reads no
genesis block) presumes proofs are taken, signs per request where they are, learns the refusals
once for all its gateway connections, and a step repeated on another gateway (re-signed, same tx
id) is read as already submitted, never applied twice.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.core import creator_batch
from dltmw.rpc.status import reason_of
from dltmw.sdk import errors as sdk_errors
from dltmw.sdk.client import Client
from dltmw.sdk.profile import Profile
from dltmw.v1 import common_pb2, transaction_pb2
from tests.integration.conftest import TWO_ORG

from .ledgers import blocks, ledger_path, tx_codes, wait_until

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
PEERS = ("peer0.org1", "peer0.org2")
# "trades" takes batch proofs; "plain" (the same members, AND policy) does not
TOPOLOGY = TWO_ORG.replace(
    'endorsement_policy = "AND(Org1.peer, Org2.peer)"\n',
    'endorsement_policy = "AND(Org1.peer, Org2.peer)"\ncreator_batches = true\n',
) + (
    """
[[channels]]
id = "plain"
members = ["Org1", "Org2"]
orderers = ["orderer0"]
endorsement_policy = "AND(Org1.peer, Org2.peer)"
creator_batches = false
contracts = [{ name = "bank" }]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = BATCH_MS }
"""
)


def _envelopes(net, node: str, channel: str) -> dict[str, common_pb2.Envelope]:
    """tx_id -> the envelope as stored in `node`'s ledger of `channel`."""
    out = {}
    for block in blocks(ledger_path(net, node, channel))[1:]:
        for raw in block.data.envelopes:
            env = common_pb2.Envelope.FromString(raw)
            payload = common_pb2.Payload.FromString(env.payload)
            out[common_pb2.Header.FromString(payload.header).tx_id] = env
    return out


async def test_batch_signed_transactions_commit_valid_everywhere_and_forgeries_are_refused(
    network,
) -> None:
    net, _ = network(TOPOLOGY)
    async with await GatewayClient.connect(net, "user1.org1") as client:
        assert client.signing.batches_on("trades") and not client.signing.batches_on("plain")
        done = await asyncio.gather(
            *(
                client.submit_transaction("trades", "bank", "open", f"A{i}", "100")
                for i in range(40)
            )
        )
        assert all(d.status.result == VALID for d in done), [d.status for d in done]
        assert client.signing.batches >= 2  # proposals and envelopes went signed per request
        tx_ids = {d.tx_id for d in done}

        for peer in PEERS:  # every peer committed every one VALID; the blocks carry proofs
            await wait_until(
                lambda p=peer: tx_ids <= set(_envelopes(net, p, "trades")), 30, f"{peer} commits"
            )
            codes = tx_codes(blocks(ledger_path(net, peer, "trades")))
            assert all(codes[t] == [VALID] for t in tx_ids), peer
            envelopes = _envelopes(net, peer, "trades")
            proved = [t for t in tx_ids if envelopes[t].HasField("batch_proof")]
            assert len(proved) > len(tx_ids) // 2, (peer, len(proved))

        # A forged proof: a genuine batch signature with another position's proof.
        p1, t1 = client.proposal_bytes("trades", "bank", "open", ["F1", "1"])
        p2, _ = client.proposal_bytes("trades", "bank", "open", ["F2", "1"])
        e1 = await client.endorse(client.signing.proposal(p1))
        e2 = await client.endorse(client.signing.proposal(p2))
        sealed = creator_batch.sign_envelopes(
            client.signer, [e1.prepared_payload, e2.prepared_payload]
        )
        forged = common_pb2.Envelope()
        forged.CopyFrom(sealed[0])
        forged.batch_proof.leaf_index = 1  # the other leaf's position: another root
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.submit(forged)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(refused.value) == "BAD_SIGNATURE"
        malformed = common_pb2.Envelope()
        malformed.CopyFrom(sealed[0])
        malformed.batch_proof.path.append(bytes(32))  # one sibling too many
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.submit(malformed)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(refused.value) == "CREATOR_BATCH_REFUSED"
        # ...nothing stored: a later transaction commits, the forged one is in no block
        later = await client.submit_transaction("trades", "bank", "open", "B", "1")
        assert later.status.result == VALID
        for peer in PEERS:
            await wait_until(
                lambda p=peer: later.tx_id in _envelopes(net, p, "trades"), 30, f"{peer} later"
            )
            assert t1 not in _envelopes(net, peer, "trades")


async def test_a_channel_without_the_flag_refuses_proofs_and_the_sdk_signs_alone(
    network,
) -> None:
    net, _ = network(TOPOLOGY)
    async with await GatewayClient.connect(net, "user1.org1") as client:
        # A proposal with a proof on "plain": refused at the boundary, with its reason.
        items = [client.proposal_bytes("plain", "bank", "open", [f"P{i}", "1"]) for i in (0, 1)]
        signed = creator_batch.sign_proposals(client.signer, [p for p, _ in items])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.endorse(signed[0])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(refused.value) == "CREATOR_BATCH_REFUSED"
        # An envelope with a proof: refused at the gateway (nothing ordered)
        endorsed = [await client.endorse(client.signing.proposal(p)) for p, _ in items]
        sealed = creator_batch.sign_envelopes(client.signer, [e.prepared_payload for e in endorsed])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.submit(sealed[0])
        assert reason_of(refused.value) == "CREATOR_BATCH_REFUSED"
        # A client that believes the channel takes proofs (its flag turned off since): told
        # so, it signs alone from then on and its transactions commit.
        client.signing._batched.add("plain")
        done = await asyncio.gather(
            *(client.submit_transaction("plain", "bank", "open", f"Q{i}", "1") for i in range(10))
        )
        assert all(d.status.result == VALID for d in done)
        assert not client.signing.batches_on("plain")
        for peer in PEERS:
            await wait_until(
                lambda p=peer: {d.tx_id for d in done} <= set(_envelopes(net, p, "plain")),
                30,
                f"{peer} commits",
            )
            envelopes = _envelopes(net, peer, "plain")
            assert not any(e.HasField("batch_proof") for e in envelopes.values())
            assert items[0][1] not in envelopes and items[1][1] not in envelopes


async def test_the_sdk_client_signs_per_request_and_learns_refusing_channels(network) -> None:
    net, _ = network(TOPOLOGY)
    async with Client(Profile.from_network(net, "user1.org1"), deadline_s=60) as client:
        done = await asyncio.gather(
            *(client.submit("trades", "bank", "open", f"S{i}", "100") for i in range(40))
        )
        assert client.signing.batches >= 2, client.signing.batches  # a root per request
        assert client.signing.batched_items >= 20, client.signing.batched_items
        trades = {d.tx_id for d in done}
        # A channel without the flag: the presumed proofs are refused, the items sent again
        # signed alone, and the channel remembered by the signer every connection shares.
        plain = await asyncio.gather(
            *(client.submit("plain", "bank", "open", f"R{i}", "1") for i in range(10))
        )
        assert not client.signing.batches_on("plain") and client.signing.batches_on("trades")
        await client._fail_over(client._gateway)  # (what an Unavailable answer does)
        again = await client.submit("plain", "bank", "open", "R-after", "1")
        assert client._gateway is not None and client._gateway.signing is client.signing
        plain_ids = {d.tx_id for d in plain} | {again.tx_id}

        # A step repeated on another gateway after the first took it (a fail-over): the same
        # payload signed again. Read as already submitted; the ledger holds the tx once.
        first = client._gateway
        proposal, tx_id = first.proposal_bytes("trades", "bank", "open", ["Twice", "5"])
        endorsed = await first.endorse_batched("trades", proposal)
        status = await first.order_batched("trades", tx_id, endorsed.prepared_payload)
        assert status.result == VALID
        async with await GatewayClient.connect(net, "user1.org1", "peer0.org2") as other:
            # the other gateway's peer has committed it too (else the race is with its commit)
            assert (await other.commit_status("trades", tx_id)).block_number == status.block_number
            with pytest.raises(grpc.aio.AioRpcError) as repeated:
                await other.order_batched("trades", tx_id, endorsed.prepared_payload)
            assert isinstance(sdk_errors.from_rpc_error(repeated.value), sdk_errors.AlreadyExists)

    for peer in PEERS:
        await wait_until(
            lambda p=peer: (
                (trades | {tx_id}) <= set(_envelopes(net, p, "trades"))
                and plain_ids <= set(_envelopes(net, p, "plain"))
            ),
            30,
            f"{peer} commits",
        )
        codes = tx_codes(blocks(ledger_path(net, peer, "trades")))
        assert all(codes[t] == [VALID] for t in trades | {tx_id}), peer  # once each
        envelopes = _envelopes(net, peer, "trades")
        assert len([t for t in trades if envelopes[t].HasField("batch_proof")]) > len(trades) // 2
        plain_codes = tx_codes(blocks(ledger_path(net, peer, "plain")))
        assert all(plain_codes[t] == [VALID] for t in plain_ids), peer
        assert not any(e.HasField("batch_proof") for e in _envelopes(net, peer, "plain").values())
