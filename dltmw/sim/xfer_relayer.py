"""The byzantine relayer of the `xfer` scenario: forged and mismatched commit proofs.

Each kind takes a genuine proof (one the relayer saw committed) and breaks exactly one thing,
so the contract must refuse it with that thing's reason (docs/cross-channel.md); `fabricated`
is a whole proof the relayer made up (its own block, its own signatures) claiming the other
channel wrote the record it needs. `replay` presents a genuine proof unchanged, to any transfer:
it may be the right one (anyone may claim), and then it must do only what the honest
coordinator would. The negative control (`AnyProofTransfer`) is the contract believing any
proof: the atomicity checker, not the reason checker, must catch it.
"""

from __future__ import annotations

import json
import random

from google.protobuf.message import DecodeError

from dltmw.contracts.transfer import TransferContract
from dltmw.core.block import block_hash, header_block_hash, make_block
from dltmw.core.commit_proof import attest, build_proof
from dltmw.core.contract import ContractError
from dltmw.core.hashing import sha256
from dltmw.core.identity import SigningIdentity
from dltmw.sim.xfer_world import VALID, envelope, material
from dltmw.v1 import common_pb2, crosschain_pb2, proposal_pb2, rwset_pb2, transaction_pb2

# kind -> the reason the contract must give (None: a genuine proof, no fixed verdict)
KINDS: dict[str, str | None] = {
    "replay": None,
    "wrong_signer": "PROOF_BAD_ORDERER_SIGNATURE",
    "too_few_signatures": "PROOF_ORDERER_QUORUM",
    "wrong_path": "PROOF_INCLUSION_INVALID",
    "too_few_attestations": "PROOF_ATTESTATION_INVALID",
    "other_channel": "PROOF_WRONG_CHANNEL",
    "other_transfer": "PROOF_MISMATCH",
    "fabricated": "PROOF_BAD_ORDERER_SIGNATURE",
}


def wrong_signer(
    proof: crosschain_pb2.CommitProof, rng: random.Random
) -> crosschain_pb2.CommitProof:
    """An orderer signature replaced by the outsider's (as itself, or posing as the orderer)."""
    forged = crosschain_pb2.CommitProof()
    forged.CopyFrom(proof)
    outsider = material().outsider
    sig = forged.orderer_signatures[0]
    if rng.random() < 0.5:
        sig.signer = outsider.identity_bytes
    sig.signature = outsider.sign(header_block_hash(forged.header))
    return forged


def too_few_signatures(proof: crosschain_pb2.CommitProof) -> crosschain_pb2.CommitProof:
    """One orderer signature fewer than the channel needs (PBFT-lite: 2 of 4; solo: none)."""
    forged = crosschain_pb2.CommitProof()
    forged.CopyFrom(proof)
    del forged.orderer_signatures[len(forged.orderer_signatures) - 1 :]
    return forged


def wrong_path(proof: crosschain_pb2.CommitProof, rng: random.Random) -> crosschain_pb2.CommitProof:
    """The inclusion path bent: a node flipped, or a sibling made up for a one-tx block."""
    forged = crosschain_pb2.CommitProof()
    forged.CopyFrom(proof)
    if forged.inclusion_path and rng.random() < 0.7:
        i = rng.randrange(len(forged.inclusion_path))
        node = bytearray(forged.inclusion_path[i])
        node[rng.randrange(len(node))] ^= 0x01
        forged.inclusion_path[i] = bytes(node)
    else:
        forged.tx_count += 1
        forged.tx_index = forged.tx_count - 1
        forged.inclusion_path.append(sha256(b"made up sibling"))
    return forged


def too_few_attestations(proof: crosschain_pb2.CommitProof) -> crosschain_pb2.CommitProof:
    """One peer's attestation only (the policy needs a majority of the organisations)."""
    forged = crosschain_pb2.CommitProof()
    forged.CopyFrom(proof)
    del forged.attestations[1:]
    return forged


def fabricated(channel_id: str, number: int, transfer_id: str, state: str) -> bytes:
    """A proof made up by the relayer: its own block, in which `channel_id` writes the record
    of `transfer_id` as `state`, signed and attested by the relayer's own key."""
    record = {"channel": channel_id, "id": transfer_id, "state": state, state + "_tx": "x"}
    rwset = rwset_pb2.ReadWriteSet(
        namespace="xfer",
        writes=[rwset_pb2.KVWrite(key="t/" + transfer_id, value=json.dumps(record).encode())],
    )
    result = proposal_pb2.ProposalResponsePayload(
        rwset=rwset, response=proposal_pb2.ContractResponse(status=200)
    )
    env = envelope(channel_id, "forged-" + transfer_id[:16], result)
    block = make_block(channel_id, number, sha256(b"some parent"), [env])
    outsider: SigningIdentity = material().outsider
    block.metadata.signatures.add(
        signer=outsider.identity_bytes, signature=outsider.sign(block_hash(block))
    )
    proof = build_proof(block, 0, VALID)
    proof.attestations.append(attest(outsider, block, 0, VALID))
    return proof.SerializeToString()


def _written(envelope_bytes: bytes, key: str) -> bytes | None:
    """The value an endorser transaction envelope writes to `key` (no check of anything)."""
    try:
        payload = common_pb2.Payload.FromString(
            common_pb2.Envelope.FromString(envelope_bytes).payload
        )
        tx = transaction_pb2.Transaction.FromString(payload.data)
        result = proposal_pb2.ProposalResponsePayload.FromString(tx.response_payload)
    except DecodeError:
        return None
    return next((w.value for w in result.rwset.writes if w.key == key), None)


class AnyProofTransfer(TransferContract):
    """Negative control: `xfer` believing whatever record a proof's envelope writes, without
    checking signatures, path, attestations, channel or transfer."""

    def _proven_state(
        self, ctx: object, terms: bytes, transfer_id: str, other: str, proof: bytes, ts: int
    ) -> str:
        try:
            parsed = crosschain_pb2.CommitProof.FromString(proof)
        except DecodeError as exc:
            raise ContractError("MALFORMED: proof does not parse", 400) from exc
        value = _written(parsed.envelope, "t/" + transfer_id)
        if value is None:
            raise ContractError("PROOF_MISMATCH: writes no record of this transfer", 400)
        return str(json.loads(value).get("state"))
