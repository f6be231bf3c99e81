"""Block-level catch-up: move execution over batches proven outside the protocol's log.

A replica that fell behind further than its peers retain decided batches cannot catch up by
state transfer (nobody still holds the commit certificates it would need). Its runtime then
fetches committed blocks from another replica's ledger and verifies, for each block, the hash
chain and 2f+1 valid signatures of distinct configured orderers over the block hash; only then
does it hand the blocks' requests to `jump`.

Why that is safe: a correct replica signs block s only after it executed sequence s (the block
is built from the decided batch, block number = sequence). 2f+1 distinct signers include at
least f+1 correct replicas, so at least one correct replica decided exactly this batch at s,
and PBFT safety makes every correct replica decide the same batch there. Executing it is thus
what state transfer would have done; the hash chain fixes every earlier block too. The jump is
never backwards and never skips a sequence (the batches must start at `next_exec` and be
contiguous), so a replica never executes anything twice or out of order. The core does no
I/O and trusts its caller to have done the verification; `JumpRecord` makes the result durable
before anything that depends on it is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from dltmw.core.pbft.checkpoints import Checkpoints
from dltmw.core.pbft.types import JumpRecord, chain_state, request_id

VerifiedBatch = tuple[int, tuple[bytes, ...]]


def jump(replica: Checkpoints, batches: Sequence[VerifiedBatch]) -> bool:
    """Execute verified (sequence, requests) batches from `next_exec` on, without certificates.

    Batches below `next_exec` are skipped (already executed); the rest must start exactly at
    `next_exec` and be consecutive, else nothing changes and False is returned (counted as
    `jump-refused`). Outputs no `Decided`: the caller already holds these blocks.
    """
    todo = [(s, r) for s, r in batches if s >= replica.next_exec]
    expected = range(replica.next_exec, replica.next_exec + len(todo))
    if not todo or [s for s, _ in todo] != list(expected):
        replica.drop("jump-refused")
        return False
    state = replica.state_digest
    checkpoints: list[tuple[int, bytes]] = []
    ids: list[bytes] = []  # of the last `decided_retain` sequences: what de-duplication keeps
    last = todo[-1][0]
    for sequence, requests in todo:
        state = chain_state(state, replica.checker.digest(requests))
        batch_ids = [request_id(r) for r in requests]
        if sequence > last - replica.config.decided_retain:
            ids.extend(batch_ids)  # leave pending in `restore_jump`, with the record's ids
        else:  # pending here and executed by the cluster: not pending any more
            for rid in batch_ids:
                replica.pending.pop(rid, None)
                replica.proposed_ids.discard(rid)
        if sequence % replica.config.checkpoint_interval == 0:
            checkpoints.append((sequence, state))
    record = JumpRecord(last, state, tuple(checkpoints), tuple(ids))
    replica.persist(record)
    restore_jump(replica, record)
    replica.check_vouched(last)  # others' votes for a checkpoint the jump ended on
    replica.counters["jumped"] += len(todo)
    replica.note_behind()
    replica.probe()  # learn the stable checkpoint (and later batches) from the peers
    return True


def restore_jump(replica: Checkpoints, record: JumpRecord) -> None:
    """Adopt a jump (live or from the log on restart); a jump already passed only adds ids.

    The record's ids are counted as executed at its last sequence: de-duplication keeps them
    a few sequences longer than the window, which only this replica's own refusals see (block
    content never depends on `executed_ids`; with dissemination it depends on the assembler's
    ids, which a jump records per sequence: `DisseminatingReplica.jump`)."""
    replica.executed_ids.add(record.sequence, record.request_ids)
    for rid in record.request_ids:
        replica.pending.pop(rid, None)
        replica.proposed_ids.discard(rid)
    if record.sequence < replica.next_exec:
        return
    replica.next_exec = record.sequence + 1
    replica.jumped_upto = record.sequence
    replica.state_digest = record.state_digest
    replica.state_at.update(dict(record.checkpoint_states))
    # no vote of ours for what the jump chained (`Checkpoints.send_checkpoint`)
    replica.jump_chained.update(s for s, _ in record.checkpoint_states if s > replica.low)
    replica.slots = {s: slot for s, slot in replica.slots.items() if s > record.sequence}
    replica.next_seq = max(replica.next_seq, replica.next_exec)
    replica.maybe_stable()
