"""A censoring PBFT-lite primary cannot halt a BFT channel (issue 18), on real processes.

bft-four (services/networks/bft-four.toml) with orderer.a, the primary of view 0 and the
orderer both gateways ask first, running the TEST-ONLY censor hook
(`DLTMW_TEST_BYZANTINE=orderer.a:censor`, `dltmw/runtime/roles/orderer/byzantine.py`): as primary
it admits every request and never proposes or relays it, and otherwise takes part correctly.
Transactions are submitted through both gateways at once. Asserted: each commits VALID, in
time (the gateways' ordering deadline sends each envelope to a backup too, which relays it; the
backups' request timers then replace the primary: one deadline, one request timeout and a view
change); no envelope is ordered twice and all four orderers and both peers hold one chain; the
hook really censored; the gateways counted their widened submissions; every node stops cleanly.
Negative control (the stall itself) is the simulator's (`tests/sim/test_pbft_censor_sim.py`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.core.block import block_hash
from dltmw.core.pbft import request_id
from dltmw.runtime.roles.orderer.withhold import HOOK_ENV
from dltmw.v1 import transaction_pb2

from .operations_http import scrape, value
from .test_pbft_ordering import TOPOLOGY as PBFT_TOPOLOGY
from .test_pbft_ordering import _blocks

pytestmark = pytest.mark.integration
TOPOLOGY = PBFT_TOPOLOGY  # bft-four on the envelope path (test_pbft_ordering.TOPOLOGY)
ORDERERS = ["orderer.a", "orderer.b", "orderer.c", "orderer.d"]
PEERS = ["peer0.org1", "peer0.org2"]
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
TXS = 8
ANSWERED_WITHIN_S = 40.0  # deadline 4 s + request timeout 2 s + a view change, with room


def _log(net: Path, node: str) -> str:
    return (net / "run" / "logs" / f"{node}.log").read_text(errors="replace")


async def _one_chain(net: Path, timeout_s: float) -> list[list[bytes]]:
    deadline = time.monotonic() + timeout_s
    while True:
        chains = [[block_hash(b) for b in _blocks(net, o)] for o in ORDERERS]
        chains += [[block_hash(b) for b in _blocks(net, p, "peer")] for p in PEERS]
        if all(c == chains[0] for c in chains) or time.monotonic() > deadline:
            return chains
        await asyncio.sleep(0.2)


async def test_a_censoring_primary_cannot_stop_transactions(
    network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOOK_ENV, "orderer.a:censor")
    net, sup = network(TOPOLOGY)
    clients = [await GatewayClient.connect(net, c) for c in ("user1.org1", "user1.org2")]
    started = time.monotonic()
    try:
        done = await asyncio.wait_for(
            asyncio.gather(
                *(
                    clients[i % 2].submit_transaction("trades", "kv", "put", f"k{i}", "v")
                    for i in range(TXS)
                )
            ),
            ANSWERED_WITHIN_S,
        )
    finally:
        for client in clients:
            await client.close()
    took = time.monotonic() - started
    assert [d.status.result for d in done] == [VALID] * TXS, [d.status for d in done]
    chains = await _one_chain(net, 30)
    assert all(c == chains[0] for c in chains), "orderers and peers do not hold one chain"
    envelopes = [e for b in _blocks(net, "orderer.b")[1:] for e in b.data.envelopes]
    ids = [request_id(e) for e in envelopes]
    assert len(ids) == len(set(ids)) == TXS, "an envelope was ordered twice, or one is missing"
    assert "censoring as primary of view 0" in _log(net, "orderer.a"), "the hook never censored"
    widened = [
        value(
            await asyncio.to_thread(scrape, sup.operations_address(p)),
            "dltmw_gateway_ordering_widened_total",
            channel="trades",
        )
        for p in PEERS
    ]
    assert sum(widened) >= 1, widened
    codes = sup.stop_all()
    assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"
    print(f"{TXS} transactions VALID in {took:.1f} s with a censoring primary")
