"""Purging private data from a client (docs/privacy.md "Purge"): the body, approvals, submit.

A purge names payload hashes and private keys, and the privacy keys of the nodes whose stores
lose them (every recipient of each named payload: sender and auditors included). Every
organisation owning one of those nodes approves by signing the body (`approve`, with a member
identity of that organisation; collected out of band, like config update signatures); then any
member submits it (`submit_purge`). The commit rule is `core/privacy/purge.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.client.privacy import PrivacyClient
from dltmw.core.identity import SigningIdentity
from dltmw.core.privacy.purge import purge_data, signing_bytes
from dltmw.v1 import gateway_service_pb2, private_purge_pb2

U = private_purge_pb2


def purge_body(
    channel_id: str,
    tx_id: str,
    payload_hashes: Sequence[bytes] = (),
    keys: Sequence[tuple[str, str]] = (),
    recipient_keys: Sequence[bytes] = (),
    group: str = "",
) -> bytes:
    """The serialised body every approving organisation signs (recipient keys sorted); `group`:
    the keys are that privacy group's (`recipient_keys` must then be the group's peers)."""
    return U.PrivatePurgeBody(
        channel_id=channel_id,
        tx_id=tx_id,
        payload_hashes=payload_hashes,
        keys=[U.PrivateKeyRef(namespace=ns, key=key) for ns, key in keys],
        recipient_keys=sorted(set(recipient_keys)),
        group=group,
    ).SerializeToString()


def approve(signer: SigningIdentity, body: bytes) -> U.PurgeApproval:
    """One organisation's approval of a purge body."""
    return U.PurgeApproval(signer=signer.identity_bytes, signature=signer.sign(signing_bytes(body)))


async def submit_purge(
    pc: PrivacyClient,
    channel_id: str,
    body: bytes,
    approvals: Sequence[U.PurgeApproval],
    nonce: bytes,
) -> gateway_service_pb2.CommitStatusResponse:
    """Order the purge (the body's tx_id is `nonce`'s, `pc.new_nonce()`) and wait for its
    commit; a purge the rule refuses raises at submit (PRIVATE_PURGE_* reasons)."""
    data = purge_data(body, approvals)
    envelope, tx_id = pc.private_data_envelope(channel_id, data, nonce)
    await pc.client.submit(envelope)
    return await pc.client.commit_status(channel_id, tx_id)
