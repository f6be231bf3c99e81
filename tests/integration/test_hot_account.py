"""One hot account on real node processes (issue 13 item 2): bounded deltas do not collapse.

One network, blocks cut by the limits only (300 ms), so transactions endorsed on ONE state and
then submitted together land in one block — the case where read-modify-write fails all but the
first. On it:

1. the paper's Figure 8 with `bank_rmw` (the read-modify-write bank kept as its own contract):
   VALID, VALID, MVCC_READ_CONFLICT, exactly as with `bank` in test_figure8.py;
2. `bank`: 16 withdrawals of 30 and 16 deposits of 1 on one account holding 100, every one
   endorsed on the same state (100, so none is refused at endorsement) and then submitted: each
   commits VALID or DELTA_BOUND_VIOLATED (withdrawals of 480 > 116 make some violate), none
   MVCC_READ_CONFLICT; both peers hold the same balance, equal to 100 plus the valid amounts,
   and replaying the valid ones in commit order never goes below 0;
3. the control: the same deposits with `bank_rmw` conflict (so 2 tests the mechanism).
"""

from __future__ import annotations

import asyncio

import pytest

from dltmw.client import GatewayClient
from dltmw.v1 import transaction_pb2

from .figure8 import CODES, open_accounts, run_steps

pytestmark = pytest.mark.integration
T = transaction_pb2
VALID = T.TX_VALIDATION_CODE_VALID
BOUND = T.TX_VALIDATION_CODE_DELTA_BOUND_VIOLATED
MVCC = T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT


async def _endorse_then_submit(
    c: GatewayClient, contract: str, calls: list[tuple[str, str]]
) -> list[tuple[int, int, int]]:
    """Endorse every (function, amount) on account H first, then submit all; per call its
    (block_number, tx_index, code)."""
    proposals = [c.proposal("trades", contract, fn, ["H", amount]) for fn, amount in calls]
    endorsed = [await c.endorse(signed) for signed, _ in proposals]
    await asyncio.gather(*(c.submit(c.envelope(e.prepared_payload)) for e in endorsed))
    statuses = [await c.commit_status("trades", tx_id) for _, tx_id in proposals]
    return [(s.block_number, s.tx_index, s.result) for s in statuses]


async def test_hot_account_deltas_commit_where_read_modify_write_conflicts(network) -> None:
    net, _ = network(batch_ms=300, by_limits_only=True)
    c = await GatewayClient.connect(net, "user1.org1")
    other = await GatewayClient.connect(net, "user1.org2")
    try:
        await open_accounts(c, "bank_rmw")
        assert [s.result for _, s in await run_steps(c, "bank_rmw")] == CODES

        for contract in ("bank", "bank_rmw"):
            opened = await c.submit_transaction("trades", contract, "open", "H", "100")
            assert opened.status.result == VALID
        calls = [("withdraw", "30"), ("deposit", "1")] * 16
        outcomes = await _endorse_then_submit(c, "bank", calls)
        codes = [code for _, _, code in outcomes]
        assert set(codes) <= {VALID, BOUND} and BOUND in codes, codes
        signed = [-30 if fn == "withdraw" else 1 for fn, _ in calls]
        balance = 100
        for (_, _, code), amount in sorted(zip(outcomes, signed, strict=True)):
            if code == VALID:
                balance += amount
                assert balance >= 0
            else:  # the bound refused only a withdrawal that would overdraw
                assert balance + amount < 0
        other.observe_block("trades", c.seen_block("trades"))  # read at >= the last block
        held = [
            int((await g.evaluate("trades", "bank", "balance", "H")).payload) for g in (c, other)
        ]
        assert held == [balance, balance]

        control = await _endorse_then_submit(c, "bank_rmw", [("deposit", "1")] * 4)
        assert [code for _, _, code in control].count(MVCC) == 3
    finally:
        await c.close()
        await other.close()
