"""The private executor of one channel: private transactions, executed in block order.

It follows the peer's COMMITTED blocks (`PeerChannel.committed_blocks`, the same feed as the
gateway's Events), so it needs no hook inside the commit path: the public commit never waits for
private work, and private execution can always be redone from the public ledger. The feed (a
supervised loop) queues each block's VALID private transactions for the one driver, which runs
the pure `PrivateExecution` core (`core/privacy/blocks.py`: EXECUTED / CONTRACT_FAILED /
NOT_HELD / TAMPERED per transaction) on the private store's thread, where its view of payloads
and private state reads, and commits the effects of every block of a driver step with the
cursor (next block to look at) in one store transaction, so after a crash execution resumes
exactly where it stopped.
A block is held back until this node holds every payload the block's agreements name it a
recipient of (`_await_payloads`: queued delivery, docs/privacy.md), so a late payload runs in
its place in block order, never NOT_HELD for good nor after later transactions.
Blocks without private transactions write nothing (they are simply looked at again after a
restart). A TAMPERED copy is refused and logged (by hash), and reported by PrivateStateHash /
ValidatePrivateState. Stopping finishes the block in progress (the driver's one stop rule).
A block with a purge (`core/privacy/purge.py`) removes its payloads and key values in the same
store transaction, then checkpoints the WAL (`ledger/private_purge.py`) so the bytes are gone
from every file of the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from google.protobuf.message import DecodeError

from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.contract import Contract
from dltmw.core.effects import Token
from dltmw.core.errors import InvariantViolation, TransientError
from dltmw.core.privacy.agreement import agreed_body
from dltmw.core.privacy.blocks import (
    Executed,
    PrivateBlock,
    PrivateExecution,
    PrivateTxRef,
    PrivateView,
)
from dltmw.core.privacy.envelope import PrivacyKey
from dltmw.core.privacy.execution import TAMPERED
from dltmw.core.privacy.groups import Parties, parties
from dltmw.core.privacy.purge import Purged, parse_body
from dltmw.core.privacy.reuse import PriorRun
from dltmw.core.rwset import StateWrite
from dltmw.ledger.private_store import PrivateStore, PrivateTxn, PrivateTxRecord
from dltmw.runtime.driver import Driver
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.runtime.roles.privacy.prior_runs import PriorRuns
from dltmw.v1 import block_pb2, common_pb2, config_pb2, errors_pb2, transaction_pb2
from dltmw.v1.private_agreement_pb2 import PrivateAgreementBody
from dltmw.v1.private_purge_pb2 import PrivatePurgeBody

logger = logging.getLogger(__name__)
FEED_MAX = 64  # committed blocks queued for the driver
WAIT_CHECK_S = 5.0  # a missing payload is looked for again at least this often
WAIT_LOG_EVERY = 6  # checks between two log lines while waiting
CHECKPOINT_ATTEMPTS = 20  # ~10 s in all
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
PRIVATE = common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION


@dataclass(frozen=True)
class CommittedPrivate:
    """A committed block with its VALID private envelopes parsed ONCE: the feed's wait for
    owed payloads, the executor's input and its purges all read these (each envelope was
    parsed and re-serialised for the canonical check three times per node before, and the
    agreed body twice: with ten recipients that was a tenth of a peer's time on the GIL).
    `txs` = (tx index, tx_id, payload hash, the agreed body or None), in block order."""

    block: block_pb2.Block
    txs: tuple[tuple[int, str, bytes, PrivateAgreementBody | None], ...]
    purges: tuple[tuple[int, PrivatePurgeBody], ...]

    @property
    def number(self) -> int:
        """The block's number."""
        return self.block.header.number


def committed_private(block: block_pb2.Block) -> CommittedPrivate:
    """Parse a committed block's VALID private transactions and purges (each envelope once).

    Parsed only, not checked again for their canonical form: this node's commit marked them
    VALID, and the commit rule (`txcheck._check_transaction`) gives VALID only to data that is
    exactly a canonical `PrivateTransaction{payload_hash, agreements}` or
    `PrivateTransaction{purge}`. Rebuilding and re-serialising each one here again (the
    agreements with their certificates: ~12 KB per transaction with 10 recipients) was paid by
    every peer for every private transaction."""
    txs: list[tuple[int, str, bytes, PrivateAgreementBody | None]] = []
    purges: list[tuple[int, PrivatePurgeBody]] = []
    for index, tx_id, data in _private_data(block):
        ptx = committed_transaction(data)
        if ptx is None:
            continue
        if ptx.HasField("purge"):
            body = parse_body(ptx.purge)
            if body is not None:
                purges.append((index, body))
            continue
        txs.append((index, tx_id, ptx.payload_hash, agreed_body(ptx.agreements)))
    return CommittedPrivate(block, tuple(txs), tuple(purges))


def committed_transaction(data: bytes) -> transaction_pb2.PrivateTransaction | None:
    """The data of a private transaction this node committed VALID, parsed (None: it does not
    parse, which a VALID one always does; see `committed_private`)."""
    try:
        return transaction_pb2.PrivateTransaction.FromString(data)
    except DecodeError:
        return None


def private_refs(parsed: CommittedPrivate) -> list[PrivateTxRef]:
    """The VALID private transactions of a committed block: the one seam that decides which
    run (`private_block`)."""
    return [(index, tx_id, digest) for index, tx_id, digest, _ in parsed.txs]


def private_txs(block: block_pb2.Block) -> list[PrivateTxRef]:
    """The VALID private transactions of a committed block."""
    return private_refs(committed_private(block))


def private_block(
    parsed: CommittedPrivate,
    view: PrivateView,
    channel: Parties | None = None,
    prior: dict[bytes, PriorRun] | None = None,
) -> PrivateBlock:
    """The executor core's input for a committed block: its VALID private transactions (by
    `private_refs`), the hashes the agreements of each that carries them name
    (`core/privacy/agreement.py`) and this node's agreement runs of their payloads (`prior`)."""
    items = tuple(private_refs(parsed))
    indexes = {index for index, _, _ in items}
    agreed = {
        index: (body.pre_state_hash, body.delta_hash)
        for index, _, _, body in parsed.txs
        if index in indexes and body is not None
    }
    return PrivateBlock(parsed.number, items, view, agreed, parsed.purges, channel, prior or {})


def payloads_of(parsed: CommittedPrivate) -> list[bytes]:
    """Payload hashes of the block's VALID private transactions."""
    return [digest for _, _, digest, _ in parsed.txs]


def owed_here(parsed: CommittedPrivate, key: bytes) -> list[bytes]:
    """Payload hashes of the block's VALID private transactions whose agreements name `key` as
    a recipient: the payloads this node must hold before executing the block. Public bytes
    only, so a recipient knows it is one even when it did not sign (it was down)."""
    return [d for _, _, d, body in parsed.txs if body is not None and key in body.recipient_keys]


def _private_data(block: block_pb2.Block) -> list[tuple[int, str, bytes]]:
    """(tx index, tx_id, data) of the block's VALID PRIVATE_TRANSACTION envelopes."""
    out: list[tuple[int, str, bytes]] = []
    codes = block.metadata.validation_codes
    for index, raw in enumerate(block.data.envelopes):
        if index >= len(codes) or codes[index] != VALID:
            continue
        try:
            payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload)
            header = common_pb2.Header.FromString(payload.header)
        except DecodeError:
            continue
        if header.type == PRIVATE:
            out.append((index, header.tx_id, payload.data))
    return out


def nothing_private(blocks: Sequence[PrivateBlock]) -> bool:
    """True when no block carries a private transaction or purge: the core's step then only
    moves its cursor and reads nothing from the store, so the driver steps it on the loop
    (`Driver(step_inline=...)`) instead of hopping to the store thread for every public block
    every peer commits."""
    return not any(block.items or block.purges for block in blocks)


class BlockExecutor:
    """The private executor's side of the contract: loads a block's private transactions with a
    view of the store, commits each block's outcomes with the cursor, reports the height."""

    def __init__(self, owner: PrivateExecutor) -> None:
        self._owner = owner

    async def load(self, inputs: Sequence[CommittedPrivate]) -> Sequence[PrivateBlock]:
        """Each block with a view of the store and this node's agreement runs of its payloads
        (taken out of the bounded map: `prior_runs.py`)."""
        view = self._owner.store.view()
        channel = parties(self._owner.config)
        runs = self._owner.prior_runs
        return [
            private_block(b, view, channel, None if runs is None else runs.take(payloads_of(b)))
            for b in inputs
        ]

    async def persist(self, records: Sequence[None]) -> None:
        """The private store is the only record."""

    async def apply(self, decided: Sequence[Executed]) -> None:
        """Every block decided in this step, in ONE store transaction (one commit and fsync for
        the step, not one per block: under load the driver takes every committed block queued,
        and each block of a busy channel holds a few private transactions). The cursor moves
        to the step's last recorded block (one with private effects, or the core's periodic
        cursor-only record: `blocks.CURSOR_EVERY`), so a crash leaves all of the step or none
        of it, and execution resumes at the first block not committed (deterministic: same
        result)."""
        for executed in decided:
            for outcome in executed.outcomes:
                self._owner.reused += outcome.reused
                if outcome.status == TAMPERED:
                    logger.error(
                        "private payload %s of block %d refused: %s (differs from the ledger's "
                        "hash or fails authentication)",
                        outcome.payload_hash.hex(),
                        executed.number,
                        outcome.detail,
                    )
        if not decided:
            return
        await self._owner.store.transaction(partial(record_all, decided=tuple(decided)))
        purged = [e.number for e in decided if e.purges]
        if purged:
            await self._owner.checkpoint(purged[-1])

    async def send(self, messages: Sequence[tuple[int, None]]) -> None:
        """Private execution involves no other node."""

    async def reply(self, replies: Sequence[tuple[Token, int]]) -> None:
        await self._owner.reached(max(height for _, height in replies))


def record_all(txn: PrivateTxn, decided: Sequence[Executed]) -> None:
    """On the store thread, inside one transaction: several blocks' effects, in block order."""
    for executed in decided:
        record(txn, executed)


def record(txn: PrivateTxn, executed: Executed) -> None:
    """On the store thread, inside one transaction: a block's private effects and the cursor.
    The transactions between two purges go to the store together (`_flush`: their writes in
    order, then their records, a few statements in all instead of three per transaction);
    a purge is applied at its place in block order, after what precedes it."""
    number = executed.number
    purges = {p.index: p for p in executed.purges}
    writes: list[StateWrite] = []
    records: list[tuple[bytes, PrivateTxRecord]] = []
    for o in executed.outcomes:
        for index in [i for i in sorted(purges) if i < o.index]:
            _flush(txn, writes, records)
            _purge(txn, purges.pop(index), number)
        writes.extend(o.writes)
        records.append(
            (o.payload_hash, PrivateTxRecord(o.tx_id, number, o.index, o.status, o.state_hash))
        )
    _flush(txn, writes, records)
    for index in sorted(purges):
        _purge(txn, purges[index], number)
    txn.set_cursor(number + 1)


def _flush(
    txn: PrivateTxn, writes: list[StateWrite], records: list[tuple[bytes, PrivateTxRecord]]
) -> None:
    """Apply the buffered transactions' writes (in block order) and records, then empty both."""
    txn.apply(writes)
    txn.record_many(records)
    writes.clear()
    records.clear()


def _purge(txn: PrivateTxn, purged: Purged, number: int) -> None:
    txn.apply(purged.writes)
    txn.remove_payloads(purged.payload_hashes, purged.tx_id, number)
    if purged.kept_keys:
        logger.warning(
            "purge %s: %d key(s) of its privacy group kept here, its nodes are not the group's",
            purged.tx_id,
            purged.kept_keys,
        )
    for digest in purged.refused:
        logger.warning(
            "purge %s: payload %s kept here, its recipients are not the purge's",
            purged.tx_id,
            digest.hex(),
        )


ExecutorDriver = Driver[CommittedPrivate, PrivateBlock, None, Executed, None, int]


class PrivateExecutor:
    """Executes one channel's private transactions after their blocks commit."""

    def __init__(
        self,
        key: PrivacyKey,
        peer: PeerChannel,
        store: PrivateStore,
        prior_runs: PriorRuns | None = None,
    ) -> None:
        self._key = key
        self._peer = peer
        self.store = store
        self.prior_runs = prior_runs  # this node's agreement runs (None: always execute)
        self.reused = 0  # transactions that applied their agreement run (`reuse.py`)
        self._contracts: dict[str, Contract] | None = None  # loaded on first use (`start`)
        self._feed: asyncio.Task[None] | None = None
        self._driver: ExecutorDriver | None = None
        self._progress = asyncio.Condition()
        self._arrived = asyncio.Event()  # payloads were stored (Push, Recover)
        self.height = 0  # every block below it has been looked at

    def _deployed(self) -> dict[str, Contract]:
        """The deployed contracts, loaded once (blocking: `start` runs it on the store thread)."""
        if self._contracts is None:
            self._contracts = self._peer.lifecycle.deployed()
        return self._contracts

    @property
    def config(self) -> config_pb2.ChannelConfig:
        """The channel's current config (its peers and auditors: privacy groups)."""
        return self._peer.view.config

    def contract_of(self, name: str) -> Contract | None:
        """A contract deployed on the channel (what private transactions may invoke)."""
        return self._deployed().get(name)

    def core(self, next_block: int) -> PrivateExecution:
        """The decision core, resuming at `next_block`."""
        return PrivateExecution(self._key, self.contract_of, next_block)

    async def start(self) -> None:
        """Resume after the last executed block (a stopped executor may start again), running
        the contracts deployed on the channel as of now: the packages their committed
        definitions name (a definition committed later runs here after a restart)."""
        self._contracts = None
        await asyncio.get_running_loop().run_in_executor(self.store.executor, self._deployed)
        self.height = await self.store.cursor()
        cid = self._peer.view.channel_id
        self._driver = Driver(
            f"private-exec-{cid}",
            self.core(self.height),
            BlockExecutor(self),
            self._peer.ctx.tasks,
            inbox_max=FEED_MAX,
            step_in=self.store.executor,
            metrics=self._peer.ctx.metrics,
            step_inline=nothing_private,
        )
        await self._driver.start()
        self._feed = self._peer.ctx.tasks.forever(f"private-{cid}", self._run)

    async def stop(self) -> None:
        """Stop the feed, then the driver (the block in progress finishes; idempotent)."""
        if self.reused:
            logger.info(
                "private execution of channel %s: %d transaction(s) applied their agreement run",
                self._peer.view.channel_id,
                self.reused,
            )
        await cancel_and_wait(self._feed)
        self._feed = None
        if self._driver is not None:
            await self._driver.stop()
            self._driver = None

    async def _run(self) -> None:
        """Feed committed blocks from the height reached (restarted from there on failure)."""
        driver = self._driver
        if driver is None:
            raise InvariantViolation("private executor feed started before its driver")
        async for block in self._peer.committed_blocks(self.height):
            parsed = committed_private(block)
            await self._await_payloads(parsed)
            await driver.put(parsed)

    def payloads_arrived(self) -> None:
        """Payloads were stored: a wait for one of them may end."""
        self._arrived.set()

    async def _await_payloads(self, block: CommittedPrivate) -> None:
        """Hold the block back until this node holds every payload it is a recipient of there
        (docs/privacy.md "Queued delivery"): executing it without one would record NOT_HELD
        for good, and executing later blocks first would run transactions out of order. The
        payload comes from its sender's queued delivery (or Recover); a purged one is not
        waited for. Waiting is not a failure: it is logged, and `stop` cancels it."""
        needed = owed_here(block, self._key.public_key)
        checks = 0
        while needed:
            self._arrived.clear()
            missing = await self.store.missing(needed)
            if not missing:
                return
            if checks % WAIT_LOG_EVERY == 0:
                logger.warning(
                    "private execution of block %d waits for payload(s) %s of which this node "
                    "is a recipient (queued at their sender; or Recover)",
                    block.number,
                    ", ".join(d.hex()[:16] for d in missing),
                )
            checks += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), WAIT_CHECK_S)

    async def checkpoint(self, number: int) -> None:
        """After block `number` purged: the WAL emptied into the main file (bounded retries
        while a reader holds it; a store that still has a WAL is logged, the next purge or
        sqlite's own checkpoints move it later)."""
        for attempt in range(CHECKPOINT_ATTEMPTS):
            if await self.store.checkpoint():
                return
            await asyncio.sleep(0.05 * (attempt + 1))
        logger.warning("purge in block %d: the private store's WAL is not truncated yet", number)

    async def reached(self, height: int) -> None:
        """Every block below `height` has been looked at (and its effects are durable)."""
        async with self._progress:
            self.height = max(self.height, height)
            self._progress.notify_all()

    async def wait_for(self, height: int, timeout_s: float) -> None:
        """Wait until every block below `height` has been looked at."""
        async with self._progress:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self.height >= height), timeout_s
                )
        if self.height < height:
            raise TransientError(
                errors_pb2.ERROR_REASON_WAIT_TIMEOUT,
                f"private execution reached {self.height}, not {height}, in {timeout_s}s",
            )
