"""A peer following an orderer that withholds blocks catches up (issue 18's BFT channel), on real
processes.

bft-four (services/networks/bft-four.toml, PBFT-lite n = 4) with orderer.a — the orderer both
peers follow first — running the TEST-ONLY withhold fault from block 1 on
(`DLTMW_TEST_BYZANTINE=orderer.a:withhold:1`, `dltmw/runtime/roles/orderer/withhold.py`): it
orders and answers Broadcast correctly, but its Deliver streams stay open and send nothing past
block 0. A client follows peer0.org2's Events stream and submits puts through peer0.org1's
gateway (the kv contract's `OR` policy: peer0.org2 is never asked to endorse, so nothing asks it
for a newer block — it only serves the Events stream). Asserted: every transaction commits
VALID; peer0.org2's Events stream delivers the blocks that hold them; each peer counted a
censorship switch (`dltmw_deliver_censorship_switches_total`); orderers and peers hold one
chain; the hook was active; every node stops cleanly. With the monitor off
(`censorship_timeout_s = 0` in the peers' node.toml) the transactions are not answered and the
Events stream delivers nothing: the test is red (shown in benchmarks/RESULTS.md, lane deliver).
"""

from __future__ import annotations

import asyncio

import pytest

from dltmw.client import GatewayClient
from dltmw.runtime.roles.orderer.withhold import HOOK_ENV
from dltmw.v1 import transaction_pb2

from .operations_http import scrape, value
from .test_censoring_orderer import _log, _one_chain
from .test_pbft_ordering import TOPOLOGY as PBFT_TOPOLOGY

pytestmark = pytest.mark.integration
TOPOLOGY = PBFT_TOPOLOGY  # bft-four on the envelope path (test_pbft_ordering.TOPOLOGY)
PEERS = ["peer0.org1", "peer0.org2"]
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
TXS = 4
BOUND_S = 60.0  # a bound on every wait (the switch comes after 3 s): no timing is asserted


async def test_a_peer_leaves_a_withholding_orderer_and_its_events_flow(
    network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOOK_ENV, "orderer.a:withhold:1")
    net, sup = network(TOPOLOGY)
    writer = await GatewayClient.connect(net, "user1.org1")
    reader = await GatewayClient.connect(net, "user1.org2")
    seen: list[int] = []
    wanted: set[int] = set()
    got_all = asyncio.Event()

    async def follow_events() -> None:
        async for response in reader.events("trades", start_block=1):
            seen.append(response.block_number)
            if wanted and wanted <= set(seen):
                got_all.set()

    events = asyncio.create_task(follow_events())
    try:
        done = await asyncio.wait_for(
            asyncio.gather(
                *(
                    writer.submit_transaction("trades", "kv", "put", f"k{i}", "v")
                    for i in range(TXS)
                )
            ),
            BOUND_S,
        )
        assert [d.status.result for d in done] == [VALID] * TXS, [d.status for d in done]
        wanted.update(d.status.block_number for d in done)
        if wanted <= set(seen):
            got_all.set()
        await asyncio.wait_for(got_all.wait(), BOUND_S)
    finally:
        events.cancel()
        await asyncio.gather(events, return_exceptions=True)
        for client in (writer, reader):
            await client.close()
    assert sorted(set(seen)) == sorted(seen) and min(seen) == 1, seen
    chains = await _one_chain(net, 30)
    assert all(c == chains[0] for c in chains), "orderers and peers do not hold one chain"
    assert "TEST-ONLY byzantine hook active on orderer.a" in _log(net, "orderer.a")
    switches = [
        value(
            await asyncio.to_thread(scrape, sup.operations_address(p)),
            "dltmw_deliver_censorship_switches_total",
            channel="trades",
        )
        for p in PEERS
    ]
    assert all(s >= 1 for s in switches), switches
    for peer in PEERS:
        assert "orderer orderer.a withheld block" in _log(net, peer)
    codes = sup.stop_all()
    assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"
