"""The simulated notary cluster's members as clients see them: real keys, answers in wire form,
the client's check of each answer, and the ground truth that check must agree with.

Keys: one Ed25519 identity per member, certified by one notary CA made from `SIM_MATERIAL` (the
single-notary scenario's source of keys: derived from labels, so runs replay byte for byte), and
the `Membership` that trusts it — a cluster's identities as the signed network map gives them.
Each member signs through `Members.signer`, which also records what its key signed: the ground
truth (`genuine`) against which the checker judges every attestation a client accepted,
independently of the verification under test.

Client side (`client_answer`): what `rpc/cluster_verdict.ask_member` does with one member's
`NotarisationResponse` — the signer must be the member asked, and the signature must verify for
the tx_id over its batch's root through the proof (`check_notary_signature`); the verified
answers then go to the production `core/notary_cluster.verdict` (f+1 distinct members). The
NEGATIVE CONTROLS break exactly this step (`Verification`): `accept-any` takes every signed
answer unverified, `threshold` takes a verdict from f members instead of f+1, `count-answers`
counts a member's answers, not members.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import lru_cache

from dltmw.core.errors import ClientError
from dltmw.core.handlers.notary import Decision
from dltmw.core.identity import Membership, SigningIdentity
from dltmw.core.merkle import root_of
from dltmw.core.notary_batch import batch_message, proof_of_pb, proof_to_pb
from dltmw.core.notary_cluster import ReplicaAnswer, Verdict, verdict
from dltmw.core.utxo.verify import check_notary_signature
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.sim.material import SIM_MATERIAL
from dltmw.sim.vloop import EPOCH
from dltmw.v1 import notarisation_pb2

ORG = "NotaryOrg"


class Verification(Enum):
    """How clients check members' answers: as production does, or broken (negative controls)."""

    INTACT = "intact"
    ACCEPT_ANY = "accept-any"  # every signed answer counts, its signature and proof unchecked
    THRESHOLD = "threshold"  # a verdict from f agreeing members, not f+1
    COUNT_ANSWERS = "count-answers"  # answers counted, not distinct members (twins: one key)


@lru_cache(maxsize=4)
def _identities(n: int) -> tuple[tuple[SigningIdentity, ...], Membership]:
    """n member identities and the membership that trusts them (made once per process)."""
    ca = make_ca(ORG, key_type="ed25519", material=SIM_MATERIAL)
    members = tuple(
        SigningIdentity.from_pem(ORG, issued.cert_pem, issued.key_pem)
        for issued in (
            issue_cert(ca, ORG, f"notary-r{i}", "peer", key_type="ed25519", material=SIM_MATERIAL)
            for i in range(n)
        )
    )
    return members, Membership({ORG: ca.cert_pem})


@dataclass
class Members:
    """The n members' keys, membership, and what each key signed (member -> message -> sig)."""

    n: int
    identities: tuple[SigningIdentity, ...] = ()
    membership: Membership | None = None
    signed: dict[int, dict[bytes, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.identities, self.membership = _identities(self.n)
        self.signed = {i: {} for i in range(self.n)}

    def signer(self, member: int) -> Callable[[bytes], bytes]:
        """sign(data) with `member`'s key, recorded as ground truth."""
        identity, made = self.identities[member], self.signed[member]

        def sign(data: bytes) -> bytes:
            signature = identity.sign(data)
            made[data] = signature
            return signature

        return sign

    def response(self, member: int, decision: Decision) -> notarisation_pb2.NotarisationResponse:
        """A signed decision as the member's wire answer (`NotaryService` fills the same)."""
        out = notarisation_pb2.NotarisationResponse(tx_id=decision.tx_id)
        out.notary_signature.signer = self.identities[member].identity_bytes
        out.notary_signature.signature = decision.signature
        if decision.proof is not None:
            proof_to_pb(decision.proof, out.batch_proof)
        return out

    def genuine(self, member: int, tx_id: str, answer: ReplicaAnswer) -> bool:
        """Did `member`'s key sign this very attestation of `tx_id` — the batch-domain message of
        the root its proof leads to (ground truth, not a signature check)?"""
        if answer.proof is None:
            return False  # every cluster answer here is batch-signed
        root = root_of(tx_id.encode(), answer.proof)
        if root is None:
            return False
        return self.signed[member].get(batch_message(root)) == answer.signature


def client_answer(
    members: Members,
    member: int,
    reply: notarisation_pb2.NotarisationResponse,
    tx_id: str,
    mode: Verification,
) -> ReplicaAnswer | None:
    """One member's signed answer as a client keeps it (`cluster_verdict.ask_member`), or None
    when the client refuses it; `mode` ACCEPT_ANY keeps it unchecked (negative control)."""
    assert members.membership is not None
    identity = members.identities[member].identity_bytes
    proof = proof_of_pb(reply.batch_proof) if reply.HasField("batch_proof") else None
    answer = ReplicaAnswer(member, signature=reply.notary_signature.signature, proof=proof)
    if mode is Verification.ACCEPT_ANY:
        return answer
    if reply.tx_id != tx_id or reply.notary_signature.signer != identity:
        return None
    try:
        check_notary_signature(tx_id, identity, answer.signature, proof, members.membership, EPOCH)
    except ClientError:
        return None
    return answer


def client_verdict(answers: list[ReplicaAnswer], f: int, mode: Verification) -> Verdict | None:
    """The production verdict over the answers a client kept (`mode` THRESHOLD: with f-1;
    COUNT_ANSWERS: each answer as if from a member of its own)."""
    if mode is Verification.COUNT_ANSWERS:
        answers = [replace(a, replica=k) for k, a in enumerate(answers)]
    return verdict(answers, f - 1 if mode is Verification.THRESHOLD else f)
