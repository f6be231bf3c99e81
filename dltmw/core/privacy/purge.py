"""Verifiable purge of private data: the commit rule, and what a recipient removes.

A purge is a PRIVATE_TRANSACTION whose data is exactly `PrivateTransaction{purge}` (no payload
hash, no agreements; `private_purge`). Its body names payload hashes, private-state keys and the
sorted privacy keys of the nodes whose stores are purged (`recipient_keys`); approvals are
signatures over the body by members of organisations.

`purge_code` is the commit rule and runs on EVERY node: a pure function of the transaction's
bytes and the channel config (signatures judged at the header timestamp), so every node records
the same code, and admission refuses every code but VALID (`SUBMITTER_FAULTS`: only a faulty or
unauthorised submitter makes them). Who may purge is ONE function, `authorised` (today every
organisation owning a node in `recipient_keys` must approve, and no other organisation may; a
privacy group's policy can replace it). docs/privacy.md "Purge" has the argument.

`purge_decision` is what one node does with a VALID purge that names it: every named key's
value is deleted (a state write of None at the purge's version, so the private-state hash
chain goes on verifiably), and a held payload is removed only if its sealed recipient set IS
`recipient_keys` (the boxes authenticate that set, so every holder decides alike, and one
organisation cannot purge a payload it shares with others without their approval by naming a
smaller set). A payload not held here is recorded as purged all the same, so that neither
Push nor Recover can store it later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import DecodeError

from dltmw.core.channel import ChannelView
from dltmw.core.identity import IdentityError
from dltmw.core.privacy.groups import purge_namespace
from dltmw.core.rwset import StateWrite, Version
from dltmw.core.wire_field import canonical
from dltmw.v1 import errors_pb2, private_purge_pb2, transaction_pb2

C = transaction_pb2
R = errors_pb2
U = private_purge_pb2
SIGNING_DOMAIN = b"dltmw/pp/purge/v1"
TARGETS_MAX = 1024  # payload hashes + keys named by one purge (bounded work at every node)
VALID = C.TX_VALIDATION_CODE_VALID
NOT_AUTHORIZED = C.TX_VALIDATION_CODE_PRIVATE_PURGE_NOT_AUTHORIZED
MALFORMED = C.TX_VALIDATION_CODE_PRIVATE_PURGE_MALFORMED
BAD_SIGNATURE = C.TX_VALIDATION_CODE_PRIVATE_PURGE_BAD_SIGNATURE
SUBMITTER_FAULTS: dict[int, int] = {
    NOT_AUTHORIZED: R.ERROR_REASON_PRIVATE_PURGE_NOT_AUTHORIZED,
    MALFORMED: R.ERROR_REASON_PRIVATE_PURGE_MALFORMED,
    BAD_SIGNATURE: R.ERROR_REASON_PRIVATE_PURGE_BAD_SIGNATURE,
}
# (channel, body, approving organisations) -> VALID or NOT_AUTHORIZED
Authorisation = Callable[[ChannelView, U.PrivatePurgeBody, frozenset[str]], int]


def signing_bytes(body: bytes) -> bytes:
    """What an approving member signs: the domain, then the serialised body."""
    return SIGNING_DOMAIN + body


def private_purge(data: bytes) -> U.PrivatePurge | None:
    """A purge transaction's PrivatePurge, or None unless `data` is exactly
    `PrivateTransaction{purge}` canonically encoded (no payload hash, no agreements, no unknown
    fields anywhere: nothing rides along in clear; `wire_field.canonical`)."""
    try:
        tx = C.PrivateTransaction.FromString(data)
    except DecodeError:
        return None
    if not tx.HasField("purge") or tx.payload_hash or tx.agreements:
        return None
    return tx.purge if canonical(tx, data) else None


def purge_data(body: bytes, approvals: Sequence[U.PurgeApproval]) -> bytes:
    """The data of a purge transaction (what a client puts in its envelope): the signed body
    bytes, as signed, and the approvals."""
    purge = U.PrivatePurge(body=body, approvals=approvals)
    return C.PrivateTransaction(purge=purge).SerializeToString()


def parse_body(purge: U.PrivatePurge) -> U.PrivatePurgeBody | None:
    """The purge's body, or None when it does not parse."""
    try:
        return U.PrivatePurgeBody.FromString(purge.body)
    except DecodeError:
        return None


def every_recipient_org(
    channel: ChannelView, body: U.PrivatePurgeBody, approving: frozenset[str]
) -> int:
    """Today's policy: the organisations owning the purged nodes, all of them and no other
    (each organisation's node loses data only with its approval; an outsider cannot approve)."""
    owners = frozenset(
        n.org_id for n in channel.config.peers if n.privacy_public_key in body.recipient_keys
    )
    return VALID if approving == owners else NOT_AUTHORIZED


def purge_code(
    purge: U.PrivatePurge,
    channel: ChannelView,
    tx_id: str,
    at: datetime,
    authorised: Authorisation = every_recipient_org,
) -> int:
    """The validation code of a purge (VALID if it may be applied). Total: any bytes give a code.
    Structure first (66), then every approval's signature (67), then `authorised` (65)."""
    body = parse_body(purge)
    if body is None or not _well_formed(body, channel, tx_id):
        return MALFORMED
    approving: set[str] = set()
    for approval in purge.approvals:
        try:
            signer = channel.membership.verify(
                approval.signer, signing_bytes(purge.body), approval.signature, at
            )
        except (DecodeError, IdentityError):
            return BAD_SIGNATURE
        approving.add(signer.org_id)
    return authorised(channel, body, frozenset(approving))


def _well_formed(body: U.PrivatePurgeBody, channel: ChannelView, tx_id: str) -> bool:
    keys = list(body.recipient_keys)
    peer_keys = {n.privacy_public_key for n in channel.config.peers if n.privacy_public_key}
    targets = len(body.payload_hashes) + len(body.keys)
    return (
        (body.channel_id, body.tx_id) == (channel.channel_id, tx_id)
        and 0 < targets <= TARGETS_MAX
        and all(len(h) == 32 for h in body.payload_hashes)
        and all(k.namespace and k.key for k in body.keys)
        and bool(keys)
        and keys == sorted(set(keys))
        and set(keys) <= peer_keys
    )


@dataclass(frozen=True)
class Purged:
    """One node's effects of one VALID purge: `writes` delete the named keys' values (at the
    purge's version), `payload_hashes` are removed and recorded as purged, `refused` are held
    payloads whose recipient set differs from the purge's (kept: see the module docstring)."""

    index: int
    tx_id: str
    payload_hashes: tuple[bytes, ...]
    writes: tuple[StateWrite, ...]
    refused: tuple[bytes, ...] = ()
    kept_keys: int = 0  # named group keys kept: the purge's nodes are not the group's peers


def purge_decision(
    body: U.PrivatePurgeBody,
    version: Version,
    recipients_of: Callable[[bytes], tuple[bytes, ...] | None],
    present: Callable[[str, str], bool],
    index: int,
    keys_allowed: bool = True,
) -> Purged:
    """What a node named by a VALID purge removes. `recipients_of(hash)`: the sealed recipient
    keys of the payload held here (None when not held); `present(ns, key)`: does the private
    state hold a value for the key (only those get a delete, so nothing else changes).
    `keys_allowed`: False when the keys are a privacy group's and `recipient_keys` are not
    exactly its peers (`groups.group_may_purge`): the keys stay (`kept_keys`)."""
    wanted = sorted(body.recipient_keys)
    removed: list[bytes] = []
    refused: list[bytes] = []
    for digest in dict.fromkeys(body.payload_hashes):
        held = recipients_of(digest)
        (removed if held is None or sorted(held) == wanted else refused).append(digest)
    named = dict.fromkeys((purge_namespace(body.group, k.namespace), k.key) for k in body.keys)
    if not keys_allowed:
        return Purged(index, body.tx_id, tuple(removed), (), tuple(refused), len(named))
    writes = tuple(StateWrite(ns, key, None, version) for ns, key in named if present(ns, key))
    return Purged(index, body.tx_id, tuple(removed), writes, tuple(refused))
