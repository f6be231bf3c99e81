"""On which channels a Broadcast caller is a member peer forwarding its gateway's submissions.

Why. The gateway beside a peer verifies the creator's signature of every envelope it submits
(`Gateway.check_envelope`), and every peer verifies it again at commit, where a tx_id counts
for duplicate detection only once that signature verified (`core/txcheck.py`). The solo orderer
verifying it once more cost a third of its CPU per transaction (benchmarks/RESULTS.md, branch
kvcpu) and protects nothing a peer relies on: an envelope with a forged creator signature that
a member peer forwards is recorded invalid in its block, executes nothing and squats no tx_id,
and a member peer can fill blocks with envelopes validly signed by its own identity anyway.
So on a Broadcast stream whose TLS certificate is a peer node's (organisational unit "peer")
issued directly by a member organisation's CA (not revoked), an endorser transaction's creator
is identified (a member certificate valid at the header timestamp) but its signature is not
verified again (`check_envelope`'s `forwarded`). Everything else admission checks still holds.

Only on channels ordered by "none" (a solo orderer): a PBFT-lite backup applies the ordering
rule, signature included, to what its primary proposes (a primary that skipped it would look
faulty), and a JetStream stream de-duplicates by tx_id, where a forged envelope could take the
real one's id. Every other caller (a client or an orderer broadcasting) and every other
transaction type (config updates, private transactions) are checked in full, as before.
"""

from __future__ import annotations

from collections.abc import Mapping

from dltmw.core.channel import ChannelView
from dltmw.core.identity import tls_roles
from dltmw.rpc.guard import tls_org_matches_memo
from dltmw.v1 import config_pb2

SOLO = config_pb2.ORDERING_TYPE_NONE


def is_peer_node(tls_cert: bytes | None) -> bool:
    """Does the caller's TLS certificate name a peer node (read once per stream)?"""
    return tls_cert is not None and "peer" in tls_roles(tls_cert)


def forwarded_channels(tls_cert: bytes | None, views: Mapping[str, ChannelView]) -> frozenset[str]:
    """The solo-ordered channels among `views` of which the peer node presenting `tls_cert`
    is a member (its certificate issued directly by a member organisation's CA); `tls_cert`
    is None for a caller that is not a peer node (`is_peer_node`)."""
    if tls_cert is None:
        return frozenset()
    return frozenset(
        channel_id
        for channel_id, view in views.items()
        if view.config.ordering == SOLO
        and any(
            tls_org_matches_memo(tls_cert, view.membership, org_id)
            for org_id in sorted(view.membership.org_ids)
        )
    )
