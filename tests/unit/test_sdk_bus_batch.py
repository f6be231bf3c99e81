"""`Bus.publish_batch` on cancellation (review of sdk60b, item 5), over the fake gateways of
test_sdk_submit_async.py: a batch is ONE transaction, so its one tx id names every message. A
`publish_batch` cancelled after the hand-off logs that tx id (as `publish`: `Client.submit`)
and the batch commits all the same; `publish_batch_async`'s handle keeps the tx id across a
cancelled wait."""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_sdk_reference_failover import CH, Orderer
from test_sdk_submit_async import Held, alone

from dltmw.sdk.bus import Bus

MESSAGES = [(b"one", None), (b"two", {"k": "v"})]


async def test_a_cancelled_publish_batch_names_its_one_tx_id_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Red with `publish_batch` waiting outside `Client.submit`'s logged wait (no tx id)."""
    orderer = Orderer()
    gateway = Held(orderer)
    c = alone(gateway)
    with caplog.at_level(logging.WARNING, logger="dltmw.sdk"), pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await Bus(c, CH).publish_batch("trades", MESSAGES)
    (tx_id,) = orderer.ordered  # one transaction for the batch
    assert tx_id in caplog.text, caplog.text
    (task,) = c._tasks
    gateway.release.set()
    assert (await task).tx_id == tx_id


async def test_publish_batch_async_keeps_its_tx_id_across_a_cancelled_wait() -> None:
    """The handle's wait is cut by the publisher's own timeout: the tx id stays, the batch
    goes on and commits under it, ordered once. Red without `publish_batch_async`."""
    orderer = Orderer()
    gateway = Held(orderer)
    handle = await Bus(alone(gateway), CH).publish_batch_async("trades", MESSAGES)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await handle.committed()
    gateway.release.set()
    done = await handle.committed()
    assert done.tx_id == handle.tx_id and orderer.ordered == [handle.tx_id]
