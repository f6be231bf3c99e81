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

On channels ordered by "none" (a solo orderer), and on PBFT-lite channels with dissemination
(`batch.pbft_dissemination`, block 0's), where the replica a gateway reached is the only one that
judges an envelope: it batches it, and the other replicas store, ack and order the batch by its
digest without judging its envelopes again (`core/pbft/dissemination.py`), so a skipped check
there makes no replica look faulty, and a faulty origin could order anything anyway. There the
check cost ~25 % of the primary's CPU samples (benchmarks/RESULTS.md, branch pbft10). Not on
PBFT-lite without dissemination: a backup applies the ordering rule, signature included, to what
its primary proposes (a primary that skipped it would look faulty); not on JetStream: a stream
de-duplicates by tx_id, where a forged envelope could take the real one's id (PBFT-lite
de-duplicates by the envelope's hash, which a forgery cannot take). Every other caller (a client
or an orderer broadcasting) and every other transaction type (config updates, private
transactions) are checked in full, as before.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from dltmw.core.channel import ChannelView
from dltmw.core.identity import tls_roles
from dltmw.rpc.guard import tls_org_matches_memo
from dltmw.v1 import config_pb2

SOLO = config_pb2.ORDERING_TYPE_NONE
PBFT = config_pb2.ORDERING_TYPE_PBFT


def is_peer_node(tls_cert: bytes | None) -> bool:
    """Does the caller's TLS certificate name a peer node (read once per stream)?"""
    return tls_cert is not None and "peer" in tls_roles(tls_cert)


def forwarded_channels(
    tls_cert: bytes | None,
    views: Mapping[str, ChannelView],
    unjudged: Collection[str] = frozenset(),
) -> frozenset[str]:
    """The channels among `views` whose forwarded creators are not verified again (module
    docstring) of which the peer node presenting `tls_cert` is a member (its certificate issued
    directly by a member organisation's CA); `tls_cert` is None for a caller that is not a peer
    node (`is_peer_node`). `unjudged`: the channels whose ordering core takes Broadcast's
    verdict without judging the envelope again anywhere (`Ordering.checks_envelopes_again` is
    False): of the PBFT-lite channels, those with dissemination."""
    if tls_cert is None:
        return frozenset()
    return frozenset(
        channel_id
        for channel_id, view in views.items()
        if _skips_again(view, channel_id in unjudged)
        and any(
            tls_org_matches_memo(tls_cert, view.membership, org_id)
            for org_id in sorted(view.membership.org_ids)
        )
    )


def _skips_again(view: ChannelView, unjudged: bool) -> bool:
    """Solo channels always; PBFT-lite channels when no replica judges envelopes again."""
    ordering = view.config.ordering
    return ordering == SOLO or (ordering == PBFT and unjudged)
