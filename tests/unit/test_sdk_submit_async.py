"""The SDK's `Client.submit_async` handle and the outcome rules around it (issue 13/18, sdk60).

A caller that cancels its wait after the hand-off must keep its transaction's tx id and fate
(the handle holds both; the ordering runs in the client's task, not the caller's frame); after
a hand-off every failure is `CommitUnknown`, an OVERLOADED answer included; an error of a step
that had a tx id names it; one gateway that hangs cannot spend the whole deadline. The gateways
are the fakes of test_sdk_reference_failover.py (below the I/O boundary); the real-process
tests are tests/integration/test_sdk_submit_async.py. Each test says what it is red without.
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from test_private_pending import refused
from test_sdk_reference_failover import CH, Gateway, Orderer, client

from dltmw.sdk import client as sdk_client
from dltmw.sdk.errors import CommitUnknown, Overloaded, Unavailable
from dltmw.v1 import errors_pb2 as R
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import transaction_pb2 as C


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_client, "REFERENCE_LAG_S", 0.001)
    monkeypatch.setattr(sdk_client, "STATUS_PROBE_S", 0.05)


class Held(Gateway):
    """A gateway whose order step takes the envelope and answers only when `release` is set."""

    def __init__(self, orderer: Orderer) -> None:
        super().__init__(orderer, 0, dies=False)
        self.release = asyncio.Event()
        self.fails = False  # on release: the gateway is lost (UNAVAILABLE)

    async def order_batched(self, channel_id: str, tx_id: str, payload: bytes) -> Any:
        self.orderer.ordered.append(tx_id)
        await self.release.wait()
        if self.fails:
            raise refused(R.ERROR_REASON_PEER_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, {})
        return G.CommitStatusResponse(result=C.TX_VALIDATION_CODE_VALID, block_number=7)


def alone(gateway: Gateway, deadline_s: float = 5.0) -> sdk_client.Client:
    c = client(gateway, gateway, deadline_s)
    c.profile = SimpleNamespace(gateways=[gateway])
    return c


async def test_a_cancelled_wait_keeps_the_tx_id_and_the_transaction_goes_on() -> None:
    """The caller's own timeout cuts `committed()` after the hand-off: the handle still names
    the tx id, the ordering carries on, and a second wait returns its commit — ordered once.
    Red without `asyncio.shield` in `Submitted.committed` (the cancel reaches the ordering
    task: the second wait raises)."""
    orderer = Orderer()
    gateway = Held(orderer)
    c = alone(gateway)
    handle = await c.submit_async(CH, "kv", "put", "k", "v")
    tx_id = handle.tx_id
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await handle.committed()
    assert orderer.ordered == [tx_id] and not handle.done()
    gateway.release.set()
    done = await handle.committed()
    assert done.tx_id == tx_id and done.block_number == 7 and orderer.ordered == [tx_id]
    status = await handle.status()
    assert status is not None and status.valid and status.block_number == 7


async def test_a_cancelled_submit_leaves_the_transaction_going_and_a_failure_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`submit` itself cancelled after the hand-off: the transaction is not abandoned half-way
    (it is ordered once), and its failure, which nobody waits for any more, is logged with the
    tx id — never lost silently. Red without `Submitted._ended`'s log line."""
    orderer = Orderer()
    gateway = Held(orderer)
    c = alone(gateway)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await c.submit(CH, "kv", "put", "k", "v")
    assert len(orderer.ordered) == 1
    (task,) = c._tasks
    with caplog.at_level(logging.WARNING, logger="dltmw.sdk.submitted"):
        gateway.fails = True
        gateway.release.set()
        await asyncio.wait({task})
    assert [r for r in caplog.records if orderer.ordered[0] in r.getMessage()], caplog.text


async def test_closing_the_client_under_a_handle_is_commit_unknown() -> None:
    """`close()` stops the ordering task: the handle's wait says the outcome is unknown (with
    the tx id), not a bare CancelledError, as soon as `close()` returned. Red without
    `Submitted.committed`'s check, or without `close()`'s cancel (the handle not done)."""
    orderer = Orderer()
    c = alone(Held(orderer))
    handle = await c.submit_async(CH, "kv", "put", "k", "v")
    waiter = asyncio.create_task(handle.committed())
    await asyncio.sleep(0.01)
    await c.close()
    assert handle.done()  # (stopped by close, not by the deadline)
    with pytest.raises(CommitUnknown) as raised:
        await waiter
    assert raised.value.tx_id == handle.tx_id == orderer.ordered[0]
    assert raised.value.code == "CANCELLED"


async def test_commit_status_by_tx_id() -> None:
    """`Client.commit_status`: a committed transaction at once, any code; one not on the
    ledger None after `wait_s`, not an error."""
    orderer = Orderer()
    gateway = Gateway(orderer, 0, dies=False)
    c = alone(gateway)
    done = await c.submit(CH, "kv", "put", "k", "v")
    status = await c.commit_status(CH, done.tx_id)
    assert status is not None and status.tx_id == done.tx_id and status.validation_code == "VALID"
    assert await c.commit_status(CH, "f" * 64, wait_s=0.05) is None


async def test_overloaded_after_the_order_step_took_the_envelope_is_commit_unknown() -> None:
    """The gateway's first orderer took the envelope and did not answer; the orderer it
    widened to refused for load, and the gateway returns that last trouble (OVERLOADED). A
    retryable `Overloaded` without tx id would invite a second submit — a second
    transaction: it is `CommitUnknown`, and the resume commits the one tx id once. Red
    without `Overloaded` in `_order`'s lost check."""
    orderer = Orderer()
    gateway = Gateway(orderer, 0, dies=False)
    plain = gateway.order_batched

    async def widened(channel_id: str, tx_id: str, payload: bytes) -> Any:
        orderer.ordered.append(tx_id)  # the first orderer has it
        raise refused(R.ERROR_REASON_OVERLOADED, grpc.StatusCode.RESOURCE_EXHAUSTED, {})

    gateway.order_batched = widened  # type: ignore[method-assign]
    c = alone(gateway)
    with pytest.raises(CommitUnknown) as raised:
        await c.submit(CH, "kv", "put", "k", "v")
    unknown = raised.value
    assert unknown.reason == "OVERLOADED" and not unknown.retryable
    assert not isinstance(unknown, Overloaded) and orderer.ordered == [unknown.tx_id]
    gateway.order_batched = plain  # type: ignore[method-assign]
    done = await c.resume_submit(unknown)
    assert done.tx_id == unknown.tx_id and orderer.ordered == [unknown.tx_id]


async def test_a_deadline_before_the_hand_off_names_the_tx_id() -> None:
    """The endorsement does not answer within the deadline: a retryable `Unavailable`
    (nothing was ordered) that names the proposal's tx id. Red without `_naming`."""
    gateway = Gateway(Orderer(), 0, dies=False)

    async def hangs(channel_id: str, proposal: bytes) -> Any:
        await asyncio.sleep(3600)

    gateway.endorse_batched = hangs  # type: ignore[method-assign]
    with pytest.raises(Unavailable) as raised:
        await alone(gateway, 0.2).submit(CH, "kv", "put", "k", "v")
    assert raised.value.code == "DEADLINE" and raised.value.retryable
    assert len(raised.value.metadata["tx_id"]) == 64


async def test_a_hanging_gateway_gets_its_share_of_the_deadline_not_all_of_it() -> None:
    """Gateway A hangs at endorsement; B answers. With two gateways A gets half of the
    deadline, then the step is repeated on B and the transaction commits. Red with
    `_attempt` giving each attempt all that is left (A spends the deadline: Unavailable)."""
    orderer = Orderer()
    a, b = Gateway(orderer, 0, dies=False), Gateway(orderer, 0, dies=False)

    async def hangs(channel_id: str, proposal: bytes) -> Any:
        await asyncio.sleep(3600)

    a.endorse_batched = hangs  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = await client(a, b, 1.0).submit(CH, "kv", "put", "k", "v")
    assert orderer.ordered == [done.tx_id]
    assert loop.time() - started < 1.0  # (B answered within the deadline, after A's half)
