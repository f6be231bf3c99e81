"""The review findings on `Client.submit_async` and its handle (sdk60b), over the fake gateways
of test_sdk_reference_failover.py (below the I/O boundary).

A handle's tx id never changes (a refused creator reference ends it; `submit` redoes it); the
per-attempt share does not cut the order step's commit wait, and a gateway left while slow is
not closed under the other calls in flight on it; a call cancelled under its task (its channel
closed by another call's fail-over) fails over; a gateway silent on a status query is failed
over unless it answers a health check; a cancelled `submit` names its tx id in the log;
`close()` cancels every task at once and refuses new ones. Each test says what it is red
without.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from test_sdk_reference_failover import CH, SIGNER, Gateway, Orderer, client
from test_sdk_submit_async import Held, alone

from dltmw.sdk import client as sdk_client
from dltmw.sdk.client import Client
from dltmw.sdk.errors import CommitFailed, InvalidRequest, Unavailable
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import transaction_pb2 as C

REFUSED = C.TX_VALIDATION_CODE_UNKNOWN_IDENTITY_REFERENCE


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_client, "REFERENCE_LAG_S", 0.001)
    monkeypatch.setattr(sdk_client, "STATUS_PROBE_S", 0.05)


class RefusesAtCommit(Gateway):
    """Commits a transaction by reference as UNKNOWN_IDENTITY_REFERENCE (nothing applied), one
    in full VALID; `commit_status` answers what it committed (review finding 1's repro)."""

    def __init__(self, orderer: Orderer) -> None:
        super().__init__(orderer, 0, dies=False)
        self.codes: dict[str, int] = {}

    async def order_batched(self, channel_id: str, tx_id: str, payload: bytes) -> Any:
        self.orderer.ordered.append(tx_id)
        full = payload == SIGNER.identity_bytes
        self.codes[tx_id] = C.TX_VALIDATION_CODE_VALID if full else REFUSED
        return G.CommitStatusResponse(result=self.codes[tx_id], block_number=len(self.codes))

    async def commit_status(self, channel_id: str, tx_id: str) -> Any:
        if tx_id not in self.codes:
            await asyncio.sleep(3600)
        return G.CommitStatusResponse(result=self.codes[tx_id], block_number=1)


async def test_a_handle_keeps_its_tx_id_when_the_reference_is_refused_at_commit() -> None:
    """The reference is refused at commit: the handle ends with that definite refusal under
    the tx id the caller stored (what `status()` and `commit_status` say of it stays true);
    nothing else is ordered for it. Red with `_finish` redoing in full under a new tx id (the
    handle's tx id changes and commits VALID while the stored one reads as failed)."""
    gateway = RefusesAtCommit(Orderer())
    c = alone(gateway)
    handle = await c.submit_async(CH, "kv", "put", "k", "v")
    recorded = handle.tx_id
    with pytest.raises(CommitFailed) as raised:
        await handle.committed()
    assert raised.value.tx_id == recorded == handle.tx_id and handle.reference_refused
    assert raised.value.validation_code == "UNKNOWN_IDENTITY_REFERENCE"
    assert gateway.orderer.ordered == [recorded]
    status = await c.commit_status(CH, recorded)
    assert status is not None and status.validation_code == "UNKNOWN_IDENTITY_REFERENCE"
    assert (await handle.status()) == status


async def test_submit_redoes_a_reference_refused_at_commit_in_full() -> None:
    """`submit` (no tx id given to the caller before the outcome) does the refused transaction
    again in full, as before sdk60: it commits VALID under a second tx id, the first having
    changed nothing. Red without `submit`'s redo (CommitFailed)."""
    gateway = RefusesAtCommit(Orderer())
    done = await alone(gateway).submit(CH, "kv", "put", "k", "v")
    first, second = gateway.orderer.ordered
    assert done.tx_id == second != first and gateway.codes[first] == REFUSED


async def test_a_reference_refused_at_admission_ends_the_handle_and_submit_redoes_it() -> None:
    """The gateway refuses the reference at admission (nothing ordered): the handle ends with
    that refusal, its tx id unchanged; `submit` redoes it in full. Red with `_finish` redoing
    (the handle would commit under another tx id)."""
    orderer = Orderer()
    c = alone(Gateway(orderer, 1, dies=False))
    handle = await c.submit_async(CH, "kv", "put", "k", "v")
    recorded = handle.tx_id
    with pytest.raises(Exception) as raised:
        await handle.committed()
    assert getattr(raised.value, "reason", "") == "UNKNOWN_IDENTITY_REFERENCE"
    assert handle.tx_id == recorded and handle.reference_refused and orderer.ordered == []
    c.references.committed(CH, SIGNER.identity_bytes, C.TX_VALIDATION_CODE_VALID)
    done = await alone(Gateway(orderer, 1, dies=False)).submit(CH, "kv", "put", "k", "v")
    assert orderer.ordered == [done.tx_id]


async def test_the_order_step_is_not_cut_at_a_share_of_the_deadline() -> None:
    """Gateway A commits after 60 % of the deadline (a healthy, slow commit): with two
    gateways its share would be half. The order step includes the commit wait and goes
    without a share: A's commit is returned, B is never asked. Red with the share applied to
    the order step (A left at half the deadline: the step repeated on B)."""
    orderer = Orderer()
    a, b = Gateway(orderer, 0, dies=False), Gateway(orderer, 0, dies=False)
    plain = a.order_batched

    async def slow(channel_id: str, tx_id: str, payload: bytes) -> Any:
        await asyncio.sleep(0.6)
        return await plain(channel_id, tx_id, payload)

    async def never(channel_id: str, tx_id: str, payload: bytes) -> Any:
        raise AssertionError("B was asked")

    a.order_batched = slow  # type: ignore[method-assign]
    b.order_batched = never  # type: ignore[method-assign]
    done = await client(a, b, 1.0).submit(CH, "kv", "put", "k", "v")
    assert orderer.ordered == [done.tx_id]


class Closable(Gateway):
    def __init__(self, orderer: Orderer) -> None:
        super().__init__(orderer, 0, dies=False)
        self.closed = 0

    def seen_block(self, channel_id: str) -> int:
        return 0

    async def close(self) -> None:
        self.closed += 1


async def test_a_gateway_left_while_slow_is_closed_only_after_its_other_calls() -> None:
    """A share's timeout leaves the gateway (new calls go to the next) but another call is
    still in flight on it: it is closed when that call ends, not under it; a gateway left
    as lost is closed at once. Red without `_fail_over`'s deferral (closed at once)."""
    orderer = Orderer()
    a, b = Closable(orderer), Closable(orderer)
    c = client(a, b, 1.0)
    c._lock, c._seen = asyncio.Lock(), {}
    c._gateway = a  # type: ignore[assignment]
    c._busy[a] = 1  # type: ignore[index]  # another call waits on A
    await Client._fail_over(c, a, slow=True)  # type: ignore[arg-type]
    assert c._gateway is None and a.closed == 0
    c._release(a)  # type: ignore[arg-type]  # that call ends
    await asyncio.wait(c._closers)  # (closed apart from the call)
    assert a.closed == 1 and not c._left
    c._gateway = b  # type: ignore[assignment]
    c._busy[b] = 1  # type: ignore[index]
    await Client._fail_over(c, b)  # type: ignore[arg-type]  # lost, not slow
    assert b.closed == 1


async def test_a_call_cancelled_under_its_task_fails_over() -> None:
    """Another task's fail-over closed the channel under A's endorsement: grpc.aio ends the
    call with CancelledError though this task was not cancelled. That is a lost gateway: the
    step goes to B and the transaction commits. Red without `_attempt`'s stray-cancellation
    rule (the CancelledError reaches the caller)."""
    orderer = Orderer()
    a, b = Gateway(orderer, 0, dies=False), Gateway(orderer, 0, dies=False)

    async def cut(channel_id: str, proposal: bytes) -> Any:
        raise asyncio.CancelledError

    a.endorse_batched = cut  # type: ignore[method-assign]
    done = await client(a, b, 2.0).submit(CH, "kv", "put", "k", "v")
    assert orderer.ordered == [done.tx_id]


async def test_a_status_query_cut_under_its_task_fails_over() -> None:
    """The same for `commit_status`: A's query is cancelled under it; B answers. Red without
    `_status`'s stray-cancellation rule."""
    orderer = Orderer()
    a, b = Gateway(orderer, 0, dies=False), Gateway(orderer, 0, dies=False)
    orderer.ordered.append("t" * 64)

    async def cut(channel_id: str, tx_id: str) -> Any:
        raise asyncio.CancelledError

    a.commit_status = cut  # type: ignore[method-assign]
    status = await client(a, b, 2.0).commit_status(CH, "t" * 64)
    assert status is not None and status.valid


async def test_a_status_query_to_a_hung_gateway_fails_over_not_none() -> None:
    """A does not answer the status query and not a health check either (a stalled process):
    the query goes to B, which has the commit; with no gateway alive it is `Unavailable`,
    never None (not committed). A gateway alive and silent is None. Red with `_status`
    returning None at its timeout."""
    orderer = Orderer()
    a, b = Gateway(orderer, 0, dies=False), Gateway(orderer, 0, dies=False)
    orderer.ordered.append("t" * 64)

    async def hangs(channel_id: str, tx_id: str) -> Any:
        await asyncio.sleep(3600)

    a.commit_status = hangs  # type: ignore[method-assign]
    a.alive = False  # type: ignore[attr-defined]
    status = await client(a, b, 2.0).commit_status(CH, "t" * 64, wait_s=0.05)
    assert status is not None and status.valid
    b.commit_status = hangs  # type: ignore[method-assign]
    b.alive = False  # type: ignore[attr-defined]
    with pytest.raises(Unavailable):
        await client(a, b, 2.0).commit_status(CH, "t" * 64, wait_s=0.05)
    b.alive = True  # type: ignore[attr-defined]
    assert await client(b, b, 2.0).commit_status(CH, "t" * 64, wait_s=0.05) is None


async def test_a_cancelled_submit_that_commits_is_logged_with_its_tx_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`submit` cancelled after the hand-off, and the transaction then commits VALID: the log
    names the tx id at the cancel and at the commit (the caller lost it with its frame). Red
    without `_waited`'s warning and `Submitted._report`'s VALID line (nothing logged)."""
    orderer = Orderer()
    gateway = Held(orderer)
    c = alone(gateway)
    with caplog.at_level(logging.INFO, logger="dltmw.sdk"):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await c.submit(CH, "kv", "put", "k", "v")
        (tx_id,) = orderer.ordered
        cancel = [r for r in caplog.records if tx_id in r.getMessage()]
        assert cancel and cancel[0].levelno == logging.WARNING, caplog.text
        (task,) = c._tasks
        gateway.release.set()
        await asyncio.wait({task})
    committed = [r for r in caplog.records if tx_id in r.getMessage() and "VALID" in r.getMessage()]
    assert committed, caplog.text


async def test_close_cancels_every_task_at_once_and_refuses_new_ones() -> None:
    """Three transactions in flight, each taking a while to stop once cancelled: `close()`
    cancels all of them before waiting for any (one bound for all), and a `submit_async`
    endorsing while it closes, or after, is refused (CLOSED), nothing ordered. Red with
    `close()` cancelling and waiting one at a time (a cancel after another's end) or
    without the closing flag (a fourth transaction ordered after close)."""
    orderer = Orderer()
    events: list[str] = []

    class SlowToStop(Held):
        async def order_batched(self, channel_id: str, tx_id: str, payload: bytes) -> Any:
            self.orderer.ordered.append(tx_id)
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                events.append("cancelled")
                await asyncio.sleep(0.05)  # (its own clean-up)
                events.append("ended")
                raise

    gateway = SlowToStop(orderer)
    c = alone(gateway)
    handles = [await c.submit_async(CH, "kv", "put", f"k{i}", "v") for i in range(3)]
    await asyncio.sleep(0.01)
    endorsing = asyncio.Event()
    plain = gateway.endorse_batched

    async def held(channel_id: str, proposal: bytes) -> Any:
        endorsing.set()
        await asyncio.sleep(0.02)
        return await plain(channel_id, proposal)

    gateway.endorse_batched = held  # type: ignore[method-assign]
    late = asyncio.create_task(c.submit_async(CH, "kv", "put", "late", "v"))
    await endorsing.wait()
    await c.close()
    assert all(h.done() for h in handles)
    assert events == ["cancelled"] * 3 + ["ended"] * 3, events
    with pytest.raises(InvalidRequest) as raised:
        await late
    assert raised.value.reason == "CLOSED"
    with pytest.raises(InvalidRequest):
        await c.submit_async(CH, "kv", "put", "after", "v")
    assert len(orderer.ordered) == 3


async def test_a_wait_cancelled_in_the_turn_its_task_failed_still_logs_the_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The waiter is cancelled in the same loop turn as the ordering task fails: the failure
    is logged with the tx id, not lost between the two. Red without `committed()`'s report
    of a task already done."""
    orderer = Orderer()
    gateway = Held(orderer)
    gateway.fails = True
    c = alone(gateway)
    handle = await c.submit_async(CH, "kv", "put", "k", "v")
    waiter = asyncio.create_task(handle.committed())
    await asyncio.sleep(0.01)
    (task,) = c._tasks
    # (added after `Submitted._ended` and the wait's own callback: the same loop turn)
    task.add_done_callback(lambda _: waiter.cancel())
    with caplog.at_level(logging.WARNING, logger="dltmw.sdk.submitted"):
        gateway.release.set()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert [r for r in caplog.records if handle.tx_id in r.getMessage()], caplog.text


async def test_a_closed_client_never_connects_a_gateway_again() -> None:
    """A caller's own call (an endorse, `evaluate`, `commit_status`) cut under it by `close()`
    fails over; the fail-over's `_current()` must not dial a fresh gateway after the close —
    nothing would ever close it (review of sdk60b). Red without the closing check in
    `_current` (it goes on to the profile's endpoint)."""
    c = Client.__new__(Client)
    c._gateway, c._closing, c._lock = None, True, asyncio.Lock()
    c.profile = SimpleNamespace(gateways=[SimpleNamespace(name="gw", address="127.0.0.1:1")])
    with pytest.raises(InvalidRequest) as raised:
        await c._current()
    assert raised.value.reason == "CLOSED"
