"""The ordering role of one channel with ordering "pbft": one PBFT-lite replica of n = 3f+1.

The replica index is the node's position in the channel config's orderer list; consensus
messages are signed with the node's identity and verified against the configured orderers'
identities. A loop (the generic driver's shape) steps inputs — client envelopes from Broadcast,
signed messages and block signatures from `ReplicaService.Exchange` — and ticks the core, then
executes each Ready in order: records appended to the replica's sqlite log (durable), decided
batches turned into blocks (`pbft_blocks`), messages queued to the peer links. A block is
committed to the orderer ledger once it holds 2f+1 signatures; Broadcast answers a submitter
only when its envelope is in a committed block here, so an acknowledged transaction is never
lost, whichever replica crashes.

Admission. The core keeps, proposes and prepares only requests that pass the channel's ordering
rule (`pbft_admission.RequestAdmission`: Broadcast's checks without the clock), so junk that a
faulty orderer forwards or proposes is dropped and counted, never ordered. A test-only hook
(`byzantine.PoisonHook`, off unless the integration test names this node) makes this replica
send such junk itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from dltmw.aio.clock import utc_now
from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError, DltmwError, InvariantViolation, TransientError
from dltmw.core.identity import IdentityError
from dltmw.core.pbft import ClientRequest, Envelope, PbftConfig, PbftReady, Replica, request_id
from dltmw.core.pbft.types import Record, StableRecord
from dltmw.ledger.pbft_store import RecordStore
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.runtime.context import NodeContext
from dltmw.runtime.replica_link import ReplicaLink
from dltmw.runtime.roles.orderer.byzantine import PoisonHook
from dltmw.runtime.roles.orderer.pbft_admission import RequestAdmission
from dltmw.runtime.roles.orderer.pbft_blocks import BlockAssembler, PendingBlock
from dltmw.runtime.roles.orderer.pbft_catchup import FetchedBlocks, fetch_verified
from dltmw.runtime.roles.orderer.solo import OrdererChannel
from dltmw.v1 import errors_pb2, replica_pb2

logger = logging.getLogger(__name__)
R = errors_pb2

TICK_S = 0.05
SUBMIT_WAIT_S = 60.0
RESIGN_EVERY_TICKS = 20
STEP_BATCH_MAX = 1000
CATCHUP_CHECK_TICKS = 40  # look for blocks beyond us after this long without executing
CATCHUP_BACKOFF_MAX = 16  # x CATCHUP_CHECK_TICKS while peers have nothing newer
# Decided batches a replica keeps for state transfer; read once at start. Tests set it small to
# force block-level catch-up (`pbft_catchup`); production keeps the default.
DECIDED_RETAIN = int(os.environ.get("DLTMW_PBFT_DECIDED_RETAIN", "256"))


def replica_config(n: int, batch_max: int) -> PbftConfig:
    """Protocol parameters for real nodes (ticks of TICK_S)."""
    return PbftConfig(
        n=n,
        checkpoint_interval=16,
        batch_size_max=max(1, batch_max),
        view_change_timeout_ticks=40,
        request_timeout_ticks=40,
        retransmit_ticks=10,
        probe_ticks=20,
        decided_retain=DECIDED_RETAIN,
    )


class PbftOrdererChannel(OrdererChannel):
    """Orders one channel as one PBFT-lite replica; Deliver is inherited."""

    def __init__(
        self, ctx: NodeContext, view: ChannelView, ledger: ChannelLedger, store: RecordStore
    ) -> None:
        super().__init__(ctx, view, ledger)
        self.store = store
        orderers = list(view.config.orderers)
        self.identities = [o.identity for o in orderers]
        ids = [o.node_id for o in orderers]
        if ctx.node_id not in ids:
            raise InvariantViolation(f"{ctx.node_id} is not an orderer of {view.channel_id}")
        self.me = ids.index(ctx.node_id)
        self.config = replica_config(len(orderers), view.config.batch.max_tx_count)
        self.links = {i: ReplicaLink(ctx, view.channel_id, ids[i]) for i in range(len(ids))}
        del self.links[self.me]
        self.assembler = BlockAssembler(
            view.channel_id, self.me, self.config.quorum, self.identities, self.verify
        )
        self.replica: Replica | None = None
        self.admission = RequestAdmission(view, self.config.request_bytes_max)
        self._hook = PoisonHook.from_env(
            ctx.node_id, view.channel_id, ctx.signer, self.config.request_bytes_max
        )
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._lagging: set[tuple[int, int]] = set()
        self._answered: dict[tuple[int, int], int] = {}  # (replica, block) -> tick answered
        self._ticks = 0
        self._fetched: list[FetchedBlocks] = []
        self._fetch: asyncio.Task[None] | None = None
        self._catchup = (0, 1, 0)  # (next_exec at the last check, backoff, peer cursor)

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool:
        """Does `signature` by orderer `replica` verify over `data`?"""
        if not 0 <= replica < len(self.identities):
            return False
        try:
            self.view.orderer_membership.verify(
                self.identities[replica], data, signature, utc_now()
            )
        except IdentityError:
            return False
        return True

    async def start(self) -> None:
        """Restore the replica from its records, rebuild unfinished blocks, start the loop."""
        records: list[Record] = await self.store.load()
        sign = self.ctx.signer.sign
        admit = self.admission if self._hook is None else self._hook.admit(self.admission)
        if records:
            self.replica = Replica.restore(
                self.config, self.me, sign, self.verify, records, request_ok=admit
            )
        else:
            self.replica = Replica(self.config, self.me, sign, self.verify, request_ok=admit)
        await self._jump_to_ledger(self.replica)
        for seq in sorted(self.replica.decided):
            self._build(seq, list(self.replica.decided[seq].requests))
        for link in self.links.values():
            link.start()
        await self._execute_pbft(self.replica.ready())
        cid = self.view.channel_id
        self._task = self.ctx.tasks.forever(f"pbft-{cid}", self._drive, restart=False)

    async def stop(self) -> None:
        """Stop the loop and the links (records are durable; nothing to flush)."""
        await super().stop()
        await cancel_and_wait(self._fetch)
        for link in self.links.values():
            await link.stop()
        await self.store.close()

    @property
    def current_view(self) -> int:
        """The replica's current view (for refusing stale-view messages)."""
        return self.replica.view if self.replica is not None else 0

    async def submit(self, envelope: bytes) -> None:
        """Order an admitted envelope; returns once it is in a committed block here."""
        (error,) = await self.submit_many([envelope])
        if error is not None:
            raise error

    async def submit_many(self, envelopes: Sequence[bytes]) -> list[DltmwError | None]:
        """Order admitted envelopes; returns once each is in a committed block here (None) or
        failed (OVERLOADED when the inbox is full, WAIT_TIMEOUT when not ordered in time)."""
        loop = asyncio.get_running_loop()
        waits: list[tuple[int, bytes, asyncio.Future[None]]] = []
        out: list[DltmwError | None] = []
        for envelope in envelopes:
            rid = request_id(envelope)
            out.append(None)
            if self.replica is not None and rid in self.replica.executed_ids:
                continue
            try:
                self._inbox.put_nowait(ClientRequest(envelope))
            except asyncio.QueueFull:
                out[-1] = TransientError(R.ERROR_REASON_OVERLOADED, "orderer queue is full")
                continue
            done: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(rid, []).append(done)
            waits.append((len(out) - 1, rid, done))
        results = await asyncio.gather(
            *(asyncio.wait_for(asyncio.shield(f), SUBMIT_WAIT_S) for _, _, f in waits),
            return_exceptions=True,
        )
        for (position, rid, done), result in zip(waits, results, strict=True):
            waiters = self._waiters.get(rid, [])
            if done in waiters:
                waiters.remove(done)
            if not waiters:
                self._waiters.pop(rid, None)
            if isinstance(result, DltmwError):
                out[position] = result
            elif isinstance(result, TimeoutError):
                out[position] = TransientError(
                    R.ERROR_REASON_WAIT_TIMEOUT, f"not ordered within {SUBMIT_WAIT_S:.0f} s"
                )
            elif isinstance(result, BaseException):
                raise result
        return out

    async def judge_requests(self, messages: Sequence[Envelope]) -> None:
        """Judge the requests that forwards, pre-prepares and state replies carry on a worker
        thread, so the core's admission check finds cached verdicts (`RequestAdmission.warm`)."""
        requests: list[bytes] = []
        cfg = self.config
        for envelope in messages:
            message = replica_pb2.ReplicaMessage.FromString(envelope.payload)  # servicer parsed it
            kind = message.WhichOneof("body")
            if kind == "forwarded":
                requests += message.forwarded.requests[: cfg.batch_size_max * 4]
            elif kind == "pre_prepare":
                requests += message.pre_prepare.requests[: cfg.batch_size_max]
            elif kind == "state_reply":
                for batch in message.state_reply.batches[: cfg.transfer_batches_max]:
                    requests += batch.requests[: cfg.batch_size_max]
        if requests:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.admission.warm, requests)

    def offer(self, messages: list[Envelope], signatures: list[replica_pb2.BlockSignature]) -> None:
        """Queue verified inbound messages for the loop (all or nothing)."""
        if self._inbox.qsize() + len(messages) + len(signatures) > self._inbox.maxsize:
            raise TransientError(R.ERROR_REASON_OVERLOADED, "replica inbox is full")
        for item in [*messages, *signatures]:
            self._inbox.put_nowait(item)

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + TICK_S
        replica = self.replica
        if replica is None:
            raise InvariantViolation("PBFT orderer loop started before the replica")
        while True:
            try:
                first = await asyncio.wait_for(self._inbox.get(), max(0.0, next_tick - loop.time()))
            except TimeoutError:
                first = None
            if first is not None:
                self._step(replica, first)
                for _ in range(STEP_BATCH_MAX):
                    if self._inbox.empty():
                        break
                    self._step(replica, self._inbox.get_nowait())
            if loop.time() >= next_tick:
                replica.tick()
                self._on_tick()
                next_tick = loop.time() + TICK_S
            if self._fetched:
                await self._apply_fetched(replica)
            await self._execute_pbft(replica.ready())
            await self._answer_lagging()

    def _step(self, replica: Replica, item: object) -> None:
        if isinstance(item, replica_pb2.BlockSignature):
            if item.number < self.ledger.height:
                if len(self._lagging) < 256:
                    self._lagging.add((item.replica, item.number))
            else:
                self.assembler.add_signature(item, self.ledger.height)
        elif isinstance(item, FetchedBlocks):
            self._fetched.append(item)
        else:
            replica.step(item)

    def _on_tick(self) -> None:
        """Resend our signatures of blocks still waiting (lost messages are never retried)."""
        self._ticks += 1
        if self._ticks % RESIGN_EVERY_TICKS == 0:
            for pending in self.assembler.pending.values():
                self._broadcast_signature(pending)
        self._maybe_fetch()
        if self._hook is not None and self.replica is not None:
            self._hook.act(self.replica, self.me, self.links.values())

    def _maybe_fetch(self) -> None:
        """Every CATCHUP_CHECK_TICKS x backoff without executing, fetch blocks from the next
        peer replica (one fetch at a time); the backoff doubles while peers have nothing newer,
        so an idle, caught-up replica asks rarely."""
        last, backoff, cursor = self._catchup
        replica = self.replica
        if replica is None or self._ticks % (CATCHUP_CHECK_TICKS * backoff):
            return
        if replica.next_exec != last:
            self._catchup = (replica.next_exec, 1, cursor)
            return
        if self._fetch is not None and not self._fetch.done():
            return
        peers = sorted(self.links)
        node_id = self.links[peers[cursor % len(peers)]].node_id
        self._catchup = (last, min(backoff * 2, CATCHUP_BACKOFF_MAX), cursor + 1)
        self._fetch = self.ctx.tasks.spawn(f"pbft-fetch-{node_id}", self._fetch_from(node_id))

    async def _fetch_from(self, node_id: str) -> None:
        fetched = await fetch_verified(
            self.ctx,
            self.view.channel_id,
            node_id,
            self.ledger.height,
            self.ledger.last_hash,
            self.identities,
            self.config.quorum,
            self.verify,
        )
        if fetched.blocks:
            await self._inbox.put(fetched)

    async def _apply_fetched(self, replica: Replica) -> None:
        """Commit verified fetched blocks that still continue our ledger, then jump the core over
        every committed block it has not executed (`Replica.jump`: the blocks carry 2f+1
        orderer signatures, checked by `pbft_catchup.verified_prefix`)."""
        batches, self._fetched = self._fetched, []
        for fetched in batches:
            for block in fetched.blocks:
                if block.header.number != self.ledger.height:
                    continue  # committed meanwhile by the normal path
                if block.header.previous_hash != self.ledger.last_hash:
                    break  # cannot happen with 2f+1-signed blocks; refuse rather than fork
                await self.ledger.commit_block(block, ())
                for envelope in block.data.envelopes:
                    for waiter in self._waiters.pop(request_id(envelope), []):
                        if not waiter.done():
                            waiter.set_result(None)
        self.assembler.forget_below(self.ledger.height)
        await self._jump_to_ledger(replica)
        async with self._new_block:
            self._new_block.notify_all()

    async def _jump_to_ledger(self, replica: Replica) -> None:
        """Move the core over committed blocks it has not executed (also at start: a crash may
        fall between committing fetched blocks and persisting the jump)."""
        if replica.next_exec < self.ledger.height:
            blocks = await self.ledger.blocks(replica.next_exec, self.ledger.height)
            replica.jump([(b.header.number, tuple(b.data.envelopes)) for b in blocks])
            logger.info("jumped to block %d of the ledger", self.ledger.height - 1)
            self._catchup = (replica.next_exec, 1, self._catchup[2])

    async def _execute_pbft(self, ready: PbftReady) -> None:
        await self.store.append(ready.persist)
        stable = [r.sequence for r in ready.persist if isinstance(r, StableRecord)]
        if stable:
            keep = min(stable[-1] - self.config.decided_retain + 1, self.ledger.height)
            await self.store.compact(stable[-1], keep)
        for decided in ready.decided:
            self._build(decided.sequence, list(decided.requests))
            if self._hook is not None:
                self._hook.observe(decided.requests)
        for destination, envelope in ready.send:
            link = self.links.get(destination)
            if link is not None:
                link.send(envelope)
        for rejected in ready.replies:
            error = ClientError(R.ERROR_REASON_INVALID_FIELD, f"refused: {rejected.reason}")
            for waiter in self._waiters.pop(rejected.request_id, []):
                if not waiter.done():
                    waiter.set_exception(error)
        await self._commit_complete()

    def _build(self, number: int, requests: list[bytes]) -> None:
        pending = self.assembler.build(number, requests, self.ledger.height, self.ledger.last_hash)
        if pending is not None:
            pending.signatures[self.me] = self.ctx.signer.sign(pending.digest)
            self._broadcast_signature(pending)

    def _broadcast_signature(self, pending: PendingBlock) -> None:
        signature = replica_pb2.BlockSignature(
            number=pending.block.header.number,
            block_hash=pending.digest,
            replica=self.me,
            signature=pending.signatures[self.me],
        )
        for link in self.links.values():
            link.send(signature)

    async def _commit_complete(self) -> None:
        committed = False
        while (pending := self.assembler.complete(self.ledger.height)) is not None:
            await self.ledger.commit_block(pending.block, ())
            committed = True
            for envelope in pending.block.data.envelopes:
                for waiter in self._waiters.pop(request_id(envelope), []):
                    if not waiter.done():
                        waiter.set_result(None)
        if committed:
            async with self._new_block:
                self._new_block.notify_all()

    async def _answer_lagging(self) -> None:
        """Send our signature of committed blocks to replicas still collecting them — once per
        RESIGN_EVERY_TICKS per (replica, block). An answer is itself a signature of a block the
        receiver may have committed too, which it answers in turn: without the bound, two
        caught-up replicas echo each other's signatures forever (found by the simulator:
        thousands of Exchange calls per second on an idle channel)."""
        lagging, self._lagging = self._lagging, set()
        if len(self._answered) > 1024:
            self._answered = {
                k: t for k, t in self._answered.items() if self._ticks - t < RESIGN_EVERY_TICKS
            }
        for replica, number in sorted(lagging):
            answered = self._answered.get((replica, number))
            if answered is not None and self._ticks - answered < RESIGN_EVERY_TICKS:
                continue
            self._answered[(replica, number)] = self._ticks
            block = await self.ledger.block(number)
            link = self.links.get(replica)
            if block is None or link is None:
                continue
            mine = self.identities[self.me]
            for sig in block.metadata.signatures:
                if sig.signer == mine:
                    link.send(
                        replica_pb2.BlockSignature(
                            number=number,
                            block_hash=block_hash(block),
                            replica=self.me,
                            signature=sig.signature,
                        )
                    )
