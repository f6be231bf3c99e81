"""After a notary or UTXO run: does every node's store hold what the client was told?

The counterpart of `runner.check_ledgers` (peers' ledgers) for the flows without a ledger, with
the same per-node figures (`found`, `missing`, `mismatched`, `valid`) so the report's
`ledgers_agree` means the same for every flow:

- notary flow: every notary (each member of a cluster) has the transaction in its `notarised`
  table (a cluster member applies decisions in order; one a moment behind is polled);
- utxo flow: both vaults of a DvP (the seller's, `Op.channel`, and the buyer's, `args[0]`) hold
  the final transaction in their `transactions` table.

Read-only sqlite, polled until complete or the deadline (then `missing` says how many).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from dltmw.bench.driver import Outcome
from dltmw.bench.params import Op
from dltmw.bench.topology import NetworkShape

VALID = 1
DEADLINE_S = 60.0
CHUNK = 500


def held(path: Path, table: str, tx_ids: Sequence[str]) -> set[str]:
    """Which of `tx_ids` the `tx_id` column of `table` holds, read-only (none if no file)."""
    if not path.exists():
        return set()
    out: set[str] = set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for i in range(0, len(tx_ids), CHUNK):
            chunk = list(tx_ids[i : i + CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT tx_id FROM {table} WHERE tx_id IN ({marks})", chunk)
            out.update(str(t) for (t,) in rows)
    finally:
        conn.close()
    return out


def expected_by_node(
    shape: NetworkShape, records: Sequence[tuple[Op, Outcome]]
) -> dict[str, list[str]]:
    """Node -> the transactions it must hold (only those the client was told are final)."""
    final = [(op, out.tx_id) for op, out in records if out.code == VALID]
    if shape.flow == "notary":
        return {n: [t for _, t in final] for n in shape.notary_ids()}
    return {v: [t for op, t in final if v in (op.channel, op.args[0])] for v in shape.vault_ids()}


def store_of(net: Path, shape: NetworkShape, node: str) -> tuple[Path, str]:
    """The sqlite file and table a node keeps its final transactions in."""
    data = net / "nodes" / node / "data"
    if shape.flow == "notary":
        return data / "notary.sqlite", "notarised"
    return data / "vault.sqlite", "transactions"


async def check_stores(
    net: Path, shape: NetworkShape, records: Sequence[tuple[Op, Outcome]]
) -> dict[str, dict[str, int]]:
    """Per node: found / missing (never mismatched: a store holds final transactions only)."""
    report: dict[str, dict[str, int]] = {}
    for node, tx_ids in expected_by_node(shape, records).items():
        path, table = store_of(net, shape, node)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            got = await asyncio.to_thread(held, path, table, tx_ids)
            if len(got) == len(tx_ids) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        report[node] = {
            "found": len(got),
            "missing": len(tx_ids) - len(got),
            "mismatched": 0,
            "valid": len(got),
            "expected_valid": len(tx_ids),  # a vault holds only the DvPs it is a party to
        }
    return report
