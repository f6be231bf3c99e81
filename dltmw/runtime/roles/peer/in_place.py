"""Which endorsement batches a peer simulates in place, on the event loop, without a thread hop.

A batch is normally simulated on the ledger's reader thread (`PeerChannel.endorse_many`): a
contract may read any number of keys and ranges and run for as long as its step budget allows,
and none of that may stall the loop. At low load, though, the bus's lone message is one
proposal to the built-in `bus` contract whose `publish` reads ONE key (the topic record) — a
`kv` `put` reads none — and its hop to the reader thread and back costs more than the
simulation itself (a thread wake-up each way, `ThreadPoolExecutor.submit` ~29 % of the loop's
busy samples: benchmarks/RESULTS.md, "the bus's lone message"). Such a batch is simulated in
place, like the ledger's small reads (`ledger/sqlite.py` `read_small`: a few point lookups, in
one read transaction of its own connection, so it sees one committed state exactly as the
reader thread's snapshot does) and the committer's small blocks (`committer.small`).

In place only when every proposal of the batch is safe on the loop, which is known only of
code we wrote and read: a function of `BUILTIN_POINT_READS`, of a built-in contract running
its exact built-in package (the package id pins the source, so a user package under the same
name, or an upgrade, runs off the loop), without `init_required` (its wrapper reads more), with
a small proposal (the bus contract parses each message: bounded by the proposal's size), in a
batch of at most `PROPOSALS_MAX`. Everything else — every user-deployed contract — keeps
running on the reader thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dltmw.core.txcheck import CheckedProposal

# Point reads (`ctx.get`) each function makes, at most, whatever its arguments: keep in step
# with the source of the contract (dltmw/contracts/), read with its package id. `kv` (the
# distinct-keys workload of issue 13): a lone `put` is a blind write whose hop to the reader
# thread cost a thread wake-up on each endorsing peer for a simulation of ~tens of µs
# (benchmarks/RESULTS.md, branch fix17). Its queries (`get`, `range`: unbounded) are not listed.
BUILTIN_POINT_READS: dict[str, dict[str, int]] = {
    "bus": {"create_topic": 1, "publish": 1, "publish_batch": 1},
    "kv": {"put": 0, "delete": 1, "incr": 1},
}
PROPOSALS_MAX = 4  # proposals of one batch (each is also signed on the loop: ~0.1 ms)
PROPOSAL_BYTES_MAX = 8 * 1024  # a proposal's bytes (what the contract parses on the loop)


def in_place_reads(
    batch: Sequence[CheckedProposal], builtin_of: Callable[[str], str | None]
) -> int | None:
    """The point lookups of simulating `batch` in place (its snapshot's block number, then each
    proposal's reads), or None when it must run on the reader thread (module docstring).
    `builtin_of(contract)` names the built-in contract that the contract of that name runs
    here (its exact built-in package, no `init_required`), or None."""
    if not batch or len(batch) > PROPOSALS_MAX:
        return None
    lookups = 1
    for checked in batch:
        if len(checked.proposal_bytes) > PROPOSAL_BYTES_MAX:
            return None
        builtin = builtin_of(checked.invocation.contract)
        reads = BUILTIN_POINT_READS.get(builtin or "", {}).get(checked.invocation.function)
        if reads is None:
            return None
        lookups += reads
    return lookups
