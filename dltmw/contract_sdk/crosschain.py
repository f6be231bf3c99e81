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
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from dltmw.core.contract import ContractError
from dltmw.core.errors import ClientError
from dltmw.core.light_client import LightClient, advance, from_record, to_record, track
from dltmw.core.proven_write import ProvenWrite, written
from dltmw.core.proven_write import proven_write as core_proven_write
from dltmw.v1 import block_pb2

__all__ = [
    "ProvenWrite",
    "proven_write",
    "track_config",
    "track_genesis",
    "tracked_client",
    "tracked_channel",
    "tracked_genesis_hash",
    "written",
]
CLIENTS_CACHED = 16  # light client records kept built (a node tracks a few channels)


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


def tracked_client(record: bytes) -> LightClient:
    """The light client a record holds (built once per record, see `_client`)."""
    return _client(record)


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
    that name (its package, or legacy no package), so its writes follow the same code as ours.
    `core/proven_write.py`."""
    try:
        return core_proven_write(_client(record), proof, _at(timestamp_s), namespace, key)
    except ClientError as exc:
        raise _refused(exc) from exc
