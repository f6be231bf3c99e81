"""Shared servicer plumbing: error mapping wrappers and small request helpers."""

from __future__ import annotations

import functools
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sized
from typing import Any, Literal, Protocol, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from dltmw.aio.clock import utc_now
from dltmw.core.errors import ClientError, DltmwError, LimitExceeded
from dltmw.core.identity import Membership, VerifiedIdentity, tls_org_matches, tls_revoked
from dltmw.core.timestamps import checked_datetime
from dltmw.core.txcheck import check_signed_query, parse
from dltmw.rpc.status import abort, detached
from dltmw.rpc.tls import caller_tls_cert
from dltmw.v1 import common_pb2, errors_pb2, proposal_pb2

R = errors_pb2
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]


def unary(
    fn: Callable[[Any, Req, Ctx], Awaitable[Resp]],
) -> Callable[[Any, Req, Ctx], Awaitable[Resp]]:
    """Map DltmwError raised by a unary handler to its status."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: Ctx) -> Resp:
        try:
            return await fn(self, request, context)
        except DltmwError as exc:
            refused = detached(exc)
        await abort(context, refused)  # outside the except block: see status.detached
        raise AssertionError("unreachable: abort raises")

    return wrapper


def streaming(
    fn: Callable[[Any, Req, Ctx], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Ctx], AsyncIterator[Resp]]:
    """Map DltmwError raised by a streaming handler to its status."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: Ctx) -> AsyncIterator[Resp]:
        try:
            async for item in fn(self, request, context):
                yield item
            return
        except DltmwError as exc:
            refused = detached(exc)
        await abort(context, refused)  # outside the except block: see status.detached

    return wrapper


def check_count(entries: Sized, what: str, maximum: int) -> None:
    """LIMIT_EXCEEDED (items_per_request_max) if `entries` of a signed body hold more than
    `maximum` items: bounded before any of them is checked (`rpc/boundary.py` bounds the repeated
    fields of the request itself; this is for those inside its signed bytes)."""
    if len(entries) > maximum:
        raise LimitExceeded("items_per_request_max", maximum, f"{len(entries)} entries in {what}")


def require(condition: bool, what: str) -> None:
    """MISSING_FIELD unless `condition`."""
    if not condition:
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, f"{what} is missing")


def proposal_channel(signed: proposal_pb2.SignedProposal) -> str:
    """Channel id named by a signed proposal's header (unverified: only to route)."""
    return proposal_header(signed).channel_id


def proposal_header(signed: proposal_pb2.SignedProposal) -> common_pb2.Header:
    """A signed proposal's header (unverified: to route, and to name the creator's
    organisation for the TLS binding, from ONE parse)."""
    require(bool(signed.proposal_bytes), "signed_proposal.proposal_bytes")
    proposal = parse(proposal_pb2.Proposal, signed.proposal_bytes, "proposal")
    return parse(common_pb2.Header, proposal.header, "header")


def envelope_channel(envelope: common_pb2.Envelope) -> tuple[str, str]:
    """(channel id, tx_id) named by an envelope's header (unverified: only to route)."""
    require(bool(envelope.payload), "envelope.payload")
    payload = parse(common_pb2.Payload, envelope.payload, "payload")
    header = parse(common_pb2.Header, payload.header, "header")
    return header.channel_id, header.tx_id


class SignedQueryBody(Protocol):
    """A query message with the requester and timestamp fields every signed query carries."""

    @property
    def requester(self) -> bytes: ...

    @property
    def timestamp(self) -> timestamp_pb2.Timestamp: ...

    def HasField(self, field_name: Literal["timestamp"]) -> bool: ...


def admit_query(
    context: Ctx,
    query: SignedQueryBody,
    query_bytes: bytes,
    signature: bytes,
    membership: Membership,
    window_s: float,
) -> VerifiedIdentity:
    """Admission of a signed query: timestamp window, requester's signature over the carried
    bytes, and a TLS client certificate of the requester's own organisation."""
    stamp = checked_datetime(query.timestamp, "timestamp") if query.HasField("timestamp") else None
    who = check_signed_query(
        query_bytes, signature, query.requester, membership, stamp, utc_now(), window_s
    )
    check_tls_org(context, membership, who.org_id)
    return who


# Checking that a TLS certificate is issued by an org's CA parses it and verifies the CA's
# signature: ~0.1 ms, on every unary call. A client keeps its certificate for its connection's
# life, so the answer is remembered per channel membership (weakly: a dropped membership takes
# its answers along), bounded.
_TLS_MEMO: weakref.WeakKeyDictionary[Membership, dict[tuple[bytes, str], bool]]
_TLS_MEMO = weakref.WeakKeyDictionary()
TLS_MEMO_MAX = 1024


def tls_org_matches_memo(cert: bytes, membership: Membership, org_id: str) -> bool:
    """`identity.tls_org_matches`, remembered per membership (a config change makes a new
    one): a link's every call carries the same certificate, and the X.509 issuer check cost
    a replica ~2 % of its CPU when made on every Exchange."""
    memo = _TLS_MEMO.setdefault(membership, {})
    hit = memo.get((cert, org_id))
    if hit is None:
        hit = tls_org_matches(cert, membership, org_id)
        if len(memo) >= TLS_MEMO_MAX:
            memo.clear()
        memo[(cert, org_id)] = hit
    return hit


def check_tls_org(context: Ctx, membership: Membership, org_id: str | None) -> None:
    """The caller's TLS certificate must be issued by `org_id` (or, if None, by any member)."""
    check_tls_cert_org(caller_tls_cert(context), membership, org_id)


def check_tls_cert_org(cert: bytes | None, membership: Membership, org_id: str | None) -> None:
    """`check_tls_org` for a certificate already read from the call (a stream reads it once)."""
    if org_id is not None and org_id not in membership.org_ids:
        # (e.g. an organisation a config update removed: say so, not "TLS mismatch")
        raise ClientError(
            R.ERROR_REASON_NOT_A_MEMBER, f"organisation {org_id!r} is not a member of this channel"
        )
    orgs = [org_id] if org_id is not None else sorted(membership.org_ids)
    if cert is None or not any(tls_org_matches_memo(cert, membership, o) for o in orgs):
        if cert is not None and tls_revoked(cert, membership):
            raise ClientError(
                R.ERROR_REASON_CERTIFICATE_REVOKED, "TLS client certificate is revoked"
            )
        who = org_id or "a member organisation"
        raise ClientError(
            R.ERROR_REASON_TLS_IDENTITY_MISMATCH,
            f"TLS client certificate is not issued by {who}",
        )
