"""Early abort at Submit: the gateway refuses a transaction its own peer proves stale.

The rule is `core/early_abort.py` (only reads whose recorded version is certainly gone; a read
of an absent key is never aborted). Here: parse the envelope's read/write set, and — only when
it recorded a version, so blind writes and deltas cost nothing — read the peer's committed
versions of those keys (height first, so a key absent from a snapshot taken at a greater height
was deleted, not yet to come) and refuse with STALE_READ, naming the key.
"""

from __future__ import annotations

from dltmw.core.early_abort import endorsed_rwset, first_stale, recorded_versions
from dltmw.core.errors import ClientError
from dltmw.ledger.backend import Ledger
from dltmw.v1 import errors_pb2


async def refuse_stale(ledger: Ledger, envelope: bytes, tx_id: str) -> None:
    """ClientError(STALE_READ) if `envelope` read a version its peer has seen replaced."""
    rwset = endorsed_rwset(envelope)
    recorded = recorded_versions(rwset) if rwset is not None else {}
    if not recorded:
        return
    height = ledger.height  # before the read: the snapshot is at least this high
    committed = await ledger.versions(recorded)
    stale = first_stale(recorded, committed, height)
    if stale is None:
        return
    ns, key = stale
    raise ClientError(
        errors_pb2.ERROR_REASON_STALE_READ,
        f"tx {tx_id} read {ns}/{key} at version {recorded[stale]}, since replaced at this "
        "gateway's peer: endorse it again",
        {"key": key, "namespace": ns},
    )
