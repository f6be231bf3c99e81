"""Requests a member admitted at intake, so re-admitting them in a decided wrap skips the parse.

Every member re-admits every request of every decided wrap at the wrap's stamp
(`cluster_open.py`), and the f+1 members a client asked (one orders, the others attest) admitted
each of those requests already when it arrived: the same payload parsed, its states read and its
tx_id recomputed from its components twice on those members (re-admission was ~15 % of a
member's CPU at saturation, RESULTS.md 2026-12-04, ncl6). For a request of a batch-signed
message at a non-validating notary, admission is a pure function of the payload's bytes, the
batch signer and the notary (`core/notary.admit`: no clock, no key), so the ask it produced at
intake is the ask re-admission would produce. Kept here by payload until the decided wrap takes
it; what re-admission still does itself, per part and at the stamp, is everything a wrapping
member could forge: the requester batch signature (`request_batch.check`), that the batch covers
the payload, that the request carries no signature of its own, and that the ask's requester is
that batch's signer. Only THIS member's own admissions are kept — never another member's word.

Bounded: an entry nobody takes (the request was answered from the store, or its wait ended)
leaves first-in first-out beyond ENTRIES_MAX; a request not found is simply admitted again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from dltmw.core.notary import NotarisationAsk

# Requests admitted here and not yet decided: the benchmark keeps up to ~2,048 in flight over
# all members; past the bound the oldest are admitted again (correct, only slower).
ENTRIES_MAX = 8192


class AdmittedHere:
    """This member's asks from intake, by payload, until their decided wrap takes them."""

    def __init__(self, entries_max: int = ENTRIES_MAX) -> None:
        self._entries_max = entries_max
        self._asks: OrderedDict[bytes, NotarisationAsk] = OrderedDict()
        self._lock = threading.Lock()  # taken on the verify pool, noted on the event loop
        self.taken = 0  # re-admissions answered from here (tests, diagnostics)

    def note(self, pairs: list[tuple[bytes, NotarisationAsk]]) -> None:
        """Asks just admitted from batch-signed payloads (`payload`, its ask)."""
        with self._lock:
            for payload, ask in pairs:
                self._asks[payload] = ask
            while len(self._asks) > self._entries_max:
                self._asks.popitem(last=False)

    def take(self, payload: bytes, signer: bytes) -> NotarisationAsk | None:
        """The ask admitted here from exactly `payload` with `signer` as its requester, if any
        (used up either way it matched)."""
        with self._lock:
            ask = self._asks.pop(payload, None)
        if ask is None or ask.requester != signer:
            return None
        self.taken += 1
        return ask

    def __len__(self) -> int:
        return len(self._asks)
