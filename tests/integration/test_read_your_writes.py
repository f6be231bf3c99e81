"""Read your own writes through the gateway, on real node processes (issue 14, item 1).

The user's sequence: open an account, wait until the commit status says VALID, and at once
deposit on it, under `AND(Org1.peer, Org2.peer)`. The commit status comes from the gateway's own
peer; the other organisation's peer may not have committed that block yet, and before session
consistency its refusal ("account does not exist") came back as a final CONTRACT_FAILED in 1-3
of 100 sequences. Now the SDK asks for endorsements at the height it saw committed and the
gateway re-asks an endorser that refused from behind, so not one sequence in 1,000 may fail.

The sequences are pipelined (several workers, each strictly open -> VALID -> deposit) over both
gateways, with short batches so that blocks follow each other closely. The lag is left to chance
here, and chance is stingy: on a 2-core machine main's code failed 12 of ~20,000 such sequences
(8 in its worst 1,000, most runs none). So this test is the user's acceptance check; the test
that fails every time the mechanism is broken is `tests/sim/test_read_your_writes_sim.py`, which
holds the other peer behind deterministically. The bank is `bank_rmw`, the paper's
read-modify-write bank: its deposit returns the balance it read (b"105"), so each answer also
shows the state the endorsers simulated on (`bank`'s deposit is a delta and returns nothing).
"""

from __future__ import annotations

import asyncio
import collections
import itertools

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import transaction_pb2

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
SEQUENCES = 1000
WORKERS = 16  # sequences in flight, split over the two gateways
RUN_BUDGET_S = 120.0


async def _sequence(client: GatewayClient, account: str) -> str | None:
    """open -> VALID -> deposit at once; None when both commit VALID, else what went wrong."""
    try:
        opened = await client.submit_transaction("trades", "bank_rmw", "open", account, "100")
        if opened.status.result != VALID:
            return f"open: {transaction_pb2.TxValidationCode.Name(opened.status.result)}"
        deposited = await client.submit_transaction("trades", "bank_rmw", "deposit", account, "5")
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}/{reason_of(exc)}: {exc.details()}"
    if deposited.status.result != VALID:
        return f"deposit: {transaction_pb2.TxValidationCode.Name(deposited.status.result)}"
    if deposited.result.payload != b"105":
        return f"deposit returned {deposited.result.payload!r}"
    return None


async def test_deposit_right_after_open_never_fails(network) -> None:
    net, _ = network(batch_ms=20)
    clients = [
        await GatewayClient.connect(net, "user1.org1"),
        await GatewayClient.connect(net, "user1.org2"),
    ]
    numbers = itertools.count()
    failures: list[str] = []

    async def worker(client: GatewayClient) -> None:
        while (n := next(numbers)) < SEQUENCES:
            problem = await _sequence(client, f"ryw{n}")
            if problem is not None:
                failures.append(problem)

    try:
        async with asyncio.timeout(RUN_BUDGET_S):
            await asyncio.gather(*(worker(clients[i % 2]) for i in range(WORKERS)))
    finally:
        for client in clients:
            await client.close()
    kinds = collections.Counter(f.split(":")[0] for f in failures)
    assert not failures, f"{len(failures)}/{SEQUENCES} sequences failed: {kinds} {failures[:3]}"
