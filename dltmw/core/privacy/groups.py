"""Privacy groups: named sets of member organisations, each with its own private state.

A group transaction is an ordinary private transaction whose (encrypted) `PrivateInvocation`
names a `group` (field 220) and either a contract call or a `group_change` (CREATE, ADD or
REMOVE, field 221): the public ledger sees a payload hash and, with agreement before commit, the
signers, exactly as for any private transaction — never the group's name.

Why the group lives in the private state: every member applies a change in block order, like a
write, so membership is decided by the same machinery as private values (agreement on the
pre-state and the delta, STALE and the public conflict rule on its hashed key, Recover by
re-execution) and needs no table of its own. The membership record is the key `members` of
the reserved namespace `"\\x00g\\x00<group>\\x00"`; the group's contract keys live under
`"\\x00g\\x00<group>\\x00<contract>"`. Contract names are `[a-z][a-z0-9_]*`
(`core/lifecycle.py`) and group ids have no NUL, so no contract namespace and no other group
can reach those keys: groups and the no-group state never read or write each other's keys.

The rules (`check`, the same at Send — exactly — and at execution — recipients a superset):
* CREATE: the group does not exist; the organisations are channel members running a peer with
  a privacy key; the sender's organisation is one of them.
* ADD or a call: the group exists and the sender's organisation is a member; ADD names only
  organisations that are not members yet. ADD is sent to the CURRENT members: a new member
  catches up afterwards (the members re-wrap the group's payloads for it with AddRecipients,
  it Recovers and executes the group's history in order, reaching the same group state).
* REMOVE: the group exists, the sender's organisation is a member (it may name itself: leaving
  the group), every named organisation is a member, and at least one member remains (else
  LAST_MEMBER). REMOVE is sent to the CURRENT members, the removed ones included: they learn
  it (Tessera style) and execute it, so their copy of the group (membership record included)
  stops at the REMOVE. From the next group transaction on the recipients are the remaining
  members' peers: a removed organisation's node is not sent (not sealed for) any later payload,
  is not a required agreer, and its own calls are refused (NOT_MEMBER) by its own node's
  record. No re-keying is needed: every payload has a fresh key, wrapped per recipient.
* Recipients: the group's peers and the channel's auditors (the sender's node included).
  At execution a superset is accepted: a payload re-wrapped for a later member has more boxes
  than the group had when it was ordered, and every holder, with the old copy or the new, must
  decide alike.

A refusal at execution is a CONTRACT_FAILED outcome (403, the reason's name in the message):
deterministic, so every recipient agrees on it, and nothing is written. Honest nodes refuse
earlier, at Send, with the ErrorReason (135-139, 157).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from google.protobuf.message import DecodeError

from dltmw.core.contract import Contract, StateReader
from dltmw.core.privacy.execution import (
    CONTRACT_FAILED,
    EXECUTED,
    PrivateOutcome,
    execute,
    pre_state_hash,
    state_hash,
)
from dltmw.core.rwset import StateEntry, StateWrite, Version
from dltmw.v1 import (
    config_pb2,
    errors_pb2,
    private_group_pb2,
    private_payload_pb2,
    private_purge_pb2,
    proposal_pb2,
)

R = errors_pb2
G = private_group_pb2
PREFIX = "\x00g\x00"
MEMBERS_KEY = "members"
GROUP_ID = re.compile(r"[!-~]{1,64}\Z")  # printable ASCII, no space, no NUL
CREATE = G.PRIVATE_GROUP_CHANGE_KIND_CREATE
ADD = G.PRIVATE_GROUP_CHANGE_KIND_ADD
REMOVE = G.PRIVATE_GROUP_CHANGE_KIND_REMOVE
UNKNOWN = R.ERROR_REASON_PRIVACY_GROUP_UNKNOWN
EXISTS = R.ERROR_REASON_PRIVACY_GROUP_EXISTS
NOT_MEMBER = R.ERROR_REASON_PRIVACY_GROUP_NOT_MEMBER
RECIPIENTS_MISMATCH = R.ERROR_REASON_PRIVACY_GROUP_RECIPIENTS_MISMATCH
INVALID = R.ERROR_REASON_PRIVACY_GROUP_INVALID
LAST_MEMBER = R.ERROR_REASON_PRIVACY_GROUP_LAST_MEMBER
ID_TAKEN = R.ERROR_REASON_PRIVACY_GROUP_ID_TAKEN
PRE_DOMAIN = b"dltmw/pp/group/pre-state/v1"
DELTA_DOMAIN = b"dltmw/pp/group/state/v1"
Refusal = tuple[int, str]  # (ErrorReason, message)


def scoped(group: str, namespace: str) -> str:
    """The private-state namespace of `namespace` inside `group` ("" = the group's record)."""
    return f"{PREFIX}{group}\x00{namespace}"


def group_of(namespace: str) -> str | None:
    """The group a stored namespace belongs to, or None for the no-group state."""
    if not namespace.startswith(PREFIX):
        return None
    return namespace[len(PREFIX) :].split("\x00", 1)[0]


@dataclass(frozen=True)
class Parties:
    """The channel's public facts the rules need (from the signed channel config)."""

    org_of_key: dict[bytes, str]  # privacy key -> organisation of the peer
    auditor_keys: frozenset[bytes]
    channel_orgs: frozenset[str]

    def group_keys(self, orgs: Iterable[str]) -> frozenset[bytes]:
        """The recipients of a transaction of a group with members `orgs`: their peers'
        privacy keys and the auditors'."""
        wanted = set(orgs)
        return frozenset(k for k, o in self.org_of_key.items() if o in wanted) | self.auditor_keys


def parties(config: config_pb2.ChannelConfig) -> Parties:
    """`Parties` of a channel config."""
    auditors = set(config.privacy_auditors)
    keyed = [n for n in config.peers if n.privacy_public_key]
    return Parties(
        org_of_key={n.privacy_public_key: n.org_id for n in keyed},
        auditor_keys=frozenset(n.privacy_public_key for n in keyed if n.node_id in auditors),
        channel_orgs=frozenset(o.org_id for o in config.organizations),
    )


def invocation_of(plaintext: bytes) -> private_payload_pb2.PrivateInvocation | None:
    """The plaintext as an invocation, or None when it is not one."""
    try:
        return private_payload_pb2.PrivateInvocation.FromString(plaintext)
    except DecodeError:
        return None


def members_of(state: StateReader, group: str) -> tuple[tuple[str, ...] | None, Version | None]:
    """The group's member organisations (None: no such group) and the record's version."""
    found = state.get(scoped(group, ""), MEMBERS_KEY)
    if found is None:
        return None, None
    return tuple(G.PrivateGroupMembers.FromString(found[0]).organizations), found[1]


def members_record(orgs: Iterable[str]) -> bytes:
    """The stored membership record (sorted, distinct organisations)."""
    return G.PrivateGroupMembers(organizations=sorted(set(orgs))).SerializeToString()


def check(
    invocation: private_payload_pb2.PrivateInvocation,
    channel: Parties,
    sender_key: bytes,
    recipient_keys: Iterable[bytes],
    members: tuple[str, ...] | None,
    exact: bool,
) -> Refusal | None:
    """Why a group transaction is refused (see the module docstring), or None. `members`: the
    group's current members (None: unknown); `exact`: recipients must be exactly the group's
    (at Send) rather than a superset (at execution)."""
    group = invocation.group
    if not GROUP_ID.match(group):
        return INVALID, "a group id is 1-64 printable characters without spaces"
    sender = channel.org_of_key.get(sender_key)
    if invocation.HasField("group_change"):
        change = invocation.group_change
        if invocation.contract or invocation.function or invocation.args:
            return INVALID, "a group change carries no contract call"
        orgs = list(change.organizations)
        if not orgs or len(set(orgs)) != len(orgs):
            return INVALID, "a group change names distinct organisations"
        keyed = set(channel.org_of_key.values())
        strangers = sorted(o for o in orgs if o not in channel.channel_orgs or o not in keyed)
        if strangers:
            return INVALID, f"not channel members with a privacy key: {strangers}"
        if change.kind == CREATE:
            if members is not None:
                return EXISTS, f"group {group!r} exists"
            if sender not in orgs:
                return NOT_MEMBER, "the sender's organisation must be a member of a new group"
            expected = channel.group_keys(orgs)
        elif change.kind == ADD:
            if members is None:
                return UNKNOWN, f"no group {group!r}"
            if sender not in members:
                return NOT_MEMBER, f"the sender's organisation is not a member of {group!r}"
            if set(orgs) & set(members):
                return INVALID, "ADD names organisations that are members already"
            expected = channel.group_keys(members)
        elif change.kind == REMOVE:
            refusal = _remove_refusal(group, sender, members, orgs)
            if refusal is not None:
                return refusal
            expected = channel.group_keys(members or ())
        else:
            return INVALID, "a group change is CREATE, ADD or REMOVE"
    else:
        if members is None:
            return UNKNOWN, f"no group {group!r}"
        if sender not in members:
            return NOT_MEMBER, f"the sender's organisation is not a member of {group!r}"
        expected = channel.group_keys(members)
    keys = set(recipient_keys)
    if keys != expected if exact else not keys >= expected:
        return RECIPIENTS_MISMATCH, f"recipients are not the peers of group {group!r}"
    return None


def _remove_refusal(
    group: str, sender: str | None, members: tuple[str, ...] | None, orgs: list[str]
) -> Refusal | None:
    """Why a REMOVE of `orgs` is refused (see the module docstring), or None."""
    if members is None:
        return UNKNOWN, f"no group {group!r}"
    if sender not in members:
        return NOT_MEMBER, f"the sender's organisation is not a member of {group!r}"
    if not set(orgs) <= set(members):
        return INVALID, "REMOVE names organisations that are not members"
    if set(members) <= set(orgs):
        return LAST_MEMBER, f"REMOVE would leave group {group!r} without members"
    return None


def send_orgs(
    invocation: private_payload_pb2.PrivateInvocation, members: tuple[str, ...] | None
) -> list[str]:
    """The recipient organisations of a group transaction when the client names none: the
    named organisations of a CREATE, else the current members."""
    if invocation.group_change.kind == CREATE:
        return list(invocation.group_change.organizations)
    return list(members or ())


class ScopedState(StateReader):
    """The group's view of the private state: a contract's namespace is the group's."""

    def __init__(self, state: StateReader, group: str) -> None:
        self._state = state
        self._group = group

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        return self._state.get(scoped(self._group, namespace), key)

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        return self._state.range(scoped(self._group, namespace), start, end, limit)


def execute_group(
    contract_of: Callable[[str], Contract | None],
    invocation: private_payload_pb2.PrivateInvocation,
    state: StateReader,
    version: Version,
    channel: Parties,
    sender_key: bytes,
    recipient_keys: Iterable[bytes],
) -> PrivateOutcome:
    """Execute a group transaction (`invocation.group` set) on the private state: the change,
    or the call on the group's own state; the membership record is read (and, by a change,
    written) like any key, so it is in the pre-state, the delta and the hashed keys."""
    group = invocation.group
    members, members_version = members_of(state, group)
    record_ns = scoped(group, "")
    before = state.get(record_ns, MEMBERS_KEY)
    record_read = ((record_ns, MEMBERS_KEY, members_version),)
    refusal = check(invocation, channel, sender_key, recipient_keys, members, exact=False)
    if refusal is not None:
        reason, message = refusal
        response = proposal_pb2.ContractResponse(
            status=403, message=f"{R.ErrorReason.Name(R.ErrorReason.ValueType(reason))}: {message}"
        )
        return PrivateOutcome(
            CONTRACT_FAILED,
            response,
            (),
            state_hash(CONTRACT_FAILED, response, record_ns, {}),
            pre_state_hash(record_ns, {MEMBERS_KEY: before[0] if before else None}),
            group=group,
            extra_touched=record_read,
        )
    if invocation.HasField("group_change"):
        value = members_records(members, invocation.group_change)
        response = proposal_pb2.ContractResponse(status=200)
        return PrivateOutcome(
            EXECUTED,
            response,
            (StateWrite(record_ns, MEMBERS_KEY, value, version),),
            state_hash(EXECUTED, response, record_ns, {MEMBERS_KEY: value}),
            pre_state_hash(record_ns, {MEMBERS_KEY: before[0] if before else None}),
            written=(MEMBERS_KEY,),
            namespace=record_ns,
            group=group,
            touched=((MEMBERS_KEY, members_version),),
        )
    inner = execute(contract_of, invocation, ScopedState(state, group), version)
    record = before[0] if before else b""
    return replace(
        inner,
        writes=tuple(
            StateWrite(scoped(group, w.namespace), w.key, w.value, w.version) for w in inner.writes
        ),
        state_hash=_bound(DELTA_DOMAIN, group, inner.state_hash, record),
        pre_state_hash=_bound(PRE_DOMAIN, group, inner.pre_state_hash, record),
        namespace=scoped(group, invocation.contract),
        group=group,
        extra_touched=record_read,
    )


def members_records(
    members: tuple[str, ...] | None, change: private_group_pb2.PrivateGroupChange
) -> bytes:
    """The membership record after a change `check` accepted: a CREATE (members None), an ADD
    or a REMOVE of `change.organizations`."""
    named = change.organizations
    if change.kind == REMOVE:
        return members_record(set(members or ()) - set(named))
    return members_record([*(members or ()), *named])


def _bound(domain: bytes, group: str, digest: bytes, record: bytes) -> bytes:
    """A call's hash bound to its group and the membership it ran under."""
    h = hashlib.sha256(domain)
    for part in (group.encode(), digest, record):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.digest()


def purge_namespace(group: str, namespace: str) -> str:
    """The stored namespace of a key a purge names (in `group`, or the no-group state)."""
    return scoped(group, namespace) if group else namespace


NO_PARTIES = Parties({}, frozenset(), frozenset())  # no channel facts: every group call fails


def group_may_purge(
    state: StateReader, channel: Parties | None, body: private_purge_pb2.PrivatePurgeBody
) -> bool:
    """May a VALID purge delete keys of `body.group` here? Only when the nodes it purges are
    exactly the group's peers and the auditors: every node checks that the approving
    organisations own exactly those nodes (`purge.every_recipient_org`), so the group's member
    organisations — and no other — approved it. Members decide alike (same membership)."""
    members, _ = members_of(state, body.group)
    if members is None or channel is None:
        return False
    return set(body.recipient_keys) == channel.group_keys(members)
