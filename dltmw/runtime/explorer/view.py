"""What the explorer shows of a block: plain JSON-able dicts made from the bytes the ledger holds.

Rules a reader must keep:
- Show what the ledger holds, nothing more. A private transaction is on the ledger as the hash
  of its payload only (`PrivateTransaction.payload_hash`); that hash is what is shown, to every
  caller, recipient or not. The private store (`ledger/private_store.py`) is never read here.
- Never trust a block's content to be well formed for display: an envelope that does not parse
  is shown as `unparsable`, never raised (the page of a block must not fail on one bad entry —
  its validation code already says what the peer thought of it).
- Identities are shown by organisation and certificate common name. One named by reference
  (`Identity.certificate_ref`, core/identity.py) is shown through `resolve` — the config in
  force at its block (`epochs.py`), which names the nodes that signed so then — and marked
  `by_reference`; one that config does not name is shown with its reference's hex.
- Bounded output: contract event payloads and contract arguments are cut at `PREVIEW_BYTES`;
  a block's transactions are at most what the channel's batch size let the orderer cut.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError

from dltmw.core.block import block_hash
from dltmw.runtime.metrics import validation_code_name as code_name
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    identity_pb2,
    proposal_pb2,
    transaction_pb2,
)

PREVIEW_BYTES = 128
Json = dict[str, Any]
H = common_pb2
Resolve = Callable[[bytes], bytes]  # a reference -> the identity in full (`Membership.resolved`)


def _same(identity_bytes: bytes) -> bytes:
    return identity_bytes


@functools.lru_cache(maxsize=256)
def identity(identity_bytes: bytes) -> Json:
    """Organisation and certificate common name of a serialised Identity (cached: a block's
    creators and signers are few distinct identities)."""
    try:
        ident = identity_pb2.Identity.FromString(identity_bytes)
    except DecodeError:
        return {"org": "", "name": "unparsable identity"}
    if ident.certificate_ref and not ident.certificate_der:
        return {"org": ident.org_id, "name": "", "certificate_ref": ident.certificate_ref.hex()}
    try:
        cert = x509.load_der_x509_certificate(ident.certificate_der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        names = []
    return {"org": ident.org_id, "name": str(names[0].value) if names else ""}


def named(identity_bytes: bytes, resolve: Resolve) -> Json:
    """`identity` of the bytes as sent, or of the identity in full their reference names."""
    full = resolve(identity_bytes)
    shown = identity(full)
    return shown if full == identity_bytes else {**shown, "by_reference": True}


def preview(data: bytes) -> str:
    """Bytes as text when they are printable UTF-8, else hex; cut at PREVIEW_BYTES."""
    cut = data[:PREVIEW_BYTES]
    suffix = "…" if len(data) > PREVIEW_BYTES else ""
    try:
        text = cut.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + cut.hex() + suffix
    return (text if text.isprintable() else "0x" + cut.hex()) + suffix


def block_summary(block: block_pb2.Block) -> Json:
    """One row of the block list: number, hash, transaction count and codes, signatures."""
    codes = [code_name(c) for c in block.metadata.validation_codes]
    counts: dict[str, int] = {}
    for c in codes:
        counts[c] = counts.get(c, 0) + 1
    return {
        "number": block.header.number,
        "hash": block_hash(block).hex(),
        "tx_count": len(block.data.envelopes),
        "codes": counts,
        "signatures": len(block.metadata.signatures),
    }


def block_detail(block: block_pb2.Block, resolve: Resolve = _same) -> Json:
    """The whole block: header, orderer signatures, every transaction with its code
    (`resolve`: see the module docstring)."""
    codes = list(block.metadata.validation_codes)
    # Invalid before their creator signature verified (the committing peer lists them): their
    # tx id and creator are only claims — anyone can write a victim's tx id into a forged
    # envelope — so the id is shown as claimed, never as the transaction's (as Events do,
    # rpc/events.py), and a reader does not take the victim's transaction for invalid.
    unauthenticated = set(block.metadata.unauthenticated)
    txs = []
    for index, env in enumerate(block.data.envelopes):
        tx = transaction(env, resolve)
        if index in unauthenticated:
            tx["claimed_tx_id"], tx["tx_id"], tx["unauthenticated"] = tx["tx_id"], "", True
        tx["tx_index"] = index
        tx["code"] = code_name(codes[index]) if index < len(codes) else "NOT_VALIDATED_HERE"
        txs.append(tx)
    return {
        **block_summary(block),
        "channel": block.header.channel_id,
        "previous_hash": block.header.previous_hash.hex(),
        "data_hash": block.header.data_hash.hex(),
        "orderer_signatures": [
            {**named(s.signer, resolve), "signature": s.signature.hex()}
            for s in block.metadata.signatures
        ],
        "txs": txs,
    }


def transaction(envelope_bytes: bytes, resolve: Resolve = _same) -> Json:
    """What an envelope holds: tx id, kind, creator, and per kind the invocation and events,
    the private payload's hash, or the configuration marker (`resolve`: see the module
    docstring)."""
    try:
        env = H.Envelope.FromString(envelope_bytes)
        payload = H.Payload.FromString(env.payload)
        header = H.Header.FromString(payload.header)
    except DecodeError:
        return {"tx_id": "", "kind": "unparsable"}
    out: Json = {
        "tx_id": header.tx_id,
        "kind": H.HeaderType.Name(header.type).removeprefix("HEADER_TYPE_").lower()
        if header.type in H.HeaderType.values()
        else f"type_{header.type}",
        "creator": named(header.creator, resolve) if header.creator else None,
        "timestamp": header.timestamp.ToJsonString() if header.HasField("timestamp") else "",
    }
    try:
        if header.type == H.HEADER_TYPE_ENDORSER_TRANSACTION:
            out.update(_endorser_transaction(payload.data, resolve))
        elif header.type == H.HEADER_TYPE_PRIVATE_TRANSACTION:
            private = transaction_pb2.PrivateTransaction.FromString(payload.data)
            out["private_payload_hash"] = private.payload_hash.hex()
    except DecodeError:
        out["kind"] = "unparsable"
    return out


def _endorser_transaction(data: bytes, resolve: Resolve) -> Json:
    tx = transaction_pb2.Transaction.FromString(data)
    proposal = proposal_pb2.Proposal.FromString(tx.proposal_bytes)
    call = proposal_pb2.ContractInvocation.FromString(proposal.payload)
    response = proposal_pb2.ProposalResponsePayload.FromString(tx.response_payload)
    return {
        "contract": call.contract,
        "function": call.function,
        "args": [preview(a) for a in call.args[:16]],
        "endorsers": [named(e.endorser, resolve) for e in tx.endorsements],
        "response_status": response.response.status,
        "events": [
            {"contract": e.contract, "name": e.name, "payload": preview(e.payload)}
            for e in response.events[:16]
        ],
    }
