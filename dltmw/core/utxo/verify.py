"""Verification of a signed UTXO transaction: resolve inputs, run contracts, check signatures.

Used by every party that is asked to sign or to record a transaction, by the backchain resolver
(each dependency is verified the same way before it is trusted) and by a validating notary.
Parties' signatures are over the tx_id as UTF-8 text; a notary's is over the Merkle root of
its batch, reached from the tx_id by the proof the transaction carries (or, for transactions
notarised before batch signing, over the tx_id too: `core/notary_batch.py`). Each is verified
against the signer's certificate, which must chain to a member organisation's root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from dltmw.core.errors import ClientError
from dltmw.core.identity import IdentityError, Membership
from dltmw.core.merkle import Proof
from dltmw.core.notary_batch import proof_of_pb, signed_message
from dltmw.core.txcheck import parse
from dltmw.core.utxo.constraints import BUILTIN_CODE, ContractCode
from dltmw.core.utxo.contracts import ContractRejected, LedgerTx, StateAndRef
from dltmw.core.utxo.model import Output, Ref, WireTx, read_transaction
from dltmw.v1 import errors_pb2, identity_pb2, utxo_pb2

R = errors_pb2


@dataclass(frozen=True)
class SignedTx:
    """A parsed SignedUtxoTransaction."""

    wire: WireTx
    raw: bytes
    signatures: tuple[tuple[bytes, bytes], ...]
    notary_signature: tuple[bytes, bytes] | None
    cluster_signatures: tuple[tuple[bytes, bytes], ...] = ()
    notary_proof: Proof | None = None
    cluster_proofs: tuple[Proof, ...] = ()


def read_signed(raw: bytes) -> SignedTx:
    """Parse a serialised SignedUtxoTransaction (MALFORMED / INVALID_FIELD on bad input)."""
    msg = parse(utxo_pb2.SignedUtxoTransaction, raw, "signed transaction")
    wire = read_transaction(msg.transaction)
    notary = msg.notary_signature
    has_notary = msg.HasField("notary_signature")
    return SignedTx(
        wire=wire,
        raw=raw,
        signatures=tuple((s.signer, s.signature) for s in msg.signatures),
        notary_signature=(notary.signer, notary.signature) if has_notary else None,
        cluster_signatures=tuple((s.signer, s.signature) for s in msg.notary_signatures),
        notary_proof=proof_of_pb(msg.notary_batch_proof)
        if msg.HasField("notary_batch_proof")
        else None,
        cluster_proofs=tuple(proof_of_pb(p) for p in msg.notary_batch_proofs),
    )


def identity_error(exc: IdentityError) -> ClientError:
    """ClientError with the reason an IdentityError names."""
    return ClientError(R.ErrorReason.Value("ERROR_REASON_" + exc.reason), exc.message)


def signed_by(
    tx_id: str, signatures: Iterable[tuple[bytes, bytes]], membership: Membership, now: datetime
) -> frozenset[bytes]:
    """Identities whose signature over tx_id verifies; any bad signature is BAD_SIGNATURE."""
    data = tx_id.encode()
    out: set[bytes] = set()
    for signer, signature in signatures:
        try:
            membership.verify(signer, data, signature, now)
        except IdentityError as exc:
            raise identity_error(exc) from None
        out.add(signer)
    return frozenset(out)


def check_signatures(
    stx: SignedTx, membership: Membership, now: datetime, allowed_missing: Iterable[bytes] = ()
) -> frozenset[bytes]:
    """Verify all signatures; BAD_SIGNATURE unless every required signer (but those allowed to be
    missing) signed. Returns who signed."""
    signed = signed_by(stx.wire.tx_id, stx.signatures, membership, now)
    missing = stx.wire.required_signers() - signed - set(allowed_missing)
    if missing:
        names = sorted(_org_of(m) for m in missing)
        raise ClientError(R.ERROR_REASON_BAD_SIGNATURE, f"missing signatures of {names}")
    return signed


def check_notarised(
    stx: SignedTx, notary_identity: bytes, membership: Membership, now: datetime
) -> None:
    """BAD_SIGNATURE unless the transaction carries a valid signature of the given notary."""
    if stx.notary_signature is None or stx.notary_signature[0] != notary_identity:
        raise ClientError(R.ERROR_REASON_BAD_SIGNATURE, f"{stx.wire.tx_id} is not notarised")
    signer, signature = stx.notary_signature
    check_notary_signature(stx.wire.tx_id, signer, signature, stx.notary_proof, membership, now)


def check_notary_signature(
    tx_id: str,
    signer: bytes,
    signature: bytes,
    proof: Proof | None,
    membership: Membership,
    now: datetime,
) -> None:
    """BAD_SIGNATURE (or the identity's reason) unless `signature` by `signer` verifies for
    `tx_id` — over its batch's root reached through `proof`, or over the tx_id without one."""
    try:
        membership.verify(signer, signed_message(tx_id, proof), signature, now)
    except IdentityError as exc:
        raise identity_error(exc) from None


def check_cluster_notarised(
    stx: SignedTx, members: Sequence[bytes], membership: Membership, now: datetime
) -> None:
    """BAD_SIGNATURE unless at least f+1 DISTINCT members of the notary cluster (3f+1 member
    identities, taken from the network map, never from the sender) signed the tx_id.

    f+1 signatures include at least one honest member, and honest members decide alike, so the
    cluster notarised this transaction. Signatures of non-members, duplicates and signatures
    that do not verify are not counted (a sender could pad the list with anything)."""
    needed = (len(members) - 1) // 3 + 1
    proofs = cluster_proofs(stx)
    counted: set[bytes] = set()
    for (signer, signature), proof in zip(stx.cluster_signatures, proofs, strict=True):
        if signer not in members or signer in counted:
            continue
        try:
            membership.verify(signer, signed_message(stx.wire.tx_id, proof), signature, now)
        except (IdentityError, ClientError):
            continue
        counted.add(signer)
    if len(counted) < needed:
        raise ClientError(
            R.ERROR_REASON_BAD_SIGNATURE,
            f"{stx.wire.tx_id} carries {len(counted)} valid notary cluster member signatures, "
            f"{needed} needed",
        )


def cluster_proofs(stx: SignedTx) -> tuple[Proof | None, ...]:
    """The batch proof of each cluster signature (None: signed over the tx_id); BAD_SIGNATURE
    when proofs are present but not one per signature."""
    if not stx.cluster_proofs:
        return (None,) * len(stx.cluster_signatures)
    if len(stx.cluster_proofs) != len(stx.cluster_signatures):
        raise ClientError(
            R.ERROR_REASON_BAD_SIGNATURE,
            f"{stx.wire.tx_id} carries {len(stx.cluster_proofs)} batch proofs for "
            f"{len(stx.cluster_signatures)} notary cluster signatures",
        )
    return stx.cluster_proofs


def _org_of(identity: bytes) -> str:
    msg = identity_pb2.Identity()
    msg.ParseFromString(identity)
    return msg.org_id


def resolve(wire: WireTx, lookup: Callable[[Ref], Output | None]) -> LedgerTx:
    """Resolve inputs and references; NOT_FOUND if a state is unknown."""
    resolved: list[list[StateAndRef]] = [[], []]
    for slot, refs in enumerate((wire.inputs, wire.references)):
        for ref in refs:
            output = lookup(ref)
            if output is None:
                raise ClientError(R.ERROR_REASON_NOT_FOUND, f"state {ref} is unknown")
            resolved[slot].append(StateAndRef(ref, output))
    return LedgerTx(wire, tuple(resolved[0]), tuple(resolved[1]))


def verify_ledger_tx(ltx: LedgerTx, code: ContractCode = BUILTIN_CODE) -> None:
    """Run exactly the contract packages the transaction names, once each approved and held
    here (`code.select`: UTXO_CONTRACT_NOT_APPROVED / UTXO_CONTRACT_UNKNOWN otherwise);
    CONTRACT_FAILED if one refuses."""
    runs = code.select(ltx)
    try:
        if not runs:
            raise ContractRejected("a transaction must touch at least one contract")
        for _, verify in runs:
            verify(ltx)
    except ContractRejected as exc:
        raise ClientError(R.ERROR_REASON_CONTRACT_FAILED, f"{ltx.wire.tx_id[:12]}: {exc}") from None
