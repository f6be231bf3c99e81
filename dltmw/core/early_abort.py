"""Early abort: refuse, before ordering, a transaction every peer would invalidate for a stale read.

Why: a transaction endorsed on a state that has since changed is ordered, carried in a block,
checked and stored only to be marked MVCC_READ_CONFLICT (issue 13: on a hot key that load is
most of the work; the paper, III.2(2), names it). Its gateway can tell at Submit from its own
peer's committed state, and the client can endorse again at once instead of after a block.

The rule (pure; `runtime/roles/gateway/staleness.py` applies it at Submit). A transaction is
aborted only when it is CERTAIN to fail MVCC on every peer, whatever is ordered before it:

- A read that recorded version v of key k (a point read, or an entry of a range it read) is
  stale when the peer's committed version c of k is NEWER than v: versions are the positions of
  the writing transactions and only grow, so v can never be k's version again. A committed c
  OLDER than v means the peer is behind the endorser, not that the read is stale: not aborted.
- Such a read is also stale when k is absent at the peer although the peer's height is past
  v's block: k was written at v and deleted since; a new write would give it a newer version.
  (Absent with the height not past v: the peer is behind. Not aborted.)
- A read that recorded ABSENCE is never aborted, even if the key exists now: a later delete
  can make the key absent again before the transaction is validated, and then it is valid.
  The same holds for a key that has appeared inside a range read (a phantom): it may go again.

Deltas record no read version and are never stale. The aborted transaction is refused with
ERROR_REASON_STALE_READ (ABORTED, retryable: endorse again); nothing is ordered.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import DecodeError

from dltmw.core.rwset import Version
from dltmw.core.validation import KeyRef
from dltmw.v1 import common_pb2, proposal_pb2, rwset_pb2, transaction_pb2


def endorsed_rwset(envelope: bytes) -> rwset_pb2.ReadWriteSet | None:
    """The read/write set an endorser transaction's envelope carries (None for any other, or
    for bytes that do not parse: best effort, the checks elsewhere judge the envelope)."""
    try:
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
        header = common_pb2.Header.FromString(payload.header)
        if header.type != common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION:
            return None
        tx = transaction_pb2.Transaction.FromString(payload.data)
        response = proposal_pb2.ProposalResponsePayload.FromString(tx.response_payload)
    except DecodeError:
        return None
    return response.rwset if response.HasField("rwset") else None


def recorded_versions(rwset: rwset_pb2.ReadWriteSet) -> dict[KeyRef, Version]:
    """Every version the transaction recorded: its versioned point reads and range entries."""
    ns = rwset.namespace
    reads = [*rwset.reads, *(r for q in rwset.range_queries for r in q.reads)]
    out: dict[KeyRef, Version] = {}
    for read in reads:
        version = Version.from_read(read)
        if version is not None:
            out[(ns, read.key)] = version
    return out


def first_stale(
    recorded: Mapping[KeyRef, Version], committed: Mapping[KeyRef, Version], height: int
) -> KeyRef | None:
    """The first key (sorted) whose recorded version is certainly gone (module docstring), given
    the peer's committed versions read at a height of at least `height`; None if none is."""
    for ref in sorted(recorded):
        version = recorded[ref]
        now = committed.get(ref)
        if now is not None and now > version:
            return ref
        if now is None and height > version.block_number:
            return ref
    return None
