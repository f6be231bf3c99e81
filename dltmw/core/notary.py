"""Admission of notarisation requests: everything a notary checks that does not depend on its
spent-set, so it can run on several threads, before the ordered, stateful decision
(`handlers/notary.py`).

A request is a signed NotarisationPayload. The notary refuses, changing nothing, unless:
the payload parses; it is addressed to this notary; the requester is a network member whose
signature verifies over exactly the payload bytes (so a request cannot ask for other inputs than
were signed); every reference is well formed, no state is named twice; and the tx_id recomputed
from the visible components (inputs, references, notary, time window) and the requester-supplied
hashes of the hidden ones (outputs, commands, nonce) equals the tx_id asked for. A validating
notary additionally gets the whole signed transaction and the transactions that created its
inputs and references: it checks those were notarised by itself, resolves the states, runs the
contracts and checks every required signature, so receivers may skip backchain resolution.

Trade-off kept from Corda: a non-validating notary cannot see who owns the inputs, so any member
who knows a state reference could get it consumed by a transaction nobody else signed (denial of
state). Parties who fear that use a validating notary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from dltmw.core.errors import ClientError
from dltmw.core.identity import IdentityError, Membership
from dltmw.core.txcheck import parse
from dltmw.core.utxo.constraints import BUILTIN_CODE, ContractCode
from dltmw.core.utxo.model import (
    Output,
    Ref,
    Window,
    is_tx_id,
    notary_window_groups,
    refs_and_group,
    tx_id_of,
    window_of,
)
from dltmw.core.utxo.verify import (
    check_notarised,
    check_signatures,
    identity_error,
    read_signed,
    resolve,
    verify_ledger_tx,
)
from dltmw.v1 import errors_pb2, notarisation_pb2

R = errors_pb2
HASH_BYTES = 32
MAX_DEPENDENCIES = 1000


class NotarisationAsk(NamedTuple):
    """An admitted request: what the stateful decision needs, nothing more. (A NamedTuple: one
    is built per request on the notary's hot path, where a frozen dataclass cost ~3 µs.)"""

    tx_id: str
    inputs: tuple[Ref, ...]
    references: tuple[Ref, ...]
    window: Window
    requester: bytes


@dataclass(frozen=True)
class NotaryIdentity:
    """Who this notary is: node id (as named in transactions) and serialised identity."""

    node_id: str
    identity: bytes
    validating: bool = False
    code: ContractCode = BUILTIN_CODE  # validating: the contract code it runs and approves


def admit(
    request: notarisation_pb2.NotarisationRequest,
    notary: NotaryIdentity,
    membership: Membership,
    now: datetime,
    batch_signer: bytes | None = None,
) -> NotarisationAsk:
    """Check one signed request (see module docstring); ClientError with a specific reason.

    `batch_signer`: the request came in a batch whose requester batch signature the caller has
    verified (`core/request_batch.check`) and this is its signer; the request then carries no
    signature of its own and must name exactly that signer as its requester (which replaces
    the one check of its own signature, nothing else)."""
    raw, signature = request.payload, request.signature  # each field read once: a copy each
    if not raw or not (signature or batch_signer is not None):
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, "request payload or signature is missing")
    if batch_signer is not None and signature:
        raise ClientError(
            R.ERROR_REASON_NOTARY_BATCH_REQUEST_INVALID,
            "a request of a batch-signed message carries a signature of its own",
        )
    payload = parse(notarisation_pb2.NotarisationPayload, raw, "payload")
    requester = payload.requester
    if not requester:
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, "payload.requester is missing")
    if batch_signer is not None:
        if requester != batch_signer:
            raise ClientError(
                R.ERROR_REASON_NOTARY_BATCH_REQUEST_INVALID,
                "the request names another requester than the batch signer",
            )
    else:
        try:
            membership.verify(requester, raw, signature, now)
        except IdentityError as exc:
            raise identity_error(exc) from None
    name = payload.notary
    if name != notary.node_id:
        raise ClientError(
            R.ERROR_REASON_INVALID_FIELD, f"request is for notary {name!r}, not this one"
        )
    tx_id = payload.tx_id
    if not is_tx_id(tx_id):
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "payload.tx_id is not 64 hex digits")
    inputs, ins = refs_and_group(payload.inputs, "inputs")
    references, refs = refs_and_group(payload.references, "references")
    if references and set(inputs) & set(references):  # most requests name none
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "a state is both input and reference")
    window = window_of(payload.time_window if payload.HasField("time_window") else None)
    outputs, commands, nonce = payload.outputs_hash, payload.commands_hash, payload.nonce_hash
    if len(outputs) != HASH_BYTES or len(commands) != HASH_BYTES or len(nonce) != HASH_BYTES:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "component hashes must be 32 bytes")
    notary_group, tw = notary_window_groups(name, window)
    computed = tx_id_of((ins, refs, outputs, commands, notary_group, tw, nonce))  # Components order
    if computed != tx_id:
        raise ClientError(
            R.ERROR_REASON_TX_ID_MISMATCH, "tx_id does not match the transaction's components"
        )
    if notary.validating:
        _validate(payload, notary, membership, now)
    return NotarisationAsk(tx_id, inputs, references, window, requester)


def _validate(
    payload: notarisation_pb2.NotarisationPayload,
    notary: NotaryIdentity,
    membership: Membership,
    now: datetime,
) -> None:
    """Validating mode: resolve from the carried dependencies, run contracts, check signatures."""
    if not payload.transaction:
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, "a validating notary needs the transaction")
    stx = read_signed(payload.transaction)
    if stx.wire.tx_id != payload.tx_id:
        raise ClientError(R.ERROR_REASON_TX_ID_MISMATCH, "transaction is not the one asked for")
    if len(payload.dependencies) > MAX_DEPENDENCIES:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "too many dependencies")
    known: dict[Ref, Output] = {}
    for raw in payload.dependencies:
        dep = read_signed(raw)
        check_notarised(dep, notary.identity, membership, now)
        for index, output in enumerate(dep.wire.outputs):
            known[dep.wire.out_ref(index)] = output
    ltx = resolve(stx.wire, known.get)
    verify_ledger_tx(ltx, notary.code)
    check_signatures(stx, membership, now)
