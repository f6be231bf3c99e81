"""A block's private effects in a few statements (branch priv59): `PrivateTxn.apply` reads the
entries before in one `key IN (...)` per namespace and writes the last value of each key in
multi-row upserts, `record_many` records a block's transactions together, and the executor's
`record` hands them a block's transactions at once (between purges). On both backends, with a
real store: the result is exactly the one-statement-per-write one's (rows, versions, the state
accumulator), and a block of N transactions costs a bounded number of statements, not ~3 N.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from private_backends import PrivateSite

from dltmw.core.privacy.blocks import Executed, TxOutcome
from dltmw.core.rwset import StateWrite, Version
from dltmw.core.statehash import StateAccumulator, accumulate
from dltmw.ledger.private_sql import text
from dltmw.ledger.private_store import PrivateStore, PrivateTxn
from dltmw.runtime.roles.privacy.executor import record
from dltmw.v1 import privacy_manager_service_pb2 as P

EXECUTED = P.PRIVATE_TX_STATUS_EXECUTED
Model = dict[tuple[str, str], tuple[bytes, Version]]


def _state(psite: PrivateSite) -> Model:
    rows = psite.query("SELECT namespace, key, value, block_number, tx_index FROM pstate")
    return {(text(r[0]), text(r[1])): (bytes(r[2]), Version(r[3], r[4])) for r in rows}


def _stored_acc(psite: PrivateSite) -> StateAccumulator:
    return StateAccumulator.from_bytes(bytes(psite.query("SELECT acc FROM pstate_acc")[0][0]))


def _writes(rng: random.Random, count: int, block: int) -> list[StateWrite]:
    """Writes over 2 namespaces x 90 keys (more than one 64-key read chunk), a fifth deletes,
    keys repeated within the list (the last write wins)."""
    out = []
    for i in range(count):
        ns, key = rng.choice(("kv", "other")), f"k{rng.randrange(90)}"
        value = None if rng.random() < 0.2 else rng.randbytes(rng.randrange(1, 40))
        out.append(StateWrite(ns, key, value, Version(block, i)))
    return out


def _model_apply(model: Model, writes: Sequence[StateWrite]) -> None:
    """The one-write-at-a-time rule: each write replaces or deletes its key, in order."""
    for w in writes:
        if w.value is None:
            model.pop((w.namespace, w.key), None)
        else:
            model[(w.namespace, w.key)] = (w.value, w.version)


async def test_batched_apply_leaves_the_state_and_accumulator_of_one_write_at_a_time(
    psite: PrivateSite,
) -> None:
    """Random writes (repeats, deletes, two namespaces, > 64 keys) applied in several calls of
    one transaction, on a non-empty state: the table is the model's, and the stored
    accumulator is the one computed from scratch over the model's entries (so every entry
    before was found and removed). Red with the entries before not read (`_entries` -> {}):
    the accumulator keeps terms of overwritten values."""
    rng = random.Random(59)
    store = await psite.open()
    model: Model = {}
    try:
        for block in range(1, 6):
            calls = [_writes(rng, rng.randrange(0, 120), block) for _ in range(3)]

            def run(txn: PrivateTxn, calls: list[list[StateWrite]] = calls, n: int = block) -> None:
                for writes in calls:
                    txn.apply(writes)
                txn.set_cursor(n + 1)

            await store.transaction(run)
            for writes in calls:
                _model_apply(model, writes)
            assert _state(psite) == model
            expected = accumulate((ns, k, v, ver) for (ns, k), (v, ver) in model.items())
            assert _stored_acc(psite) == expected
    finally:
        await store.close()


class Counting:
    """A store connection that counts the statements run through it (a row of an
    executemany counts as one: sqlite steps it once per row)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.statements = 0

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        self.statements += 1
        return self._db.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        rows = list(parameters)
        self.statements += len(rows)
        return self._db.executemany(sql, rows)


async def _record_block(store: PrivateStore, executed: Executed) -> int:
    counted: list[int] = []

    def run(txn: PrivateTxn) -> None:
        counting = Counting(txn.db)
        record(PrivateTxn(counting), executed)
        counted.append(counting.statements)

    await store.transaction(run)
    return counted[0]


def _block(number: int, count: int) -> Executed:
    """A block of `count` private puts of fresh keys (the bench's private workload)."""
    outcomes = tuple(
        TxOutcome(
            index,
            f"tx-{number}-{index}",
            bytes([number % 256, index % 256]) * 16,
            EXECUTED,
            (StateWrite("kv", f"p{number}-{index}", b"v" * 64, Version(number, index)),),
            b"h" * 32,
        )
        for index in range(count)
    )
    return Executed(number, outcomes)


async def test_a_block_of_private_puts_costs_a_few_statements_not_three_per_transaction(
    psite: PrivateSite,
) -> None:
    """A block of 50 private puts is recorded in 11 statements (the accumulator's read, one
    read of the keys before, an upsert and a record per power-of-two chunk: 32 + 16 + 2, the
    cursor's 3), where one write at a time ran a read, an upsert and a record per
    transaction (153). Red with `record` applying each transaction alone."""
    store = await psite.open()
    try:
        first = await _record_block(store, _block(1, 50))
        again = await _record_block(store, _block(2, 50))
        assert first <= 11, first
        assert again <= 11, again
        rows = psite.query("SELECT count(*) FROM ptxs")
        assert rows[0][0] == 100
        assert len(_state(psite)) == 100
    finally:
        await store.close()
