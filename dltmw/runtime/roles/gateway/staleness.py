"""Early abort at Submit: the gateway refuses a transaction its own peer proves stale.

The rule is `core/early_abort.py` (only reads whose recorded version is certainly gone; a read
of an absent key is never aborted). Here: parse the envelope's read/write set, and — only when
it recorded a version, so blind writes and deltas cost nothing — read the peer's committed
versions of those keys (height first, so a key absent from a snapshot taken at a greater height
was deleted, not yet to come) and refuse with STALE_READ, naming the key.

Many envelopes at once (a Transact request's submissions) take ONE read of the union of their
keys: a store read is an awaited thread hop, and one per envelope would queue them one by one.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core.early_abort import endorsed_rwset, first_stale, recorded_versions
from dltmw.core.errors import ClientError
from dltmw.core.rwset import Version
from dltmw.core.validation import KeyRef
from dltmw.ledger.backend import Ledger
from dltmw.v1 import errors_pb2


async def refuse_stale(ledger: Ledger, envelope: bytes, tx_id: str) -> None:
    """ClientError(STALE_READ) if `envelope` read a version its peer has seen replaced."""
    error = (await stale_errors(ledger, [(envelope, tx_id)]))[0]
    if error is not None:
        raise error


async def stale_errors(
    ledger: Ledger, envelopes: Sequence[tuple[bytes, str]]
) -> list[ClientError | None]:
    """Per (envelope, tx_id): its STALE_READ error, or None; one store read for all of them."""
    recorded: list[dict[KeyRef, Version]] = []
    for envelope, _ in envelopes:
        rwset = endorsed_rwset(envelope)
        recorded.append(recorded_versions(rwset) if rwset is not None else {})
    keys = {ref for versions in recorded for ref in versions}
    if not keys:
        return [None] * len(envelopes)
    height = ledger.height  # before the read: the snapshot is at least this high
    committed = await ledger.versions(keys)
    errors: list[ClientError | None] = []
    for versions, (_, tx_id) in zip(recorded, envelopes, strict=True):
        stale = first_stale(versions, committed, height) if versions else None
        errors.append(None if stale is None else _stale_read(tx_id, stale, versions[stale]))
    return errors


def _stale_read(tx_id: str, stale: KeyRef, version: Version) -> ClientError:
    ns, key = stale
    return ClientError(
        errors_pb2.ERROR_REASON_STALE_READ,
        f"tx {tx_id} read {ns}/{key} at version {version}, since replaced at this "
        "gateway's peer: endorse it again",
        {"key": key, "namespace": ns},
    )
