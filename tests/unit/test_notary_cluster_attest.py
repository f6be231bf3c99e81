"""A member asked to attest what another member orders (`runtime/roles/notary/cluster_attest.py`):
answered from the decision made here through the other member's wrap, from the store when it is
there already, never missed between the store read and the wait, and handed back to be ordered
here when no decision comes in time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dltmw.core.errors import ClientError
from dltmw.core.handlers.notary import Decision
from dltmw.core.notary import NotarisationAsk
from dltmw.core.utxo.model import Window
from dltmw.runtime.roles.notary.cluster_attest import Admitted, Attesting
from dltmw.v1 import errors_pb2

R = errors_pb2


def ask(tx_id: str) -> NotarisationAsk:
    return NotarisationAsk(tx_id, (), (), Window(), b"")


class Store:
    """The spent-set's signed tx_ids; `during_read` runs while the read is in progress."""

    def __init__(self) -> None:
        self.signed: dict[str, bytes] = {}
        self.during_read: list[Decision] = []
        self.attesting: Attesting | None = None

    async def signed_here(self, tx_ids: list[str]) -> dict[str, bytes]:
        found = {t: self.signed[t] for t in tx_ids if t in self.signed}
        await asyncio.sleep(0)
        if self.attesting is not None and self.during_read:
            self.attesting.decided(self.during_read)  # applied after the read saw nothing
        return found


async def attest(
    attesting: Attesting, store: Store, admitted: Sequence[Admitted], wait_s: float = 5.0
) -> list[Admitted]:
    return await attesting.await_decisions(admitted, store.signed_here, wait_s)


async def test_a_tx_id_decided_here_through_another_members_wrap_is_answered_from_it() -> None:
    attesting, store = Attesting(), Store()
    waiting = asyncio.ensure_future(attest(attesting, store, [ask("t1"), ask("t2")]))
    for _ in range(5):
        await asyncio.sleep(0)
    attesting.decided([Decision("t2", signature=b"sig2"), Decision("t1", signature=b"sig1")])
    out = await asyncio.wait_for(waiting, 1.0)
    assert [(d.tx_id, d.signature) for d in out if isinstance(d, Decision)] == [
        ("t1", b"sig1"),
        ("t2", b"sig2"),
    ]
    assert attesting.fallbacks == 0 and not attesting.waiters


async def test_a_tx_id_signed_here_already_is_answered_from_the_store_at_once() -> None:
    attesting, store = Attesting(), Store()
    store.signed["t1"] = b"stored"
    (out,) = await asyncio.wait_for(attest(attesting, store, [ask("t1")]), 1.0)
    assert isinstance(out, Decision) and (out.tx_id, out.signature) == ("t1", b"stored")


async def test_a_decision_applied_while_the_store_was_read_is_not_missed() -> None:
    """The waiter exists before the read: a decision applied after the read saw nothing still
    answers it (registered after the read, the caller would wait out its bound and order the
    request a second time)."""
    attesting, store = Attesting(), Store()
    store.attesting = attesting
    store.during_read = [Decision("t1", signature=b"late")]
    (out,) = await asyncio.wait_for(attest(attesting, store, [ask("t1")], wait_s=0.2), 1.0)
    assert isinstance(out, Decision) and out.signature == b"late"
    assert attesting.fallbacks == 0


async def test_a_tx_id_not_decided_in_time_is_handed_back_to_be_ordered_here() -> None:
    attesting, store = Attesting(), Store()
    refused = ClientError(R.ERROR_REASON_MALFORMED, "bad")
    pending = ask("t9")
    out = await asyncio.wait_for(attest(attesting, store, [refused, pending], wait_s=0.05), 1.0)
    assert out == [refused, pending]  # admission refusals pass through untouched
    assert attesting.fallbacks == 1 and not attesting.waiters


async def test_each_call_reports_its_answered_and_ordered_here_asks() -> None:
    """What the node's `dltmw_notary_attested_total` counts: per call, the asks answered from a
    decision here (store or waiter) and those handed back to be ordered here."""
    seen: list[tuple[int, int]] = []
    store = Store()
    attesting = Attesting(lambda answered, ordered: seen.append((answered, ordered)))
    store.signed["t1"] = b"stored"
    refused = ClientError(R.ERROR_REASON_MALFORMED, "bad")
    await asyncio.wait_for(attest(attesting, store, [ask("t1"), refused, ask("t2")], 0.05), 1.0)
    assert seen == [(1, 1)] and (attesting.answered, attesting.fallbacks) == (1, 1)


async def test_refusals_without_a_tx_id_answer_nobody() -> None:
    attesting, store = Attesting(), Store()
    waiting = asyncio.ensure_future(attest(attesting, store, [ask("t1")], wait_s=0.1))
    for _ in range(5):
        await asyncio.sleep(0)
    attesting.decided([Decision("", reason=R.ERROR_REASON_NOTARY_BATCH_SIGNATURE_INVALID)])
    (out,) = await waiting
    assert isinstance(out, NotarisationAsk) and attesting.fallbacks == 1
