"""Replica signatures verified a moment ago, so the core's check of the same message is a
comparison instead of a hash.

Every replica message is verified twice on its way in: by the boundary (`rpc/replica.py`, which
refuses a batch holding a bad one) and again by the core (`Checker.open`, `BlockAssembler`),
through `PbftOrdererChannel.verify` and `.check`. The second check hit the identity's verified-
signature memo (`core/identity.Membership.verify`), whose key is a SHA-256 of the data: for a
`Batch` message that is a second pass over all its envelopes' bytes on every replica (~17 µs per
2.4 KB envelope on this machine, the same as hashing it anew). Here a successful verification
keeps (replica, data) by signature until the next check of that signature takes it: the core's
check then compares the bytes (memcmp, ~100x cheaper than SHA-256) and is answered only when
signer index, data and signature are exactly those just verified. Anything else — a message
nobody verified, another signer index, other bytes — is verified for real.

Only the boundary's checks are kept (`verify`); the core's own (`check`: the acks inside an
availability certificate, a fetched block's signatures) are not, as nobody asks for them
again: kept, they held this table at its 1,024 entries on every orderer (benchmarks/RESULTS.md,
lane `mem3`). Bounded: an entry the core never asks for (a late message the boundary dropped
after verifying it) leaves first-in first-out beyond `ENTRIES_MAX` entries or `BYTES_MAX`
bytes of data; the replica set changing clears everything (an index then names another
identity). In the steady state it holds the messages between the boundary and the core.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

ENTRIES_MAX = 1024
BYTES_MAX = 8 << 20


class JustVerified:
    """(replica, data) by signature, for successful verifications not asked for again yet."""

    def __init__(self, entries_max: int = ENTRIES_MAX, bytes_max: int = BYTES_MAX) -> None:
        self._entries_max = entries_max
        self._bytes_max = bytes_max
        self._items: OrderedDict[bytes, tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # catch-up verifies fetched blocks off the event loop

    def note(self, replica: int, data: bytes, signature: bytes) -> None:
        """`signature` by replica `replica` over `data` verified just now."""
        if len(data) > self._bytes_max:
            return
        with self._lock:
            old = self._items.pop(signature, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._items[signature] = (replica, data)
            self._bytes += len(data)
            while len(self._items) > self._entries_max or self._bytes > self._bytes_max:
                _sig, (_replica, gone) = self._items.popitem(last=False)
                self._bytes -= len(gone)

    def take(self, replica: int, data: bytes, signature: bytes) -> bool:
        """Was exactly this verified just now? (The entry is used up either way it matched.)"""
        with self._lock:
            found = self._items.get(signature)
            if found is None or found[0] != replica or found[1] != data:
                return False
            del self._items[signature]
            self._bytes -= len(data)
            return True

    def clear(self) -> None:
        """Forget everything (the replica set changed)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)
