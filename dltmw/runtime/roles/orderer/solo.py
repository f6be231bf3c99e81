"""The ordering role of one channel, with the "none" handler (solo orderer).

Envelopes admitted by the Broadcast servicer enter the driver's bounded inbox (full:
OVERLOADED); the driver steps them into the `SoloOrderer` core, which queues them and cuts
blocks. Executing its effects (`SoloExecutor`): the queued envelopes are persisted (one sqlite
transaction; an envelope a block takes before the next tick never is queued,
`core/handlers/solo.py`), each decided block is signed over its hash and committed (one sqlite
transaction that also removes the queue entries it consumed), and only then are the submitters
answered and Deliver streams woken. Stopping follows the driver's one rule: the step in
progress finishes.

Adaptive cutting (`core/cutter.py`) with Nagle's rule: the pending batch is cut when the inbox
is empty AND every Deliver follower has taken every committed block (`downstream_idle`); while
a follower is still taking one — a peer busy committing reads its stream no faster, and gRPC
flow control holds the orderer's next write — arrivals accumulate into a bigger block, and the
follower taking the last block nudges the driver to cut it. So a lone transaction waits for no
timer, and a network at saturation keeps the big blocks that make it efficient. A follower that
never reads (or one catching up from far behind) leaves cutting to the limits, as before.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence

from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView, CurrentConfig
from dltmw.core.config_update import config_write
from dltmw.core.cutter import BlockCutter
from dltmw.core.effects import Token
from dltmw.core.errors import DltmwError, TransientError
from dltmw.core.handlers.base import DecidedBlock, PendingEnvelope
from dltmw.core.handlers.solo import SoloOrderer, Submit
from dltmw.core.identity import SigningIdentity
from dltmw.core.light_client import block_signer
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.runtime.blockfeed import BlockSignal, follow_data
from dltmw.runtime.context import NodeContext
from dltmw.runtime.driver import Driver
from dltmw.runtime.executor import Executing
from dltmw.runtime.roles.orderer import withhold
from dltmw.runtime.waiters import Waiters
from dltmw.v1 import config_pb2, errors_pb2, identity_pb2

TICK_S = 0.01


class SoloExecutor(Executing[Submit, PendingEnvelope, DecidedBlock, None, None]):
    """The solo orderer's effects: queue durably, sign and commit blocks, then acknowledge."""

    def __init__(
        self,
        ledger: ChannelLedger,
        signer: SigningIdentity,
        acks: Waiters[Token, None],
        new_block: BlockSignal,
        config: CurrentConfig,
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._signer = signer
        self._acks = acks
        self.new_block = new_block

    async def persist(self, records: Sequence[PendingEnvelope]) -> None:
        await self._ledger.enqueue(records)

    async def apply(self, decided: Sequence[DecidedBlock]) -> None:
        for item in decided:
            block = item.block
            block.metadata.signatures.add(
                signer=block_signer(self._config.view, self._signer.identity_bytes),
                signature=self._signer.sign(block_hash(block)),
            )
            number = block.header.number
            writes = () if item.config is None else (config_write(item.config, number),)
            await self._ledger.commit_block(block, (), writes, consumed_seq=item.consumed_seq)
            if item.config is not None:  # admission checks against it from now on
                self._config.replace(item.config)
        self.new_block.committed()

    async def reply(self, replies: Sequence[tuple[Token, None]]) -> None:
        for token, _ in replies:
            self._acks.resolve(token, None)


class OrdererChannel:
    """Orders one channel's transactions and serves its blocks; `channel_config` is the
    channel's one current-config holder on this orderer (replaced when a config block is
    written, after which admission and cutting follow the new config)."""

    def __init__(self, ctx: NodeContext, view: ChannelView, ledger: ChannelLedger) -> None:
        self.ctx = ctx
        self.channel_config = CurrentConfig(view)
        self.ledger = ledger
        self.new_block = BlockSignal()
        self._acks: Waiters[Token, None] = Waiters()
        self._tokens = itertools.count()
        self._driver: Driver[Submit, Submit, PendingEnvelope, DecidedBlock, None, None] | None
        self._driver = None
        self._core: SoloOrderer | None = None  # read only by `_nudge`, between steps
        self._pulled: dict[int, int] = {}  # follower -> the highest block number it has taken
        self._followers = itertools.count()
        self._fault = withhold.DeliverFault.from_env(ctx.node_id)  # TEST-ONLY, else None

    @property
    def view(self) -> ChannelView:
        """The channel's current config (read it each time: a config block replaces it)."""
        return self.channel_config.view

    @property
    def checks_envelopes_again(self) -> bool:
        """False: the solo and JetStream cores order what Broadcast admitted without checking
        it again, so Broadcast's signature checks are not remembered (`rpc/orderer.py`): up to
        2.4 MB of memo nobody would ask (benchmarks/RESULTS.md, lane `mem3`) — but for a
        creator-batch signature, which its batch's other envelopes ask for (`check_envelope`)."""
        return False

    async def start(self) -> None:
        """Restore the queue (blocks it completes alone are committed first), start the driver."""
        core = SoloOrderer(
            self.view.channel_id,
            self.ledger.height,
            self.ledger.last_hash,
            cutter_for(self.view.config.batch),
            await self.ledger.pending(),
            view=self.view,
            cutter_for=cutter_for,
        )
        self._core = core
        executor = SoloExecutor(
            self.ledger, self.ctx.signer, self._acks, self.new_block, self.channel_config
        )
        self._driver = Driver(
            f"orderer-{self.view.channel_id}",
            core,
            executor,
            self.ctx.tasks,
            inbox_max=self.ctx.limits.queue_max,
            tick_s=TICK_S,
            on_failure=lambda _: self._acks.fail_all(stopped()),
            metrics=self.ctx.metrics,
            downstream_idle=self.downstream_idle,
        )
        await self._driver.start()

    async def stop(self) -> None:
        """Stop the driver (its step in progress finishes); callers still waiting are refused."""
        if self._driver is not None:
            await self._driver.stop()
        self._acks.fail_all(stopped())

    async def submit(self, envelope: bytes) -> None:
        """Queue an admitted envelope; returns once it is durably queued."""
        (error,) = await self.submit_many([envelope])
        if error is not None:
            raise error

    async def submit_many(self, envelopes: Sequence[bytes]) -> list[DltmwError | None]:
        """Queue admitted envelopes; returns once all are durably queued, with None for each
        queued one and the error (OVERLOADED) of each that did not fit."""
        driver = self._driver
        if driver is None:
            raise stopped()
        out: list[DltmwError | None] = []
        waits: list[asyncio.Future[None]] = []
        for envelope in envelopes:
            token = next(self._tokens)
            done = self._acks.add(token)
            try:
                driver.submit(Submit(envelope, token))
            except DltmwError as exc:
                self._acks.discard(token, done)
                out.append(exc)
                continue
            out.append(None)
            waits.append(done)
        await asyncio.gather(*waits)
        return out

    async def block_data_from(self, start: int, stop: int | None) -> AsyncIterator[bytes]:
        """Blocks start.. (stop inclusive, or forever when None), serialised as stored, waiting
        for new ones; the follower counts as having taken a block once it asks for the next
        one."""
        follower = next(self._followers)
        self._pulled[follower] = start - 1
        number = start
        try:
            async for data in follow_data(self.ledger, self.new_block, start, stop):
                yield data if self._fault is None else await self._fault.apply_data(data)
                self._pulled[follower] = number
                number += 1
                if self.downstream_idle():
                    self._nudge()
        finally:
            del self._pulled[follower]
            self._nudge()

    def _nudge(self) -> None:
        """Wake the cutting driver: a batch held back for a busy follower may be cut now —
        if the core holds one. At one transaction per block the block took everything, and
        the nudge after the last follower took it was a driver step with nothing to cut and
        a loop turn for nothing: 1,114 per 1,500 transactions at 100 tx/s (benchmarks/
        RESULTS.md, lane lat16). The core is stepped only on the loop (this driver has no
        `step_in`), so it is read here between steps: `quiescent` (its cutter holds nothing,
        hence nothing is held back either) means that step would cut nothing. An input taken
        but not yet stepped is stepped with `drained` read after this nudge's cause."""
        if self._driver is None:
            return
        if self._core is not None and self._core.quiescent():
            return
        self._driver.nudge()

    def downstream_idle(self) -> bool:
        """Every follower has taken every committed block (true with no follower)."""
        last = self.ledger.height - 1
        return all(taken >= last for taken in self._pulled.values())

    @property
    def height(self) -> int:
        """Blocks the channel holds here (Deliver tells followers, for their readiness)."""
        return self.ledger.height


def cutter_for(batch: config_pb2.BatchConfig) -> BlockCutter:
    """The block cutter of a config's batch settings, its timeout in this driver's ticks."""
    return BlockCutter(
        batch.max_tx_count,
        batch.max_bytes,
        max(1, round(batch.timeout_ms / 1000 / TICK_S)),
        by_limits_only=batch.cut_by_limits_only,
        reorder=batch.reorder,
    )


def stopped() -> TransientError:
    """The refusal of a caller whose orderer stopped (or failed) before answering it."""
    return TransientError(errors_pb2.ERROR_REASON_SHUTTING_DOWN, "the orderer is stopping")


def orderer_identity_of(view: ChannelView, signer: bytes) -> identity_pb2.Identity | None:
    """The configured orderer whose identity bytes are `signer`, if any."""
    for node in view.config.orderers:
        if node.identity == signer:
            return identity_pb2.Identity.FromString(node.identity)
    return None
