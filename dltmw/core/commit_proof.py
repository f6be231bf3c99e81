"""Commit proofs: that one transaction committed on a channel with a given validation code.

A proof (`CommitProof`, protos/dltmw/v1/crosschain.proto) is checked by `verify_proof` against a
light client of the proof's channel (`core/light_client.py`), in this order, each failure with
its own reason:

1. the header names the tracked channel (PROOF_WRONG_CHANNEL);
2. the orderer signatures over the block hash are valid signatures of orderers configured at
   that height, and enough of them (PROOF_BAD_ORDERER_SIGNATURE, PROOF_ORDERER_QUORUM): the block
   is one the channel's ordering service produced;
3. the inclusion path leads from SHA-256(envelope) at `tx_index` to the header's tx_root, which
   the block hash covers (PROOF_INCLUSION_INVALID): the envelope is in that block;
4. the peer attestations sign exactly (channel, block number, block hash, tx_index, envelope
   hash, code), each by a peer named in the config at that height, and together satisfy the
   channel's `commit_proof_policy` (PROOF_ATTESTATION_INVALID).

Why attestations: the orderer orders bytes, it never learns validation codes; each peer computes
them, deterministically from the ordered chain. A verifier without the chain cannot recompute a
code, so it relies on peers that did: the trust assumption is that the peers meeting the policy
do not all lie about one transaction (docs/cross-channel.md). The position is bound by the
attestation (signed over index and envelope hash); the path proves membership in the tree.

What the proven transaction says (a lock of which transfer, for which terms) is the caller's
question: `verify_proof` returns the `Proven` facts and the caller refuses a proof of anything
else with PROOF_MISMATCH (`expect`). Pure: `at` (when certificates are judged) is an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import DecodeError

from dltmw.core import policy as policy_mod
from dltmw.core.block import header_block_hash
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError
from dltmw.core.hashing import sha256
from dltmw.core.identity import IdentityError, SigningIdentity
from dltmw.core.light_client import LightClient, check_orderer_quorum
from dltmw.core.merkle import PATH_MAX, inclusion_path, root_from_path
from dltmw.v1 import block_pb2, crosschain_pb2, errors_pb2, identity_pb2

R = errors_pb2
ATTESTATIONS_MAX = 64  # each costs a signature check
ORDERER_SIGNATURES_MAX = 64


class ProofError(ClientError):
    """A commit proof refused; `reason` says which check failed."""


@dataclass(frozen=True)
class Proven:
    """What a verified proof establishes."""

    channel_id: str
    block_number: int
    tx_index: int
    envelope: bytes
    code: int


def attestation_content(
    channel_id: str, number: int, digest: bytes, tx_index: int, envelope: bytes, code: int
) -> bytes:
    """The bytes a peer signs to attest `code` for the envelope at `tx_index` of block
    `number` (hash `digest`)."""
    return crosschain_pb2.CommitAttestationContent(
        channel_id=channel_id,
        block_number=number,
        block_hash=digest,
        tx_index=tx_index,
        envelope_hash=sha256(envelope),
        code=code,  # type: ignore[arg-type]
    ).SerializeToString()


def attest(
    peer: SigningIdentity, block: block_pb2.Block, tx_index: int, code: int
) -> crosschain_pb2.CommitAttestation:
    """`peer`'s attestation that the envelope at `tx_index` of `block` committed as `code`."""
    h = block.header
    content = attestation_content(
        h.channel_id, h.number, header_block_hash(h), tx_index, block.data.envelopes[tx_index], code
    )
    return crosschain_pb2.CommitAttestation(
        content=content,
        signature=identity_pb2.Signature(signer=peer.identity_bytes, signature=peer.sign(content)),
    )


def build_proof(block: block_pb2.Block, tx_index: int, code: int) -> crosschain_pb2.CommitProof:
    """A proof of the envelope at `tx_index` of `block` (a committed block with its orderer
    signatures), without attestations (each peer adds its own: `attest`)."""
    envelopes = block.data.envelopes
    digests = [sha256(e) for e in envelopes]
    return crosschain_pb2.CommitProof(
        header=block.header,
        orderer_signatures=block.metadata.signatures,
        envelope=envelopes[tx_index],
        tx_index=tx_index,
        tx_count=len(envelopes),
        inclusion_path=inclusion_path(digests, tx_index),
        code=code,  # type: ignore[arg-type]
    )


def verify_proof(proof: crosschain_pb2.CommitProof, client: LightClient, at: datetime) -> Proven:
    """The facts `proof` establishes for `client`'s channel, or ProofError saying why not."""
    h = proof.header
    if h.channel_id != client.channel_id:
        raise ProofError(
            R.ERROR_REASON_PROOF_WRONG_CHANNEL,
            f"proof is of channel {h.channel_id!r}, not {client.channel_id!r}",
        )
    view = client.view_at(h.number)
    digest = header_block_hash(h)
    _check_orderers(proof, view, digest, at)
    item = sha256(proof.envelope)
    if len(proof.inclusion_path) > PATH_MAX or not h.tx_root:
        raise ProofError(R.ERROR_REASON_PROOF_INCLUSION_INVALID, "block has no usable tx_root")
    root = root_from_path(item, proof.tx_index, proof.tx_count, list(proof.inclusion_path))
    if root != h.tx_root:
        raise ProofError(
            R.ERROR_REASON_PROOF_INCLUSION_INVALID,
            f"inclusion path of tx {proof.tx_index} does not lead to block {h.number}'s tx_root",
        )
    expected = attestation_content(
        h.channel_id, h.number, digest, proof.tx_index, proof.envelope, proof.code
    )
    _check_attestations(proof.attestations, expected, view, at)
    return Proven(h.channel_id, h.number, proof.tx_index, proof.envelope, proof.code)


def _check_orderers(
    proof: crosschain_pb2.CommitProof, view: ChannelView, digest: bytes, at: datetime
) -> None:
    if len(proof.orderer_signatures) > ORDERER_SIGNATURES_MAX:
        raise ProofError(R.ERROR_REASON_PROOF_BAD_ORDERER_SIGNATURE, "too many signatures")
    pairs = [(s.signer, s.signature) for s in proof.orderer_signatures]
    counted = check_orderer_quorum(view, digest, pairs, at)
    if isinstance(counted, str):
        raise ProofError(R.ERROR_REASON_PROOF_BAD_ORDERER_SIGNATURE, counted)
    valid, needed = counted
    if valid < needed:
        raise ProofError(
            R.ERROR_REASON_PROOF_ORDERER_QUORUM,
            f"block {proof.header.number} has {valid} orderer signature(s), needs {needed}",
        )


def _check_attestations(
    attestations: Sequence[crosschain_pb2.CommitAttestation],
    expected: bytes,
    view: ChannelView,
    at: datetime,
) -> None:
    bad = R.ERROR_REASON_PROOF_ATTESTATION_INVALID
    if len(attestations) > ATTESTATIONS_MAX:
        raise ProofError(bad, f"more than {ATTESTATIONS_MAX} attestations")
    peers = {p.identity for p in view.config.peers}
    signers: list[policy_mod.Signer] = []
    for i, a in enumerate(attestations):
        if a.content != expected:
            raise ProofError(bad, f"attestation {i} vouches for something else")
        if a.signature.signer not in peers:
            raise ProofError(bad, f"attestation {i} is not by a peer of the channel")
        try:
            who = view.membership.verify(a.signature.signer, a.content, a.signature.signature, at)
        except IdentityError as exc:
            raise ProofError(bad, f"attestation {i}: {exc}") from exc
        signers.append(policy_mod.Signer(who.identity_id, who.org_id, who.roles))
    policy = commit_proof_policy(view)
    if policy_mod.evaluate(policy, signers) != policy_mod.PolicyResult.SATISFIED:
        orgs = sorted({s.org_id for s in signers})
        raise ProofError(
            bad,
            f"attestations of {', '.join(orgs) or 'nobody'} do not satisfy the commit proof "
            f"policy {policy_mod.format_policy(policy)}",
        )


def commit_proof_policy(view: ChannelView) -> policy_mod.Policy:
    """The channel's commit proof policy; default: peers of more than half of the organisations
    that have a peer on the channel, one peer each."""
    text = view.config.commit_proof_policy
    if text:
        return policy_mod.parse_policy(text)
    orgs = sorted({p.org_id for p in view.config.peers})
    if not orgs:
        raise ProofError(R.ERROR_REASON_PROOF_ATTESTATION_INVALID, "the channel names no peer")
    leaves = tuple(policy_mod.SignedBy(policy_mod.Principal(o, "peer")) for o in orgs)
    return policy_mod.OutOf(len(orgs) // 2 + 1, leaves)


def expect(proven: Proven, channel_id: str, code: int, what: str) -> None:
    """PROOF_MISMATCH unless `proven` is of `channel_id` with `code`."""
    if proven.channel_id != channel_id or proven.code != code:
        raise ProofError(
            R.ERROR_REASON_PROOF_MISMATCH,
            f"proof is of a transaction on {proven.channel_id!r} with code {proven.code}, "
            f"not {what}",
        )


def parse_proof(data: bytes) -> crosschain_pb2.CommitProof:
    """A CommitProof from bytes, or MALFORMED."""
    try:
        return crosschain_pb2.CommitProof.FromString(data)
    except DecodeError as exc:
        raise ClientError(R.ERROR_REASON_MALFORMED, f"commit proof does not parse: {exc}") from exc
