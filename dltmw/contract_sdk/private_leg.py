"""The private leg of a transfer, for contracts (docs/cross-channel.md "A private leg"):
`xfer` reaches `core/private_leg.py` and `core/proven_private_write.py` through here. Every
refusal is a `ContractError` (status 400) whose message starts with the ErrorReason name.

Two directions:
- a public channel checks what the private leg wrote (`proven_private_write`, judged at the
  checking transaction's header time, like `crosschain.proven_write`);
- the private leg, executed by its recipients with no transaction header, no clock and no
  channel config, checks what the public channel wrote (`public_write`): its light client
  starts from the block 0 the terms name (`trust`, which the public side checks is its real
  one), and certificates are judged at the proven transaction's own header time (the only
  time every recipient sees alike).
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from dltmw.contract_sdk.crosschain import track_genesis, tracked_client
from dltmw.core.commit_proof import parse_proof
from dltmw.core.contract import ContractError
from dltmw.core.errors import ClientError
from dltmw.core.private_leg import (
    LegDetails,
    PrivateLegTerms,
    hold_value,
    leg_terms,
    record_value,
)
from dltmw.core.private_leg import open_details as core_open_details
from dltmw.core.proven_private_write import proven_private_write as core_private_write
from dltmw.core.proven_write import ProvenWrite
from dltmw.core.proven_write import proven_write as core_proven_write
from dltmw.v1 import common_pb2

__all__ = [
    "LegDetails",
    "PrivateLegTerms",
    "hold_value",
    "open_details",
    "private_leg",
    "proven_private_write",
    "public_write",
    "record_value",
]


def _refused(exc: ClientError) -> ContractError:
    return ContractError(f"{exc.reason_name}: {exc.message}", 400)


def private_leg(leg: object) -> PrivateLegTerms | None:
    """The private leg's terms, or None when `leg` is not private."""
    try:
        return leg_terms(leg)
    except ClientError as exc:
        raise _refused(exc) from exc


def open_details(details: bytes, leg: PrivateLegTerms) -> LegDetails:
    """The leg's accounts and amount, if `details` match the terms' commitment."""
    try:
        return core_open_details(details, leg)
    except ClientError as exc:
        raise _refused(exc) from exc


def proven_private_write(
    record: bytes, proof: bytes, timestamp_s: int, leg: PrivateLegTerms
) -> ProvenWrite:
    """The `t/<id>` the private transaction proven by `proof` (a PrivateLegProof) wrote on the
    channel the light client `record` tracks, as its recipients hold it."""
    try:
        at = datetime.fromtimestamp(timestamp_s, UTC)
        return core_private_write(tracked_client(record), proof, at, leg.recipients)
    except ClientError as exc:
        raise _refused(exc) from exc


def public_write(genesis: bytes, proof: bytes, namespace: str, key: str) -> ProvenWrite:
    """`crosschain.proven_write` for a private execution: a light client of block 0 `genesis`
    (config blocks after it are not taken yet), certificates judged at the proven envelope's
    header time."""
    record = track_genesis(genesis)
    try:
        envelope = parse_proof(proof).envelope
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
        at = common_pb2.Header.FromString(payload.header).timestamp.ToDatetime(tzinfo=UTC)
        return core_proven_write(tracked_client(record), proof, at, namespace, key)
    except DecodeError as exc:
        raise ContractError(f"MALFORMED: the proven envelope does not parse: {exc}", 400) from exc
    except ClientError as exc:
        raise _refused(exc) from exc
