"""A privacy group's Send, checked against this node's copy of the group before anything is sealed.

A transaction of a privacy group (`core/privacy/groups.py`: CREATE, ADD, REMOVE, or an ordinary
invocation naming a group) is refused here with the group's own reason — not a member, the
recipients do not match the group, the last member cannot leave, an id already taken — and
nothing is sealed, stored or sent. Its recipients are the group's peers (named by the client or,
if none are named, taken from the group). Any other transaction passes unchanged. The check is
the group rules' (`groups.check`), run on this node's private copy of the group; what the
recipients later execute applies the same rules, so a Send refused here would have failed there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError
from dltmw.core.privacy import groups
from dltmw.core.privacy.conflict import NAMESPACE as HASHED
from dltmw.core.privacy.conflict import group_record_hash
from dltmw.core.privacy.envelope import PrivacyKey
from dltmw.ledger.private_store import PrivateStore
from dltmw.runtime.roles.peer.channel import PeerChannel


class Sender(Protocol):
    """What the check needs of its private channel (declared here, so that the channel may call
    it without the two modules importing each other)."""

    @property
    def view(self) -> ChannelView:
        """The channel's signed config and membership."""
        ...

    @property
    def key(self) -> PrivacyKey:
        """This node's privacy key."""
        ...

    @property
    def store(self) -> PrivateStore:
        """The private store (the groups' membership records)."""
        ...

    @property
    def peer(self) -> PeerChannel:
        """This node's peer of the channel (its public world state)."""
        ...

    def recipients(self, orgs: Sequence[str]) -> dict[str, bytes]:
        """Node id -> privacy public key of the peers of `orgs` (and the channel's auditors)."""
        ...


async def group_recipients(
    sender: Sender, plaintext: bytes, orgs: Sequence[str]
) -> tuple[bytes, Sequence[str]]:
    """(`plaintext`, its recipients' organisations), or ClientError with the group's reason
    (metadata {"group"}) when a group transaction breaks the group's rules here."""
    invocation = groups.invocation_of(plaintext)
    if invocation is None or not (invocation.group or invocation.HasField("group_change")):
        return plaintext, orgs
    group = invocation.group
    members = (
        await sender.store.read(lambda view: groups.members_of(view, group)[0])
        if groups.GROUP_ID.match(group)
        else None
    )
    wanted = list(orgs) or groups.send_orgs(invocation, members)
    own = sender.key.public_key
    keys = [own]
    if set(wanted) <= sender.view.membership.org_ids:
        keys += list(sender.recipients(wanted).values())
    refusal = groups.check(invocation, groups.parties(sender.view.config), own, keys, members, True)
    if refusal is None and members is None and invocation.group_change.kind == groups.CREATE:
        refusal = await _id_taken(sender, group)
    if refusal is not None:
        reason, message = refusal
        raise ClientError(reason, message, {"group": group})
    return plaintext, wanted


async def _id_taken(sender: Sender, group: str) -> groups.Refusal | None:
    """A CREATE of an id another set of organisations uses on this channel would end as
    PRIVATE_STATE_CONFLICT (its membership record's public hash exists): refuse it here, by the
    public world state only, before anything is sealed (docs/privacy.md "Group ids")."""
    digest = group_record_hash(group).hex()
    found = await sender.peer.ledger.read_snapshot(lambda r: r.get(HASHED, digest))
    if found is None:
        return None
    return groups.ID_TAKEN, f"group id {group!r} is taken on this channel"
