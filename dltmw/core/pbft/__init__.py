"""PBFT-lite: n = 3f+1 replicas agree on an ordered sequence of batches of opaque requests.

Public API: `Replica` (the pure state machine), `PbftConfig`, the inputs `ClientRequest`,
`SignedReplicaMessage` (`Envelope`) and `StoredDecided`, the outputs in `PbftEffects`
(`Decided`, `Rejected`, `DecidedFromStore`), the persisted `Record` types, and `batch_digest` /
`request_id`. Wire format: replica.proto.
"""

from dltmw.core.pbft.replica import Replica
from dltmw.core.pbft.types import (
    ClientRequest,
    Decided,
    DecidedFromStore,
    DecidedRecord,
    Envelope,
    JumpRecord,
    PbftConfig,
    PbftEffects,
    PreparedRecord,
    Record,
    Rejected,
    StableRecord,
    StoredDecided,
    ViewRecord,
    VoteRecord,
    batch_digest,
    request_id,
)

__all__ = [
    "ClientRequest",
    "Decided",
    "DecidedFromStore",
    "DecidedRecord",
    "Envelope",
    "JumpRecord",
    "PbftConfig",
    "PbftEffects",
    "PreparedRecord",
    "Record",
    "Rejected",
    "Replica",
    "StableRecord",
    "StoredDecided",
    "ViewRecord",
    "VoteRecord",
    "batch_digest",
    "request_id",
]
