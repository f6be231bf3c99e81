"""A cluster member's answer for requests another member orders (`ordered_elsewhere`).

A cluster client needs f+1 signatures from distinct members. Asking f+1 members to notarise the
same request made EACH of them wrap and order it: every notarisation went through PBFT-lite
f+1 times, and every member re-admitted, decided and stored it f+1 times (1.7 decisions per
notarisation per member in the benchmark: RESULTS.md, "notary cluster: merged wraps"). With
`NotariseStreamRequest.ordered_elsewhere` the client names ONE member to order and asks the
others only to attest: they admit the requests as usual (bad input is refused here alike), then
wait for each tx_id to be decided HERE through the other member's wrap — every member decides
every agreed batch — and answer with their own signature from that decision.

Rules a reader must keep:
- **Register before looking.** A waiter is added for every admitted tx_id before the spent-set
  is read: a decision applied before the read is found in the store, one applied after it
  resolves the waiter (`decided` runs after the batch is durable here). None slips between.
- **Bounded, then order.** A tx_id not decided here within `wait_s` (the client lied, or the
  ordering member is faulty, slow or down) is handed back to be ordered by this member as if
  asked normally: the client still gets an answer, and re-ordering a decided tx_id is idempotent.
- **Only decisions name a tx_id.** Refusals at re-admission (a bad batch signature in the other
  member's wrap) carry no tx_id and resolve no waiter; the request then falls back to ordering
  here and gets its own verdict.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence

from dltmw.core.errors import DltmwError
from dltmw.core.handlers.notary import Decision
from dltmw.core.handlers.notary import signed as signed_decision
from dltmw.core.notary import NotarisationAsk
from dltmw.runtime.waiters import Waiters, settled

ATTEST_WAIT_S = 10.0  # then order it here (well inside the client's and SUBMIT_WAIT_S's bounds)
Admitted = NotarisationAsk | Decision | DltmwError
SignedHere = Callable[[list[str]], Awaitable[dict[str, bytes]]]


class Attesting:
    """Callers waiting, by tx_id, for decisions made through other members' wraps."""

    def __init__(self, observe: Callable[[int, int], None] | None = None) -> None:
        self.waiters: Waiters[str, Decision] = Waiters()
        self.answered = 0  # asks answered from a decision made here (store or waiter)
        self.fallbacks = 0  # asks ordered here after the wait (tests, diagnostics)
        # (answered, ordered here) of each call: the node's metrics (dltmw_notary_attested)
        self._observe = observe

    def decided(self, decisions: Iterable[Decision]) -> None:
        """Answer whoever waits for these tx_ids (call once the batch is durable here)."""
        if not self.waiters:
            return
        for decision in decisions:
            if decision.tx_id:
                self.waiters.resolve(decision.tx_id, decision)

    async def await_decisions(
        self, admitted: Sequence[Admitted], signed_here: SignedHere, wait_s: float
    ) -> list[Admitted]:
        """`admitted` with every ask decided here within `wait_s` replaced by its decision; the
        asks left are the caller's to order (module docstring)."""
        out = list(admitted)
        asks = [(k, a.tx_id) for k, a in enumerate(admitted) if isinstance(a, NotarisationAsk)]
        futures = [(k, tx_id, self.waiters.add(tx_id)) for k, tx_id in asks]
        try:
            signed = await signed_here([tx_id for _, tx_id in asks])
            waiting = []
            for k, tx_id, future in futures:
                if tx_id in signed:
                    out[k] = signed_decision(tx_id, signed[tx_id])
                else:
                    waiting.append((k, future))
            results = await settled([f for _, f in waiting], wait_s)
            fell_back = 0
            for (k, _), result in zip(waiting, results, strict=True):
                if isinstance(result, Decision):
                    out[k] = result
                else:
                    fell_back += 1
        finally:
            for _, tx_id, future in futures:
                self.waiters.discard(tx_id, future)
        self.answered += len(asks) - fell_back
        self.fallbacks += fell_back
        if self._observe is not None:
            self._observe(len(asks) - fell_back, fell_back)
        return out
