"""Commit proofs from real peers (issue 19 items 1-2): a client fetches a proof from the peers of
both organisations, a light client built from the channel's config blocks (fetched from a peer,
block 0 checked against the genesis file) verifies it, and forged proofs are refused."""

from __future__ import annotations

import grpc
import pytest

from dltmw.aio.clock import utc_now
from dltmw.client import GatewayClient
from dltmw.client.crosschain import fetch_commit_proof, fetch_config_blocks, follow_config
from dltmw.core.block import block_hash
from dltmw.core.commit_proof import ProofError, verify_proof
from dltmw.core.light_client import track
from dltmw.rpc.status import reason_of
from dltmw.v1 import block_pb2, crosschain_pb2, crosschain_pb2_grpc, transaction_pb2

from .conftest import TWO_ORG

pytestmark = pytest.mark.integration
CH = "trades"


async def test_a_proof_from_both_peers_verifies_and_forgeries_do_not(network) -> None:
    net, _ = network(TWO_ORG, batch_ms=50)
    org1 = await GatewayClient.connect(net, "user1.org1", gateway="peer0.org1")
    org2 = await GatewayClient.connect(net, "user1.org1", gateway="peer0.org2")
    try:
        done = await org1.submit_transaction(CH, "kv", "put", "proof-key", "v")
        peers = [("peer0.org1", org1.channel), ("peer0.org2", org2.channel)]
        proof = await fetch_commit_proof(peers, CH, done.tx_id)
        assert len(proof.attestations) == 2

        blocks = await fetch_config_blocks("peer0.org2", org2.channel, CH, 0)
        genesis = block_pb2.Block.FromString((net / "channels" / f"{CH}.block").read_bytes())
        assert block_hash(blocks[0]) == block_hash(genesis)  # the agreed trust root
        client = await follow_config(track(blocks[0]), "peer0.org1", org1.channel, utc_now())
        proven = verify_proof(proof, client, utc_now())
        assert proven.code == transaction_pb2.TX_VALIDATION_CODE_VALID
        assert proven.block_number == done.status.block_number

        # One organisation's word is not enough (default policy: a majority of the two).
        alone = await fetch_commit_proof(peers[:1], CH, done.tx_id)
        with pytest.raises(ProofError) as err:
            verify_proof(alone, client, utc_now())
        assert err.value.reason_name == "PROOF_ATTESTATION_INVALID"
        # The envelope of another transaction with this one's path and attestations.
        other = await org1.submit_transaction(CH, "kv", "put", "proof-key-2", "w")
        swapped = crosschain_pb2.CommitProof()
        swapped.CopyFrom(proof)
        swapped.envelope = (await fetch_commit_proof(peers, CH, other.tx_id)).envelope
        with pytest.raises(ProofError) as err:
            verify_proof(swapped, client, utc_now())
        assert err.value.reason_name == "PROOF_INCLUSION_INVALID"

        stub = crosschain_pb2_grpc.CrossChainServiceStub(org1.channel)
        with pytest.raises(grpc.aio.AioRpcError) as rpc_err:
            await stub.GetCommitProof(
                crosschain_pb2.GetCommitProofRequest(channel_id=CH, tx_id="0" * 64)
            )
        assert rpc_err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(rpc_err.value) == "PROOF_UNAVAILABLE"
    finally:
        await org1.close()
        await org2.close()
