"""The hot-account invariants, checked on every peer after a `hot` run (issue 13 item 2).

The client knows, for every committed transaction, its amount (+ for a deposit, - for a
withdrawal), its validation code and its position (block, tx_index): the order in which every
peer applied it (`check_ledgers` has already shown every peer recorded the same codes). From
that, `invariants` replays the account in commit order and says:

- `bound_kept`: the balance after every valid transaction was >= 0 (the withdrawals' bound);
- `violations_justified`: every DELTA_BOUND_VIOLATED transaction would indeed have taken the
  balance below 0 at its position (so the bound did not refuse a valid withdrawal);
- `final_equal`: each peer's stored balance equals the opening balance plus the valid amounts.

A transaction that failed at the client before its commit status (a timeout, say) but still
committed would make `final_equal` false: the check errs towards reporting, never hiding.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dltmw.bench.driver import Outcome
from dltmw.bench.topology import NetworkShape
from dltmw.bench.workloads import HotAccountWorkload, Op
from dltmw.v1 import transaction_pb2

VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
BOUND_VIOLATED = transaction_pb2.TX_VALIDATION_CODE_DELTA_BOUND_VIOLATED


def signed_amount(op: Op) -> int:
    """What `op` adds to the account: + for a deposit, - for a withdrawal."""
    amount = int(op.args[1])
    return -amount if op.function == "withdraw" else amount


def invariants(
    initial: int,
    records: Sequence[tuple[Op, Outcome]],
    balances: Mapping[str, int | None],
) -> dict[str, Any]:
    """The invariants of one channel's hot account (see the module docstring)."""
    committed = sorted(
        ((o.block, o.index, signed_amount(op), o.code) for op, o in records if o.code is not None),
        key=lambda r: (r[0], r[1]),
    )
    running = lowest = initial
    justified = True
    violations = 0
    for _, _, amount, code in committed:
        if code == VALID:
            running += amount
            lowest = min(lowest, running)
        elif code == BOUND_VIOLATED:
            violations += 1
            justified = justified and running + amount < 0
    return {
        "initial_balance": initial,
        "expected_balance": running,
        "peer_balances": dict(balances),
        "lowest_balance": lowest,
        "bound_violations": violations,
        "bound_kept": lowest >= 0,
        "violations_justified": justified,
        "final_equal": bool(balances) and all(b == running for b in balances.values()),
    }


def read_balance(path: Path, namespace: str, account: str) -> int | None:
    """A peer's stored balance of `account` (read-only), or None when it has none."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT value FROM state WHERE namespace = ? AND key = ?", (namespace, account)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else int(bytes(row[0]))


async def check_hot_account(
    ledger_of: Callable[[str, str], Path],
    shape: NetworkShape,
    workload: HotAccountWorkload,
    records: Sequence[tuple[Op, Outcome]],
) -> dict[str, Any]:
    """Per channel, the invariants with every peer's stored balance; `hold`: all of them hold.
    `ledger_of(peer, channel)` is where that peer keeps that channel's ledger."""
    out: dict[str, Any] = {}
    for channel in shape.channel_ids():
        balances = {
            peer: await asyncio.to_thread(
                read_balance, ledger_of(peer, channel), workload.contract, workload.account
            )
            for peer in shape.peer_ids()
        }
        mine = [(op, o) for op, o in records if op.channel == channel]
        out[channel] = invariants(workload.initial, mine, balances)
    out["hold"] = all(
        v["bound_kept"] and v["violations_justified"] and v["final_equal"]
        for k, v in out.items()
        if k != "hold"
    )
    return out
