"""Queued delivery and privacy groups: a recipient whose organisation left the group a payload
was sent to is given up (RECIPIENT_REMOVED), not pushed for ever (docs/privacy.md "Queued
delivery", branch priv58).

The channel config says who is on the channel; who is in a group is private state, so the
redelivery asks here, for the payloads it is about to push to one node: for each payload sent
to a group (the invocation, read from this node's own box: the sender is always a recipient),
is that node's organisation still a member in the group's record THIS node holds, and has this
node executed the payload's transaction? The delivery is given up only when the organisation
is no longer a member AND this node has no execution record of the transaction:

* executed here (ordered before the REMOVE, the REMOVE itself, or ordered after it with the
  node among its recipients): the ledger's agreements name the node, whose private executor
  waits for the payload in block order (`executor.py`), so it is still pushed — the removed
  member learns of its removal by executing the REMOVE, as without queued delivery;
* not executed here (not ordered yet): its agreements were, or will be, collected under the
  old membership and conflict with the REMOVE (PRIVATE_STATE_CONFLICT, 68), or under the new
  one, where the sender's node now refuses to collect it (PRIVATE_DELIVERY_GIVEN_UP,
  `agreement.py`): nothing will ever need the payload at that node.

An auditor's node is a recipient of every group payload whatever the membership (not an
organisation of the group), so it is never given up here; nor is a node of a group this node
holds no record of (a CREATE not executed here yet). The membership read is the sender's own
record, at its executed height: a REMOVE committed but not yet executed here is seen at the
next pass.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from google.protobuf.message import DecodeError

from dltmw.core.privacy.envelope import PayloadError, PrivacyKey, open_payload
from dltmw.core.privacy.groups import invocation_of, members_of
from dltmw.ledger.private_store import PrivateStore, PrivateTxn
from dltmw.v1 import config_pb2
from dltmw.v1.private_payload_pb2 import EncryptedPayload


def left(members: Collection[str] | None, org: str, executed: bool) -> bool:
    """Give up the delivery to a node of `org` of a group payload? `members`: the group's
    organisations in this node's record (None: no record here); `executed`: this node has
    executed the payload's transaction. Pure: the rule of the module docstring."""
    return members is not None and org not in members and not executed


def group_of(key: PrivacyKey, digest: bytes, raw: bytes) -> str:
    """The privacy group a stored payload of this node's was sent to ("" for none, and for a
    payload this node cannot read: not judged here, the push path deals with it)."""
    try:
        plaintext = open_payload(EncryptedPayload.FromString(raw), key, digest)
    except (DecodeError, PayloadError):
        return ""
    invocation = invocation_of(plaintext)
    return invocation.group if invocation is not None else ""


async def left_group(
    store: PrivateStore,
    key: PrivacyKey,
    config: config_pb2.ChannelConfig,
    node_id: str,
    items: Sequence[tuple[bytes, bytes]],
) -> list[bytes]:
    """The hashes among `items` ((hash, stored payload) owed to `node_id`) whose delivery to
    it is given up because its organisation left the payload's group (module docstring). The
    boxes are opened and the records read in ONE hop to the store's reader thread, never on the
    event loop; no store read unless some payload was sent to a group."""
    node = next((n for n in config.peers if n.node_id == node_id), None)
    if node is None or node_id in config.privacy_auditors or not items:
        return []  # not in the config: the channel's rule gives it up; an auditor: never

    def decide(txn: PrivateTxn) -> list[bytes]:
        # Opened here, on the store's reader thread, not on the event loop: each box is an
        # X25519 agreement, an HKDF and two AES-GCM opens (~30-60 µs), and a returning
        # recipient can be owed thousands of payloads, so on the loop they stalled every
        # RPC of this node for the whole pass (branch priv59).
        groups = {d: g for d, raw in items if (g := group_of(key, d, raw))}
        if not groups:
            return []  # no payload sent to a group: nothing read from the store
        records: dict[str, tuple[str, ...] | None] = {}
        out = []
        for digest, group in groups.items():
            if group not in records:
                records[group] = members_of(txn, group)[0]
            if left(records[group], node.org_id, txn.executed(digest)):
                out.append(digest)
        return out

    return await store.snapshot(decide)
