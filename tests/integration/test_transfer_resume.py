"""A cross-channel DvP rides out a kill -9 of the solo orderer (issue 19, the acceptance run's
stall): `run_transfer` tries a step refused with UNAVAILABLE again (bounded backoff) instead of
taking the refusal as final. Without the retry, the locks fail while the orderer is down and
the driver, with the deadline far away, raises instead of settling."""

from __future__ import annotations

import asyncio

import pytest

from dltmw.client.transfer import _settle, dvp_terms, read_record, run_transfer

from .test_transfer_dvp import LEGS, TOPOLOGY, _balances, _setup, connect_legs

pytestmark = pytest.mark.integration
ORDERER = "orderer.exchange"
DEADLINE_S = 2_000_000_000
DOWN_S = 2.0  # the orderer stays down this long after the transfer started


async def test_a_transfer_started_while_the_orderer_is_down_completes_after_its_restart(
    network,
) -> None:
    net, sup = network(TOPOLOGY.read_text())
    await _setup(net)
    conns, legs = await connect_legs(net)
    trader = conns["peer.brokera"]
    try:
        sup.kill(ORDERER)  # kill -9: its queue holds only what it acknowledged
        terms = dvp_terms(LEGS, DEADLINE_S, "orderer-down-1")
        # wait_max_s=5: a driver that gave the locks up would wait for the deadline: it raises.
        running = asyncio.create_task(
            run_transfer(legs[0], legs[1], terms, DEADLINE_S, wait_max_s=5.0)
        )
        await asyncio.sleep(DOWN_S)
        assert not running.done(), "the transfer ended while the orderer was down"
        sup.start(ORDERER)
        await asyncio.to_thread(sup.wait_ready, ORDERER, 60.0)
        done = await asyncio.wait_for(running, 120)
        assert done.outcome == "claimed"
        assert await _balances(trader) == {"A-sec": 990, "B-sec": 10, "B-cash": 500, "A-cash": 500}

        # A claim whose answer was lost (its commit-status wait timed out) and is tried again:
        # the retry is refused (the record moved on), and the driver reads the record instead
        # of calling the transfer failed. Without that, _settle raises "was refused".
        tid = done.transfer_id
        record = await read_record(legs[0].gateway, legs[0].channel_id, tid)
        other = await read_record(legs[1].gateway, legs[1].channel_id, tid)
        again = await _settle(legs[0], legs[1], terms, "claim", other["locked_tx"])
        assert again == record["claimed_tx"]
        assert await _balances(trader) == {"A-sec": 990, "B-sec": 10, "B-cash": 500, "A-cash": 500}
    finally:
        for c in conns.values():
            await c.close()
