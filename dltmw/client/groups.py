"""Privacy groups, the client side (docs/privacy.md "Privacy groups"): create a group, add
or remove member organisations, call a contract in a group's own private state.

Each is an ordinary private transaction (`PrivacyClient.submit_invocation`): the group id and
the change travel inside the encrypted invocation. Recipients: none named means the group's
peers as the client's node knows them (the named organisations of a CREATE); the node refuses
a group transaction that breaks the rules before anything is sent (ERROR_REASON_PRIVACY_GROUP_*).

A member added later catches up on what it is entitled to with the existing paths: a member
re-wraps each of the group's earlier payloads for it (`share_history`, AddRecipients), then the
new member's organisation runs Recover, which re-executes the group's history in block order.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.client.privacy import PrivacyClient, PrivateSubmitted
from dltmw.v1 import private_group_pb2, private_payload_pb2

G = private_group_pb2


def change_invocation(
    group: str, kind: G.PrivateGroupChangeKind.ValueType, orgs: Sequence[str]
) -> private_payload_pb2.PrivateInvocation:
    """The invocation of a group change (CREATE, ADD or REMOVE of `orgs`)."""
    return private_payload_pb2.PrivateInvocation(
        group=group, group_change=G.PrivateGroupChange(kind=kind, organizations=orgs)
    )


async def create_group(
    pc: PrivacyClient, channel_id: str, group: str, orgs: Sequence[str]
) -> PrivateSubmitted:
    """Create `group` with member organisations `orgs` (the client's among them)."""
    invocation = change_invocation(group, G.PRIVATE_GROUP_CHANGE_KIND_CREATE, orgs)
    return await pc.submit_invocation(channel_id, (), invocation)


async def add_to_group(
    pc: PrivacyClient, channel_id: str, group: str, orgs: Sequence[str]
) -> PrivateSubmitted:
    """Add organisations to `group` (decided by the current members; see `share_history`)."""
    invocation = change_invocation(group, G.PRIVATE_GROUP_CHANGE_KIND_ADD, orgs)
    return await pc.submit_invocation(channel_id, (), invocation)


async def remove_from_group(
    pc: PrivacyClient, channel_id: str, group: str, orgs: Sequence[str]
) -> PrivateSubmitted:
    """Remove member organisations from `group` (sent to every current member, the removed
    ones included; from the next group transaction on they are not recipients)."""
    invocation = change_invocation(group, G.PRIVATE_GROUP_CHANGE_KIND_REMOVE, orgs)
    return await pc.submit_invocation(channel_id, (), invocation)


async def group_call(
    pc: PrivacyClient,
    channel_id: str,
    group: str,
    contract: str,
    function: str,
    *args: str | bytes,
) -> PrivateSubmitted:
    """Call `contract` in `group`'s private state."""
    return await pc.submit_private(channel_id, (), contract, function, *args, group=group)


async def share_history(
    pc: PrivacyClient, channel_id: str, payload_hashes: Sequence[bytes], orgs: Sequence[str]
) -> int:
    """Re-wrap the group's earlier payloads this client's node sent for newly added `orgs`
    (AddRecipients, one per payload); returns how many were shared."""
    for digest in payload_hashes:
        await pc.add_recipients(channel_id, digest, orgs)
    return len(payload_hashes)
