"""Re-admission of a decided notary-cluster wrap, identical on every replica.

Every replica re-admits each wrapped request of an agreed batch at the wrap's stamp (never at its
own clock), part by part, so membership, certificate validity and time windows are judged at the
same instant everywhere and the decision depends only on the agreed batch and the spent-set
(`core/notary_cluster.py`). Anything a faulty primary can wrap must become a refusal here, never
an exception: an exception would stop every replica at once. Runs on the verify pool.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.message import DecodeError

from dltmw.core import request_batch
from dltmw.core.errors import ClientError, InvariantViolation
from dltmw.core.handlers.notary import Decision
from dltmw.core.identity import Membership
from dltmw.core.notary import NotarisationAsk, NotaryIdentity, admit
from dltmw.core.notary_cluster import Unpacked, WrapPart, parts_of, unwrap
from dltmw.v1 import errors_pb2, notarisation_pb2

R = errors_pb2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _moment(stamp_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=stamp_ns // 1000)


def open_request(
    request: bytes, n: int, identity: NotaryIdentity, membership: Membership
) -> Unpacked:
    """Re-admit a decided wrapped request at its stamp: the same verdict on every replica, part
    by part (`core/notary_cluster.parts_of`)."""
    wrapped = unwrap(request, n)
    if wrapped is None:  # PBFT's request_ok let only well-formed requests into a batch
        raise InvariantViolation("a decided notary-cluster request does not parse")
    now = _moment(wrapped.stamp_ns)
    items: list[NotarisationAsk | Decision] = []
    for part in parts_of(wrapped):
        items.extend(_open_part(part, identity, membership, now))
    return Unpacked(wrapped.stamp_ns, tuple(items))


def _open_part(
    part: WrapPart, identity: NotaryIdentity, membership: Membership, now: datetime
) -> list[NotarisationAsk | Decision]:
    """Re-admit one client message's requests. A batch-signed one has its requester batch
    signature checked once here (`Membership.verify` remembers it: the other parts of the
    batch, and the replica that admitted it, do no public-key operation again); each request
    must be one it covers."""
    signer: bytes | None = None
    covered: frozenset[bytes] = frozenset()
    if part.HasField("batch_signature"):
        hashes = list(part.batch_payload_hashes)
        try:
            signer = request_batch.check(part.batch_signature, hashes, membership, now)
        except ClientError as exc:
            refused = Decision("", reason=exc.reason, message=str(exc))
            return [refused] * len(part.requests)
        covered = frozenset(hashes)
    items: list[NotarisationAsk | Decision] = []
    for raw in part.requests:
        try:
            signed = notarisation_pb2.NotarisationRequest.FromString(raw)
            if signer is not None and request_batch.payload_hash(signed.payload) not in covered:
                raise ClientError(
                    R.ERROR_REASON_NOTARY_BATCH_REQUEST_INVALID,
                    "the request is not one the batch signature covers",
                )
            items.append(admit(signed, identity, membership, now, signer))
        except DecodeError:
            items.append(Decision("", reason=R.ERROR_REASON_MALFORMED, message="does not parse"))
        except ClientError as exc:
            items.append(Decision("", reason=exc.reason, message=str(exc)))
        except (ValueError, OverflowError) as exc:
            # Values admission's arithmetic cannot take (e.g. a time window near 2^62 s). A
            # faulty primary can wrap any bytes and every replica re-admits the decided batch,
            # so this must be a refusal like any other, never an exception stopping them all.
            message = f"out of range: {type(exc).__name__}: {exc}"[:200]
            items.append(Decision("", reason=R.ERROR_REASON_INVALID_FIELD, message=message))
    return items
