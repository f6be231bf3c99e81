"""The paper's Figure 8 through a gateway: three accounts opened, then three transactions
endorsed on one state and submitted into one block — deposit A, withdraw B, payment A -> C —
of which the payment reads A's old version and so fails MVCC.
"""

from __future__ import annotations

from dltmw.client import GatewayClient
from dltmw.v1 import gateway_service_pb2, transaction_pb2

T = transaction_pb2
STEPS = [
    ("deposit", ["A", "5000"]),
    ("withdraw", ["B", "2000"]),
    ("payment", ["A", "C", "3000"]),
]
CODES = [
    T.TX_VALIDATION_CODE_VALID,
    T.TX_VALIDATION_CODE_VALID,
    T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT,
]


async def open_accounts(c: GatewayClient, contract: str = "bank") -> None:
    """A, B and C with 10000 each, one committed transaction after another."""
    for a in "ABC":
        done = await c.submit_transaction("trades", contract, "open", a, "10000")
        assert done.status.result == T.TX_VALIDATION_CODE_VALID


async def run_steps(
    c: GatewayClient, contract: str = "bank"
) -> list[tuple[str, gateway_service_pb2.CommitStatusResponse]]:
    """Endorse all three first (one state), then submit them in order; (tx_id, status) each.
    `bank` and the paper's read-modify-write `bank_rmw` both give Figure 8."""
    proposals = [c.proposal("trades", contract, fn, args) for fn, args in STEPS]
    endorsed = [await c.endorse(signed) for signed, _ in proposals]
    for e in endorsed:
        await c.submit(c.envelope(e.prepared_payload))
    return [(tx_id, await c.commit_status("trades", tx_id)) for _, tx_id in proposals]
