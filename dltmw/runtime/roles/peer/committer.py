"""The commit side of a peer channel: the driver running `CommitCore` (`core/committer.py`).

The peer's deliver loop (`channel.py`, a supervised loop) hands every delivered block to
`commit`, which queues it and waits for the core's answer. One block per step: the load must
read the versions the previous block wrote. The load (`CommitExecutor.load`) checks the
hash-chain link and the orderer signatures, then the transactions in parallel chunks on the
verify pool (`cryptography` releases the GIL, so signature verification uses both cores), then
reads what MVCC needs; a block that does not link or is not signed enough is refused by the core
without that work. The block with its validation codes, tx index and state writes is committed
in one sqlite transaction, and only then are the deliverer and the commit-status watchers told.
After a crash the ledger holds whole blocks only; the peer resumes delivery from its height.

Pipelining (`Committer.enqueue`, used by the deliver loop through `pipeline.py`): the orderer
signatures and transaction checks of a block read off the stream start on the verify pool at
once (one job per chunk of `CHECK_CHUNK` envelopes, the signatures in the first: `check_piece`),
while the blocks before it commit; its load then awaits them instead of starting them.
They are used only if the config and the committed definitions they were made against are
still the current ones (the identical objects: a config block or a lifecycle commit in between
replaces them) and the client identity table has not grown since (a block in between registered
a client whose references then resolve: `core/identity_table.py`); else the load checks again.
A block's table entries (`new_entries`, under the config in force for it) are stored in its
commit transaction. Checks are judged against the membership at the
time they ran, which differs from the time of the load by at most the commit of the blocks
ahead of it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dltmw.aio.clock import utc_now
from dltmw.aio.pool import INLINE_MAX, chunks, map_chunked
from dltmw.core.block import block_hash, chain_error
from dltmw.core.channel import ChannelView, CurrentConfig
from dltmw.core.committer import Commit, CommitCore, Committed, CommittedReads, Delivered
from dltmw.core.effects import Token
from dltmw.core.errors import PeerError
from dltmw.core.identity_table import new_entries, takes_client_references
from dltmw.core.lifecycle import CommittedView
from dltmw.core.light_client import check_orderer_quorum
from dltmw.core.txcheck import CheckedTx, check_transaction, tx_summary
from dltmw.core.validation import TxForMvcc, delta_keys_of, reads_of
from dltmw.ledger.backend import Ledger
from dltmw.rpc.tracing import Tracer, now_ns
from dltmw.runtime.context import NodeContext
from dltmw.runtime.driver import Driver
from dltmw.runtime.metrics import Stopwatch, validation_code_name
from dltmw.runtime.roles.peer.lifecycle import ChannelLifecycle
from dltmw.runtime.waiters import Waiters
from dltmw.v1 import block_pb2, errors_pb2

logger = logging.getLogger(__name__)
CHECK_CHUNK = 64
DELIVERED_MAX = 4  # blocks queued for the committer (the deliver loop waits for each)
AHEAD_MAX = 4  # blocks whose checks may run ahead of their commit (the deliver loop reads 2)
OnCommitted = Callable[[Committed], Awaitable[None]]


@dataclass(frozen=True)
class Delivery:
    """A delivered block waiting for the committer, answered under `token`."""

    block: block_pb2.Block
    token: int


def check_orderer_signatures(view: ChannelView, block: block_pb2.Block) -> None:
    """PeerError unless `block` carries enough valid signatures of distinct configured orderers
    over its hash (1, or the replica quorum for PBFT-lite) AND nothing else: every signature must
    be a valid one of a configured orderer. The rule is the light client's
    (`core/light_client.check_orderer_quorum`), so that a block a peer commits always yields a
    commit proof other channels accept: a block with a quorum plus one stray signature (a
    removed replica's, a forgery) was committed here, and every proof built from it was then
    refused elsewhere as forged.

    The signatures are not remembered: a peer checks each block's once, and at 2f+1 per block
    they filled its memo of orderer signatures for nothing (none hit under load; with the
    memo's generations of 16,384 at the time, up to 3.2 MB after ~10,000 PBFT-lite blocks)."""
    pairs = [(s.signer, s.signature) for s in block.metadata.signatures]
    counted = check_orderer_quorum(view, block_hash(block), pairs, utc_now(), remember=False)
    if isinstance(counted, str):
        raise PeerError(
            errors_pb2.ERROR_REASON_BAD_SIGNATURE, f"block {block.header.number}: {counted}"
        )
    valid, needed = counted
    if valid < needed:
        raise PeerError(
            errors_pb2.ERROR_REASON_BAD_SIGNATURE,
            f"block {block.header.number} lacks {needed} valid signature(s) of distinct "
            f"configured orderers (has {valid})",
        )


Checked = tuple[str, list[CheckedTx]]  # (why the orderer signatures fail or "", checks)


@dataclass(frozen=True)
class Ahead:
    """Checks of a block started before its load, and the views they were made against: one
    pool job per chunk of `CHECK_CHUNK` envelopes, the first also checking the block's orderer
    signatures (`check_piece`)."""

    config: ChannelView
    committed: CommittedView
    pieces: tuple[asyncio.Future[Checked], ...]
    identities: int  # the client identity table's size then (it only grows)


def signature_error(view: ChannelView, block: block_pb2.Block) -> str:
    """Why `block`'s orderer signatures do not suffice ("" when they do)."""
    try:
        check_orderer_signatures(view, block)
    except PeerError as exc:
        return exc.message
    return ""


def check_piece(
    view: ChannelView,
    committed: CommittedView,
    block: block_pb2.Block,
    piece: Sequence[bytes],
    signatures: bool,
) -> Checked:
    """On the pool: the checks of `piece` of `block`'s envelopes and, with `signatures`, first
    the block's orderer signatures — in ONE job, so a block of up to `CHECK_CHUNK` transactions
    costs one pool hop ahead of its commit, not two (a job for its signatures beside the
    transactions' was a second executor submit, worker wake-up and loop wake-up per block: a
    per-BLOCK cost, paid ~76 times a second by each peer at 1,300 tx/s in 17-transaction blocks,
    benchmarks/RESULTS.md, branch lat60). A block refused for its signatures is never checked
    further (its load refuses it without them)."""
    error = signature_error(view, block) if signatures else ""
    return error, [] if error else [check_transaction(env, committed) for env in piece]


def small(block: block_pb2.Block) -> bool:
    """A block whose checks cost less than a pool hop (`CommitExecutor.check_ahead`)."""
    return len(block.data.envelopes) <= INLINE_MAX and len(block.metadata.signatures) <= INLINE_MAX


def _consumed(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an abandoned check's error is not "never retrieved"


class CommitExecutor:
    """Loads what a block's commit decision needs; commits; answers."""

    def __init__(
        self,
        config: CurrentConfig,
        ledger: Ledger,
        pool: ThreadPoolExecutor,
        waiters: Waiters[Token, None],
        on_committed: OnCommitted,
        lifecycle: ChannelLifecycle,
    ) -> None:
        self._config = config
        self._lifecycle = lifecycle
        self._ledger = ledger
        self._pool = pool
        self._waiters = waiters
        self._on_committed = on_committed
        self._ahead: dict[int, Ahead] = {}

    def check_ahead(self, block: block_pb2.Block) -> None:
        """Start `block`'s signature and transaction checks on the pool now (pipelining).

        Not for a block of at most `INLINE_MAX` transactions and orderer signatures (a lone
        transaction at low load from a solo orderer; PBFT-lite's 2f+1 signatures still go
        ahead): its load checks it on the loop's thread (`map_chunked`'s rule), because two hops
        (signatures, transactions) each wait for a worker to wake and take the GIL — 0.3-0.7 ms
        apiece on a busy 2-core host, on the path to every subscriber — for ~0.1-0.3 ms of
        checks (benchmarks/RESULTS.md, 2026-12-02, branch buslat)."""
        if len(self._ahead) >= AHEAD_MAX or small(block):
            return  # its load will check it; nothing unbounded is kept
        loop = asyncio.get_running_loop()
        view, committed = self._config.view, self._lifecycle.view
        envelopes = list(block.data.envelopes)
        pieces = [
            loop.run_in_executor(self._pool, check_piece, view, committed, block, p, i == 0)
            for i, p in enumerate(chunks(envelopes, CHECK_CHUNK) or [envelopes])
        ]
        for piece in pieces:
            piece.add_done_callback(_consumed)
        self._ahead[block.header.number] = Ahead(
            view, committed, tuple(pieces), len(self._ledger.identities)
        )

    async def _checked_ahead(
        self, block: block_pb2.Block, view: ChannelView
    ) -> tuple[str, list[CheckedTx]] | None:
        """The checks started ahead for `block`, if they were made against the current views."""
        number = block.header.number
        for stale in [n for n in self._ahead if n < number]:
            del self._ahead[stale]
        ahead = self._ahead.pop(number, None)
        if ahead is None or ahead.config is not view or ahead.committed is not self._lifecycle.view:
            return None
        if ahead.identities != len(self._ledger.identities):
            return None  # a block ahead of it registered clients: their references resolve now
        first = ahead.pieces[0]  # one job for a block of up to CHECK_CHUNK: no gather
        done = [await first] if len(ahead.pieces) == 1 else await asyncio.gather(*ahead.pieces)
        return done[0][0], [checked for _, piece in done for checked in piece]

    async def load(self, inputs: Sequence[Delivery]) -> Sequence[Delivered]:
        return [await self._load(delivery) for delivery in inputs]

    async def _load(self, delivery: Delivery) -> Delivered:
        block, token, ledger = delivery.block, delivery.token, self._ledger
        view = self._config.view  # read after the previous block (and its config) is applied
        if chain_error(block, view.channel_id, ledger.height, ledger.last_hash):
            return Delivered(block, token)  # the core refuses it, naming why
        ahead = await self._checked_ahead(block, view)
        error = ahead[0] if ahead is not None else signature_error(view, block)
        if error:
            return Delivered(block, token, signature_error=error)
        checked = (
            ahead[1] if ahead is not None else await self._check_all(view, block.data.envelopes)
        )
        odd = [(i, c.detail) for i, c in enumerate(checked) if c.detail]
        if odd:  # INVALID_OTHER_REASON: an input the checks did not foresee (see check_transaction)
            logger.error(
                "block %d: %d transaction(s) invalid for an unforeseen reason, first #%d: %s",
                block.header.number,
                len(odd),
                *odd[0],
            )
        txs = [TxForMvcc(c.tx_id, c.code, c.rwset) for c in checked]
        keys, ranges = reads_of(txs)
        versions, in_ranges, known = await ledger.commit_reads(
            keys, ranges, (c.tx_id for c in checked)
        )
        delta_keys = delta_keys_of(txs)
        values = await ledger.delta_values(delta_keys) if delta_keys else {}
        reads = CommittedReads(versions, in_ranges, known, values)
        return Delivered(block, token, "", tuple(checked), reads)

    async def _check_all(self, view: ChannelView, envelopes: Sequence[bytes]) -> list[CheckedTx]:
        del view  # the lifecycle's view: this config with the definitions as of this height
        committed = self._lifecycle.view
        return await map_chunked(
            self._pool, lambda env: check_transaction(env, committed), envelopes, CHECK_CHUNK
        )

    async def persist(self, records: Sequence[None]) -> None:
        """The ledger is the committer's only record."""

    async def apply(self, decided: Sequence[Commit]) -> None:
        for commit in decided:
            metadata = commit.block.metadata
            del metadata.validation_codes[:]
            metadata.validation_codes.extend(commit.codes)  # type: ignore[arg-type]
            del metadata.unauthenticated[:]  # a tx_id left empty: its signature never verified
            metadata.unauthenticated.extend(i for i, t in enumerate(commit.tx_ids) if not t)
            view = self._config.view  # the config in force for this block
            added = (
                new_entries(commit.block, view.membership, self._ledger.identities)
                if takes_client_references(view.config)
                else []
            )
            await self._ledger.commit_block(
                commit.block, commit.tx_ids, commit.writes, identities=added
            )
            if commit.config is not None:  # durable with its block: from the next block on
                self._config.replace(commit.config)
                logger.info(
                    "channel %s: config sequence %d applied by block %d",
                    commit.config.channel_id,
                    commit.config.sequence,
                    commit.block.header.number,
                )
            if self._lifecycle.touched(commit.writes):
                await self._lifecycle.load(self._ledger)

    async def send(self, messages: Sequence[tuple[int, None]]) -> None:
        """A peer sends nothing to other peers when it commits."""

    async def reply(self, replies: Sequence[tuple[Token, Committed | PeerError]]) -> None:
        for token, outcome in replies:
            if isinstance(outcome, PeerError):
                self._waiters.fail(token, outcome)
            else:
                await self._on_committed(outcome)
                self._waiters.resolve(token, None)


CommitDriver = Driver[Delivery, Delivered, None, Commit, None, Committed | PeerError]


class Committer:
    """Commits one channel's delivered blocks, in order, one at a time."""

    def __init__(
        self,
        ctx: NodeContext,
        config: CurrentConfig,
        ledger: Ledger,
        pool: ThreadPoolExecutor,
        on_committed: OnCommitted,
        lifecycle: ChannelLifecycle | None = None,
    ) -> None:
        self._ctx = ctx
        self._channel_id = config.view.channel_id
        self._ledger = ledger
        self._waiters: Waiters[Token, None] = Waiters()
        self.lifecycle = lifecycle or ChannelLifecycle(config)
        # Blocks queued and not yet durable, by number: their metrics and trace are recorded
        # when the block is durable (`_durable`), whether or not a caller still waits for it —
        # a block whose stream broke while it committed (`pipeline.settle` lets go of it)
        # commits anyway and is counted like any other.
        self._queued: dict[int, PendingCommit] = {}

        async def durable(committed: Committed) -> None:
            self._durable(committed.number)
            await on_committed(committed)

        self._executor = CommitExecutor(
            config, ledger, pool, self._waiters, durable, self.lifecycle
        )
        self._tokens = itertools.count()
        self._driver: CommitDriver | None = None

    async def start(self) -> None:
        """Start the driver from the ledger's head (and its committed definitions)."""
        ledger = self._ledger
        await self.lifecycle.load(ledger)
        self._driver = Driver(
            f"commit-{self._channel_id}",
            CommitCore(self._channel_id, ledger.height, ledger.last_hash),
            self._executor,
            self._ctx.tasks,
            inbox_max=DELIVERED_MAX,
            batch_max=1,  # the next block's load reads what this one wrote
            on_failure=self._failed,  # the deliver loop fails with the same error
            metrics=self._ctx.metrics,
        )
        await self._driver.start()

    async def stop(self) -> None:
        """Stop the driver; its block in progress commits or not, never half (idempotent)."""
        if self._driver is not None:
            await self._driver.stop()

    async def __aenter__(self) -> Committer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def commit(self, block: block_pb2.Block) -> None:
        """Validate and commit the next block; PeerError if it is refused."""
        await (await self._queue(block)).wait()

    async def enqueue(self, block: block_pb2.Block) -> PendingCommit:
        """Queue the next block and start its signature and policy checks now, without waiting
        for its commit (pipelining: `wait()` on the result, or `discard()` it)."""
        self._executor.check_ahead(block)
        return await self._queue(block)

    async def _queue(self, block: block_pb2.Block) -> PendingCommit:
        driver = self._driver
        if driver is None:
            raise RuntimeError("the committer is not started")
        token = next(self._tokens)
        start_ns = now_ns() if self._ctx.tracer.enabled else 0
        pending = PendingCommit(self, block, token, self._waiters.add(token), Stopwatch(), start_ns)
        self._queued[block.header.number] = pending
        try:
            await driver.put(Delivery(block, token))
        except BaseException:
            self._queued.pop(block.header.number, None)
            pending.discard()
            raise
        return pending

    def _failed(self, error: BaseException) -> None:
        """The driver stopped: nothing queued will commit through it."""
        self._queued.clear()
        self._waiters.fail_all(error)

    def _durable(self, number: int) -> None:
        # Durable now, with the codes this peer gave it (`CommitExecutor.apply` wrote them in).
        # A refused block is never durable: it stays queued until the same number is queued
        # again (a resend replaces it) or the driver stops.
        pending = self._queued.pop(number, None)
        if pending is None:
            return
        codes = pending.block.metadata.validation_codes
        self._ctx.metrics.observe_block(self._channel_id, codes, pending.watch.seconds)
        if self._ctx.tracer.enabled:
            trace_commit(self._ctx.tracer, pending.block, pending.start_ns)


@dataclass(frozen=True)
class PendingCommit:
    """A block queued for commit: `wait()` for it (PeerError if refused), or `discard()` it."""

    committer: Committer
    block: block_pb2.Block
    token: Token
    done: asyncio.Future[None]
    watch: Stopwatch
    start_ns: int

    async def wait(self) -> None:
        """Until the block is durable (metrics and trace recorded), or its refusal."""
        try:
            await self.done
        finally:
            self.committer._waiters.discard(self.token, self.done)

    def discard(self) -> None:
        """Stop waiting for it: the block may still commit (and is then counted in the
        metrics like any other, `Committer._durable`); a refusal is not reported here."""
        self.committer._waiters.discard(self.token, self.done)
        self.done.add_done_callback(_consumed)


def trace_commit(tracer: Tracer, block: block_pb2.Block, start_ns: int) -> None:
    """A "commit" span per transaction of a committed block, in each transaction's trace
    (`rpc/tracing.py`), with the block's commit times, number and the transaction's code."""
    codes = block.metadata.validation_codes
    tx_ids = [tx_summary(e)[0] for e in block.data.envelopes]
    per_tx = [{"dltmw.validation_code": validation_code_name(c)} for c in codes]
    number: dict[str, str | int] = {
        "dltmw.block_number": block.header.number,
        "dltmw.channel": block.header.channel_id,
    }
    tracer.record("commit", tx_ids, start_ns, now_ns(), number, per_tx)
