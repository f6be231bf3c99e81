"""A notarisation as proof, to a channel, that a notarised UTXO transaction happened.

A channel contract cannot look into the notary's spent-set. What it can check is the notary's
signature: a notary signs a tx_id (alone, or a batch root reached from it by a leaf proof,
`notary_batch.py`) only once every input of that transaction is consumed by it, so a valid
signature of a notary the channel trusts means "this transaction's outputs exist". The
transaction comes whole (a SignedUtxoTransaction), so the tx_id is recomputed from the bytes
shown (`model.read_transaction`) and the outputs read are the ones the notary signed for.

Whom to trust is the channel's config (`ChannelConfig.trusted_notaries`: the serialised Identity
each notary signs as), agreed under its admin policy like the trusted channels; the signature is
checked against exactly that identity's certificate key. A notary cluster's f+1 signatures are
not accepted here yet (docs/cross-channel.md "Not done yet").

Refusals: NOTARISATION_PROOF_INVALID (does not parse, no notary signature, a signature or batch
proof that does not verify) and NOTARY_NOT_TRUSTED (signed by a notary the config does not name).
Pure.
"""

from __future__ import annotations

from collections.abc import Collection

from cryptography import x509
from google.protobuf.message import DecodeError

from dltmw.core.errors import ClientError
from dltmw.core.identity import IdentityError, verify_signature
from dltmw.core.notary_batch import signed_message
from dltmw.core.utxo.model import WireTx
from dltmw.core.utxo.verify import read_signed
from dltmw.v1 import errors_pb2, identity_pb2

R = errors_pb2
INVALID = R.ERROR_REASON_NOTARISATION_PROOF_INVALID


def notarised(notarisation: bytes, trusted: Collection[bytes]) -> WireTx:
    """The transaction `notarisation` (a SignedUtxoTransaction) shows notarised by a notary in
    `trusted`; ClientError with the reason why not (module docstring)."""
    try:
        stx = read_signed(notarisation)
    except ClientError as exc:
        raise ClientError(INVALID, f"the notarisation does not parse: {exc.message}") from None
    if stx.notary_signature is None:
        raise ClientError(INVALID, f"{stx.wire.tx_id} carries no notary signature")
    signer, signature = stx.notary_signature
    if signer not in trusted:
        raise ClientError(
            R.ERROR_REASON_NOTARY_NOT_TRUSTED,
            f"{stx.wire.tx_id} is signed by a notary this channel's config does not trust",
        )
    try:
        message = signed_message(stx.wire.tx_id, stx.notary_proof)
        certificate = identity_pb2.Identity.FromString(signer).certificate_der
        key = x509.load_der_x509_certificate(certificate).public_key()
        verify_signature(key, message, signature)  # type: ignore[arg-type]
    except (ClientError, IdentityError, DecodeError, ValueError) as exc:
        raise ClientError(
            INVALID, f"the notary's signature over {stx.wire.tx_id} does not verify: {exc}"
        ) from None
    return stx.wire
