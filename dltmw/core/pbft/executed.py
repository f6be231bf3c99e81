"""Which of a step's records an orderer writes with its block, and in which order (pure rules).

A PBFT-lite orderer keeps two kinds of records (docs/ordering.md, "Where a replica's records
live"): the *executed* records — `DecidedRecord`, `AssembledRecord`, `JumpRecord`: what was
decided, what each slot took, which blocks were jumped over — say what its chain holds or is
about to hold, so they live in a table of the orderer ledger's own sqlite file and can be
written in the same transaction as the block they make (one thread hop and one fsync per slot
less than a file of their own). Everything else — stored batches, our votes, prepared
certificates, views, stable checkpoints — stays in the replica's record file (batches are large
and belong to no block yet). SQLite cannot commit two files atomically, so a step's records are
written as up to three transactions, in an order chosen so that every crash between two of them
leaves a state a restart already handles (`write_phases`, `moves_to_block`):

1. the stored batches (record file): an assembled record never names a batch not yet durable;
2. the executed records (ledger file), with the step's first block when it moves there;
3. the rest (record file): our votes, prepared certificates, views, the stable checkpoint.

A crash after 1 leaves batches only (a replica may hold any batch). A crash after 2 loses only
records nobody has heard of yet (sends come after all three): our votes (never sent, so never
contradicted), a stable checkpoint (learnt again from the checkpoint messages). When a step has
no stable checkpoint and no jump, 3 may come before 2 — the votes with the batches in one
transaction, the executed records with the block (`moves_to_block`): a crash between them then
loses the decision of the step, which the replica learns again from its peers (their
retransmitted votes or state transfer), as if the deciding messages had not arrived. Votes
never depend on an executed record of their own step: the window that admits them moves with
the stable checkpoint only (`State.in_window`), which is why a step with one keeps the order
1-2-3. A restart reads the record file's rows, then the ledger table's (`restore_order`):
batches before the assemblies that name them, and decided and jump records in the order they
were made (they share the table).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from dltmw.core.pbft.assembly import AssembledRecord
from dltmw.core.pbft.dissemination import BatchRecord
from dltmw.core.pbft.types import DecidedRecord, JumpRecord, StableRecord

R = TypeVar("R")


def executed(record: object) -> bool:
    """Is `record` one of the executed records the ledger file keeps (module docstring)?"""
    return isinstance(record, DecidedRecord | AssembledRecord | JumpRecord)


def moves_to_block(records: Sequence[object]) -> bool:
    """May the executed records of a step with a block be written in that block's transaction,
    after the step's other records? Only without a stable checkpoint or a jump in the step
    (module docstring: votes the new window admits must not be durable before it)."""
    if not any(executed(r) for r in records):
        return False
    return not any(isinstance(r, StableRecord | JumpRecord) for r in records)


def write_phases(records: Sequence[R]) -> list[tuple[bool, list[R]]]:
    """The transactions a step's records are written in, in order, as (in the ledger file,
    records); empty ones left out: the batches, the executed records, the rest."""
    batches: list[R] = [r for r in records if isinstance(r, BatchRecord)]
    done: list[R] = [r for r in records if executed(r)]
    rest: list[R] = [r for r in records if not isinstance(r, BatchRecord) and not executed(r)]
    phases = [(False, batches), (True, done), (False, rest)]
    return [(in_ledger, some) for in_ledger, some in phases if some]


def restore_order(in_record_file: Sequence[R], in_ledger: Sequence[R]) -> list[R]:
    """The records a restart hands to the replica: the record file's, then the ledger's (each
    in append order; an older store may still hold executed records of its own: they are older
    than any in the ledger)."""
    return [*in_record_file, *in_ledger]
