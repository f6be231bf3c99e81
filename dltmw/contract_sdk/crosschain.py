"""Cross-channel proofs for contracts: what a contract may ask about another channel.

A contract keeps a light client of another channel in its own world state (bytes it stores
under a key of its choosing) and asks one question of a commit proof: "which value did a VALID
transaction of contract `namespace` write to `key` on that channel?" (`proven_write`). Every
failure is a `ContractError` (status 400) whose message starts with the ErrorReason name
(PROOF_WRONG_CHANNEL, PROOF_BAD_ORDERER_SIGNATURE, PROOF_ORDERER_QUORUM, PROOF_INCLUSION_INVALID,
PROOF_ATTESTATION_INVALID, PROOF_MISMATCH, LIGHT_CLIENT_REJECTED, MALFORMED), so the endorser's
refusal names the check that failed. Certificates are judged at the transaction's header time,
the same on every endorser (`ctx.tx.timestamp_s`). Docs: docs/cross-channel.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from dltmw.core.builtin_packages import BUILTIN_PACKAGE_IDS
from dltmw.core.commit_proof import parse_proof, verify_proof
from dltmw.core.contract import ContractError
from dltmw.core.errors import ClientError
from dltmw.core.light_client import LightClient, advance, from_record, to_record, track
from dltmw.v1 import block_pb2, common_pb2, proposal_pb2, transaction_pb2

__all__ = [
    "ProvenWrite",
    "proven_write",
    "track_config",
    "track_genesis",
    "tracked_channel",
    "tracked_genesis_hash",
]
CLIENTS_CACHED = 16  # light client records kept built (a node tracks a few channels)


@dataclass(frozen=True)
class ProvenWrite:
    """A value a VALID transaction wrote on another channel."""

    channel_id: str
    block_number: int
    value: bytes


def _refused(exc: ClientError) -> ContractError:
    return ContractError(f"{exc.reason_name}: {exc.message}", 400)


def _block(data: bytes) -> block_pb2.Block:
    try:
        return block_pb2.Block.FromString(data)
    except DecodeError as exc:
        raise ContractError(f"MALFORMED: block does not parse: {exc}", 400) from exc


@functools.lru_cache(maxsize=CLIENTS_CACHED)
def _client(record: bytes) -> LightClient:
    """The light client a stored record holds, built once per record: rebuilding its views
    parses every organisation's certificates, and a view's Membership caches the identities it
    verified, so reusing it makes each proof check after the first cost its signatures only.
    Keyed by the exact bytes (immutable; a tracked config change is another record)."""
    return from_record(record)


def _at(timestamp_s: int) -> datetime:
    return datetime.fromtimestamp(timestamp_s, UTC)


def track_genesis(genesis: bytes) -> bytes:
    """A new light client record from another channel's block 0."""
    try:
        return to_record(track(_block(genesis)))
    except ClientError as exc:
        raise _refused(exc) from exc


def tracked_channel(record: bytes) -> str:
    """The channel a light client record tracks."""
    return _client(record).channel_id


def tracked_genesis_hash(record: bytes) -> bytes:
    """The block 0 hash a light client record started from (its trust root)."""
    return _client(record).genesis_hash


def track_config(record: bytes, block: bytes, timestamp_s: int) -> bytes:
    """The record after taking one more config block of its channel."""
    try:
        return to_record(advance(_client(record), _block(block), _at(timestamp_s)))
    except ClientError as exc:
        raise _refused(exc) from exc


def proven_write(
    record: bytes, proof: bytes, timestamp_s: int, namespace: str, key: str
) -> ProvenWrite:
    """The value that the transaction proven VALID by `proof` wrote to (`namespace`, `key`) on
    the channel `record` tracks; `namespace` must be deployed there as the built-in contract of
    that name — its package, or (legacy) no package at all — so its writes follow the same code
    as ours."""
    try:
        client = _client(record)
        proven = verify_proof(parse_proof(proof), client, _at(timestamp_s))
    except ClientError as exc:
        raise _refused(exc) from exc
    if proven.code != transaction_pb2.TX_VALIDATION_CODE_VALID:
        raise ContractError("PROOF_MISMATCH: the proven transaction is not VALID", 400)
    view = client.view_at(proven.block_number)
    builtin = ("", BUILTIN_PACKAGE_IDS.get(namespace, ""))
    if not any(c.name == namespace and c.package_id in builtin for c in view.config.contracts):
        raise ContractError(
            f"PROOF_MISMATCH: {namespace!r} is not the built-in contract on {proven.channel_id}",
            400,
        )
    value = written(proven.envelope, namespace, key)
    if value is None:
        raise ContractError(f"PROOF_MISMATCH: the proven transaction writes no {key!r}", 400)
    return ProvenWrite(proven.channel_id, proven.block_number, value)


def written(envelope: bytes, namespace: str, key: str) -> bytes | None:
    """The value an endorser transaction's envelope writes to (`namespace`, `key`), or None."""
    try:
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
        header = common_pb2.Header.FromString(payload.header)
        if header.type != common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION:
            return None
        tx = transaction_pb2.Transaction.FromString(payload.data)
        response = proposal_pb2.ProposalResponsePayload.FromString(tx.response_payload)
    except DecodeError:
        return None
    if response.rwset.namespace != namespace:
        return None
    for w in response.rwset.writes:
        if w.key == key and not w.is_delete:
            return w.value
    return None
