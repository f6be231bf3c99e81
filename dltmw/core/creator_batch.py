"""A client's proposals and envelopes signed per batch: one signature per request, not per item.

Why: of the ~6 P-256 verifications and 4 signatures every transaction costs
(benchmarks/RESULTS.md, branch kvcpu), 4 verifications and 2 signatures are over what the
client signs: its proposal (verified by each endorser) and its envelope (verified by the
gateway, and by the other peer at commit). A client under load sends many proposals and many
envelopes in one Transact request, so it signs ONE Merkle root over the proposals and one over
the envelopes of the request (`core/batch_signature.py`, the shared rule); each item carries its
proof (`SignedProposal.batch_proof`, `Envelope.batch_proof`). A node checks the signature over
the root through `Membership.verify`, whose memo answers the batch's other items: about one
verification per batch instead of one per item.

What is accepted stays what was accepted before:
* The leaf is exactly what a lone signature covers: `proposal_bytes`, the envelope's `payload`.
* Each kind has its own batch domain, and neither can pass for a lone signature: a lone
  signature covers bytes every node then parses as a Proposal or Payload, and both domains begin
  with "d" (0x64: field 12 with wire type END_GROUP, which no protobuf parser accepts at the
  start of a message), so a batch's signed bytes presented as a lone item never parse. The two
  domains differ in their text, so a proposal batch's signature cannot pass for an envelope
  batch's, nor either for another kind's ("dltmw/pp/agreement-batch/v1", ...).
* A proof for one position cannot be replayed at another or in a tree of another size
  (`merkle.root_from_path`). tx_id is still SHA-256(nonce || creator): unchanged.
* A batch of one is signed alone (no proof): nothing gained by a tree of one.

Only endorser transactions on channels with `ChannelConfig.creator_batches`, and private
transactions (a payload's hash or a purge) on channels with
`ChannelConfig.private_creator_batches`: nodes of an older release do not know the proofs (or
know them on endorser transactions only) and would record such an envelope invalid where newer
ones recorded it valid, hence a flag per kind. A private peer verified the creator's signature
of every private envelope twice (gateway admission, commit): ~11 % of its CPU at 2 recipients
(benchmarks/RESULTS.md, branch priv3); under a batch, about once per request. Where the flag is
off, and on a config update envelope, a proof fails on every node
(`signed_proposal_data`/`signed_envelope_data` return None): refused at admission with
ERROR_REASON_CREATOR_BATCH_REFUSED, recorded BAD_CREATOR_SIGNATURE in a block.

The client learns the setting from the channels' genesis blocks it already reads
(`client/files.py`); a channel whose flag is turned off later refuses the proofs with that
specific reason, and a client told so signs that channel's items alone from then on
(`client/creator_signing.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core import batch_signature
from dltmw.core.identity import SigningIdentity
from dltmw.v1 import common_pb2, config_pb2, proposal_pb2

PROPOSAL_BATCH_DOMAIN = b"dltmw/proposal-batch/v1"
ENVELOPE_BATCH_DOMAIN = b"dltmw/envelope-batch/v1"
# `creator_batches` of a channel `dltmw init` makes (topology channel key `creator_batches`)
# and of the bench's networks (`dltmw bench --[no-]creator-batches`)
CREATOR_BATCHES = True


def proposal_proof(signed: proposal_pb2.SignedProposal) -> common_pb2.BatchProof | None:
    """The proposal's batch proof, or None when it was signed alone."""
    return signed.batch_proof if signed.HasField("batch_proof") else None


def envelope_proof(envelope: common_pb2.Envelope) -> common_pb2.BatchProof | None:
    """The envelope's batch proof, or None when it was signed alone."""
    return envelope.batch_proof if envelope.HasField("batch_proof") else None


def signed_proposal_data(signed: proposal_pb2.SignedProposal, batches: bool) -> bytes | None:
    """The bytes `signed.signature` must verify over: `proposal_bytes` signed alone, else the
    domain + the root its proof leads to; None when the proof cannot be right (malformed, or
    any proof where the channel takes none: `batches`)."""
    return batch_signature.signed_data(
        signed.proposal_bytes, proposal_proof(signed), batches, PROPOSAL_BATCH_DOMAIN
    )


def takes_proofs(config: config_pb2.ChannelConfig, header_type: int) -> bool:
    """Whether an envelope of `header_type` may carry a batch proof on a channel of `config`:
    endorser transactions where `creator_batches`, private transactions where
    `private_creator_batches`; config updates never (each kind its own flag: see above)."""
    if header_type == common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION:
        return config.creator_batches
    if header_type == common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION:
        return config.private_creator_batches
    return False


def signed_envelope_data(envelope: common_pb2.Envelope, takes: bool) -> bytes | None:
    """As `signed_proposal_data` for an envelope's payload; `takes`: whether its kind may carry
    a proof on its channel (`takes_proofs`): elsewhere it signs alone."""
    return batch_signature.signed_data(
        envelope.payload, envelope_proof(envelope), takes, ENVELOPE_BATCH_DOMAIN
    )


def proof_allowed(envelope: common_pb2.Envelope, takes: bool) -> bool:
    """Whether `envelope` may carry a proof at all (no proof, or a kind its channel takes
    proofs of: `takes_proofs`): the check of an admission that does not verify the signature."""
    return not envelope.HasField("batch_proof") or takes


def _signed(
    signer: SigningIdentity, items: Sequence[bytes], domain: bytes
) -> list[tuple[bytes, common_pb2.BatchProof | None]]:
    """(signature, proof) per item: one signature over all, alone when one (a client keeps no
    memo of its own signatures: no membership)."""
    return [
        (signature, None if proof is None else batch_signature.wire_proof(proof))
        for signature, proof in batch_signature.sign_items(signer, items, domain, batches=True)
    ]


def sign_proposals(
    signer: SigningIdentity, proposals: Sequence[bytes]
) -> list[proposal_pb2.SignedProposal]:
    """SignedProposals of serialised Proposals, signed once for all (alone when one)."""
    return [
        proposal_pb2.SignedProposal(proposal_bytes=b, signature=signature, batch_proof=p)
        for b, (signature, p) in zip(
            proposals, _signed(signer, proposals, PROPOSAL_BATCH_DOMAIN), strict=True
        )
    ]


def sign_envelopes(signer: SigningIdentity, payloads: Sequence[bytes]) -> list[common_pb2.Envelope]:
    """Envelopes of serialised Payloads (endorser or private transactions, of channels that take
    proofs of their kind), signed once for all (alone when one)."""
    return [
        common_pb2.Envelope(payload=b, signature=signature, batch_proof=p)
        for b, (signature, p) in zip(
            payloads, _signed(signer, payloads, ENVELOPE_BATCH_DOMAIN), strict=True
        )
    ]
