"""The ordering role of one channel with ordering "pbft": one PBFT-lite replica of n = 3f+1.

The replica index is the node's position in the channel config's orderer list; consensus
messages are signed with the node's identity and verified against the configured orderers'
identities. The role is the driver (`runtime/driver.py`) running `PbftOrdererCore`
(`core/handlers/pbft_orderer.py`): client envelopes from Broadcast, signed messages and block
signatures from `ReplicaService.Exchange`, and blocks fetched in catch-up are all inputs of that
core. `PbftOrdererExecutor` carries out its effects in order: records appended to the replica's
sqlite log (durable), blocks with 2f+1 signatures committed to the orderer ledger, messages
queued to the peer links (a fetch started, a committed block's signature read back), and only
then are submitters answered. Broadcast answers a submitter only when its envelope is in a
committed block here, so an acknowledged transaction is never lost, whichever replica crashes.

Admission. The core keeps, proposes and prepares only requests that pass the channel's ordering
rule (`pbft_admission.RequestAdmission`: Broadcast's checks without the clock), so junk that a
faulty orderer forwards or proposes is dropped and counted, never ordered. A test-only hook
(`byzantine.PoisonHook`, off unless the integration test names this node) makes this replica
send such junk itself.

Config updates: the replica cuts one alone (`Replica(alone=is_config_update)`); the core checks it
at its block and tells the admission rule at once (`learn`); the executor writes the next config
with its block (`config_write`, one sqlite transaction) and then switches the channel's view
(`channel_config`), so Broadcast, Deliver and a restart (`node.stored_view`) follow it.

Dissemination (channel `batch.pbft_dissemination`, block 0's; docs/ordering.md): the replica
is a `DisseminatingReplica` — envelopes admitted here (the admission rule runs once, at the
replica a client reached) are batched, signed once and spread; PBFT-lite orders f+1-ack
availability certificates, one per slot, so a block is one batch; the links carry `Batch`,
`BatchAck` and `BatchFetch` like any replica message, and the record store keeps the batches.

Replica-set changes (docs/governance.md): when the core commits a config block that changes the
orderer list it calls `_enter_group` (its `new_epoch`): the identities, our index, the protocol
parameters (n, quorum, epoch = that block's number) and the links switch to the new list (links
to kept nodes stay), and the core gets a fresh replica — or none when the list does not name us
(a follower: it fetches blocks). The executor writes the epoch with the block
(`config_update.epoch_write`) and then discards the old group's records (`RecordStore.reset`);
a restart compares the two. A node whose organisation orders the channel but which no config
names yet starts as a follower and joins at the config block that adds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence

from dltmw.aio.clock import utc_now
from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView
from dltmw.core.config_update import (
    CONFIG_NAMESPACE,
    EPOCH_KEY,
    config_write,
    epoch_write,
    is_config_update,
    restored_epoch,
)
from dltmw.core.effects import Token
from dltmw.core.errors import (
    ClientError,
    DltmwError,
    InvariantViolation,
    TransientError,
)
from dltmw.core.handlers.pbft_blocks import BlockAssembler
from dltmw.core.handlers.pbft_orderer import (
    CommittedBlock,
    EpochStart,
    FetchBlocks,
    FetchedBlocks,
    Input,
    LaterEpoch,
    Outbound,
    PbftOrdererCore,
    SignatureOf,
)
from dltmw.core.handlers.pbft_speculative import carried_claim, certified_claims
from dltmw.core.identity import IdentityError, reference_bytes
from dltmw.core.pbft import (
    ClientRequest,
    DecidedFromStore,
    Envelope,
    JumpRecord,
    PbftConfig,
    Rejected,
    Replica,
    StableRecord,
    request_id,
)
from dltmw.core.pbft.assembly import AssembledRecord
from dltmw.core.pbft.availability import expiry_slots
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.core.pbft.dissemination import BatchFromStore, BatchRecord, DisseminationConfig
from dltmw.core.pbft.recovery import compaction_floor
from dltmw.core.pbft.surface import OrderingReplica
from dltmw.core.pbft.types import RequestCheck
from dltmw.ledger.pbft_store import RecordStore, StoredRecord
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.runtime.context import NodeContext
from dltmw.runtime.driver import Driver
from dltmw.runtime.executor import Executing
from dltmw.runtime.replica_frame import FrameOnce
from dltmw.runtime.replica_link import ReplicaLink
from dltmw.runtime.roles.orderer.byzantine import PoisonHook
from dltmw.runtime.roles.orderer.just_verified import JustVerified
from dltmw.runtime.roles.orderer.own_signatures import remembering_signer
from dltmw.runtime.roles.orderer.pbft_admission import RequestAdmission
from dltmw.runtime.roles.orderer.pbft_catchup import fetch_verified
from dltmw.runtime.roles.orderer.solo import OrdererChannel, stopped
from dltmw.runtime.waiters import Waiters, settled
from dltmw.v1 import block_pb2, errors_pb2, replica_pb2

logger = logging.getLogger(__name__)
R = errors_pb2

TICK_S = 0.05
SUBMIT_WAIT_S = 60.0
# At most one `LaterEpoch` hint per this long reaches the core: a peer that keeps refusing our
# batches (a new replica still catching up, or a faulty one) neither fills the core's inbox
# with hints nor makes this replica fetch blocks at every tick.
HINT_INTERVAL_S = 1.0
# Own block signatures kept in memory to answer replicas still collecting them (`SignatureOf`).
SIGNED_KEPT = 64
# Decided batches a replica keeps for state transfer; read once at start. Tests set it small to
# force block-level catch-up (`pbft_catchup`); production keeps the default.
DECIDED_RETAIN = int(os.environ.get("DLTMW_PBFT_DECIDED_RETAIN", "256"))


OrdererDriver = Driver[Input, Input, StoredRecord, CommittedBlock, Outbound, Rejected | None]


def replica_config(
    n: int, batch_max: int, epoch: int = 0, collector: bool = False, carried: bool = False
) -> PbftConfig:
    """Protocol parameters for real nodes (ticks of TICK_S); `collector`: the channel's
    `batch.pbft_collector`, `carried`: its `batch.pbft_carried_batches` (block 0's both)."""
    return PbftConfig(
        n=max(4, n),
        epoch=epoch,
        collector=collector,
        carried=carried,
        checkpoint_interval=16,
        batch_size_max=max(1, batch_max),
        view_change_timeout_ticks=40,
        request_timeout_ticks=40,
        retransmit_ticks=10,
        probe_ticks=20,
        decided_retain=DECIDED_RETAIN,
    )


class PbftOrdererExecutor(
    Executing[Input, StoredRecord, CommittedBlock, Outbound, Rejected | None]
):
    """Carries out the PBFT orderer core's effects (see the module docstring)."""

    def __init__(self, channel: PbftOrdererChannel) -> None:
        self._channel = channel
        self._fetch: asyncio.Task[None] | None = None
        # (block hash, our signature) of the blocks committed last, by number: the answers to
        # replicas still collecting signatures (`SignatureOf`, 1.4-1.7 per block per replica
        # at n = 4) read the whole block back from the ledger and hashed it again before.
        self._signed: dict[int, tuple[bytes, bytes]] = {}

    async def persist(self, records: Sequence[StoredRecord]) -> None:
        channel = self._channel
        await channel.store.append(records)
        stable = [r.sequence for r in records if isinstance(r, StableRecord)]
        if stable:
            executed = channel.ledger.height - channel.config.epoch  # sequences in the ledger
            retain = channel.config.decided_retain
            keep = compaction_floor(stable[-1], executed - 1, retain)
            await channel.store.compact(stable[-1], keep, expiry_slots(retain))
        for record in records:
            if isinstance(record, JumpRecord):
                logger.info("jumped to block %d of the ledger", record.sequence)

    async def apply(self, decided: Sequence[CommittedBlock]) -> None:
        channel = self._channel
        for item in decided:
            number = item.block.header.number
            writes = () if item.config is None else (config_write(item.config, number),)
            if item.epoch is not None:
                writes = (*writes, epoch_write(item.epoch))
            await channel.ledger.commit_block(item.block, (), writes)
            self._remember_signature(item.block)
            if item.config is not None:  # Deliver and Broadcast follow it from now on
                channel.channel_config.replace(item.config)
            if item.epoch is not None:  # the old group's records: never needed again
                await channel.store.reset(item.epoch)
                logger.info("replica set changed at block %d: epoch %d", number, item.epoch)
        self._channel.new_block.committed()

    async def send(self, messages: Sequence[tuple[int, Outbound]]) -> None:
        links = self._channel.links
        framed = FrameOnce()  # a broadcast serialised once for all links (`replica_frame`)
        for destination, message in messages:
            link = links.get(destination)
            if link is None:
                continue
            if isinstance(message, SignatureOf):
                await self._send_signature_of(link, message.number)
            elif isinstance(message, BatchFromStore):
                await self._send_stored_batch(link, message)
            elif isinstance(message, FetchBlocks):
                name = f"pbft-fetch-{link.node_id}"
                self._fetch = self._channel.ctx.tasks.spawn(name, self._fetch_from(link.node_id))
            elif isinstance(message, DecidedFromStore):  # `replica_config` keeps them all
                raise InvariantViolation("an orderer replica keeps its retained batches in memory")
            else:
                link.send(framed(message))

    async def reply(self, replies: Sequence[tuple[Token, Rejected | None]]) -> None:
        waiters = self._channel.waiters
        for rid, rejected in replies:
            if rejected is None:
                waiters.resolve(rid, None)
            elif rejected.reason == "NOT_A_REPLICA":  # removed from (or not yet in) the set
                why = (
                    "this orderer is no longer (or not yet) an orderer of the channel's replica"
                    " set in force: ask another"
                )
                waiters.fail(rid, TransientError(R.ERROR_REASON_ORDERING_UNAVAILABLE, why))
            else:
                reason = f"refused: {rejected.reason}"
                waiters.fail(rid, ClientError(R.ERROR_REASON_INVALID_FIELD, reason))

    async def stop(self) -> None:
        """Stop a catch-up fetch still running."""
        await cancel_and_wait(self._fetch)

    def _remember_signature(self, block: block_pb2.Block) -> None:
        """Keep our signature of a block just committed for `SIGNED_KEPT` blocks."""
        found = self._own_signature(block)
        if found is None:
            return
        signed = self._signed
        signed[block.header.number] = found
        while len(signed) > SIGNED_KEPT:  # the oldest first (blocks commit in order; a jump
            del signed[next(iter(signed))]  # over fetched blocks leaves a gap, nothing stale)

    def _own_signature(self, block: block_pb2.Block) -> tuple[bytes, bytes] | None:
        """(block hash, our signature) of a committed block, if we signed it — named in full or,
        on a channel with `identity_references`, by our reference (`PendingBlock.names`)."""
        channel = self._channel
        if channel.me is None:
            return None
        mine = channel.identities[channel.me]
        ours = (mine, reference_bytes(mine))
        for sig in block.metadata.signatures:
            if sig.signer in ours:
                return block_hash(block), sig.signature
        return None

    async def _send_signature_of(self, link: ReplicaLink, number: int) -> None:
        """Our signature of committed block `number`, for a replica still collecting them: of
        a recent block from memory, of an older one from the ledger."""
        channel = self._channel
        found = self._signed.get(number)
        if found is None:
            block = await channel.ledger.block(number)
            found = None if block is None else self._own_signature(block)
        if found is None or channel.me is None:
            return
        digest, signature = found
        link.send(
            replica_pb2.BlockSignature(
                number=number, block_hash=digest, replica=channel.me, signature=signature
            )
        )

    async def _send_stored_batch(self, link: ReplicaLink, fetch: BatchFromStore) -> None:
        """A batch in the chain that a peer fetched, read back from the record store (the core
        keeps no copy in memory); nothing when it was compacted meanwhile — the fetcher asks
        again or another replica that acked it, as when a core no longer holds a batch."""
        envelope = await self._channel.store.batch(fetch.key, fetch.digest)
        if envelope is not None:
            link.send(envelope)

    async def _fetch_from(self, node_id: str) -> None:
        """Fetch and verify blocks beyond our head; the result (even none) goes back to the
        core, which allows the next fetch once it has it."""
        channel = self._channel
        fetched = FetchedBlocks(node_id, ())
        try:
            fetched = await fetch_verified(
                channel.ctx,
                channel.view.channel_id,
                node_id,
                channel.ledger.height,
                channel.ledger.last_hash,
                channel.identities,
                channel.config.quorum,
                channel.check,
                channel.view.orderer_membership.resolved,
            )
        finally:
            driver = channel.driver
            if driver is not None and driver.running:
                await driver.put(fetched)


class PbftOrdererChannel(OrdererChannel):
    """Orders one channel as one PBFT-lite replica; Deliver is inherited."""

    def __init__(
        self,
        ctx: NodeContext,
        view: ChannelView,
        ledger: ChannelLedger,
        store: RecordStore,
        genesis: ChannelView | None = None,
    ) -> None:
        """`view`: the config in force (the ledger's); `genesis`: block 0's, whose batch size
        bounds the replicas' batches for good — every replica must use the same protocol
        parameters, and one restarted after an update of `max_tx_count` would otherwise refuse
        its peers' batches (None: `view`)."""
        super().__init__(ctx, view, ledger)
        self.store = store
        self._batch_max = (genesis or view).config.batch.max_tx_count
        self._dissemination = (genesis or view).config.batch.pbft_dissemination
        # Vote collector (block 0's, like dissemination: every replica runs the same protocol).
        self._collector = (genesis or view).config.batch.pbft_collector
        # Carried primary's batches (block 0's too; off: every batch acked, as before the flag).
        self._carried = (genesis or view).config.batch.pbft_carried_batches
        self.identities: list[bytes] = []
        self.me: int | None = None  # None: no config in force names us (a follower)
        self.config = replica_config(
            len(view.config.orderers), self._batch_max, 0, self._collector, self._carried
        )
        self.links: dict[int, ReplicaLink] = {}
        self._links_started = False
        self._just_verified = JustVerified()  # the boundary's checks, for the core's (`verify`)
        # Our own votes come back inside certificates: checked without a P-256 operation.
        self._sign = remembering_signer(ctx.signer, lambda: self.view.orderer_membership)
        self._use_list(view, 0)
        self.core: PbftOrdererCore | None = None
        # replica -> highest block it signed, from verified signatures as they arrive (readiness
        # sees them while the driver is busy; `PbftOrdererCore.behind`); at most n entries.
        self.heard: dict[int, int] = {}
        self.driver: OrdererDriver | None = None
        self.hinted_at = -HINT_INTERVAL_S  # the loop's time of the last `LaterEpoch` passed on
        self.waiters: Waiters[Token, None] = Waiters()
        self.admission = RequestAdmission.for_channel(
            view, self.config.request_bytes_max, self._dissemination
        )
        self._hook = PoisonHook.from_env(
            ctx.node_id, view.channel_id, ctx.signer, self.config.request_bytes_max
        )
        self._admit: RequestCheck = (
            self.admission if self._hook is None else self._hook.admit(self.admission)
        )
        self._executor = PbftOrdererExecutor(self)

    def _use_list(self, view: ChannelView, epoch: int) -> None:
        """Switch identities, our index, the protocol parameters and the links to the orderer
        list of `view` (epoch `epoch`); links to nodes on both lists are kept."""
        orderers = list(view.config.orderers)
        ids = [o.node_id for o in orderers]
        self.identities = [o.identity for o in orderers]
        self.me = ids.index(self.ctx.node_id) if self.ctx.node_id in ids else None
        self.config = replica_config(
            len(orderers), self._batch_max, epoch, self._collector, self._carried
        )
        self._just_verified.clear()  # an index may name another identity from now on
        by_node = {link.node_id: link for link in self.links.values()}
        links = {}
        for i, node_id in enumerate(ids):
            if node_id == self.ctx.node_id:
                continue
            link = by_node.pop(node_id, None)
            if link is None:
                link = ReplicaLink(self.ctx, view.channel_id, node_id, self._link_refused)
                if self._links_started:
                    link.start()
            links[i] = link
        self.links = links
        self.heard = {}
        for gone in by_node.values():  # removed from the list: stop its link (off this step)
            self.ctx.tasks.spawn(f"replica-link-stop-{gone.node_id}", gone.stop())

    def _enter_group(self, view: ChannelView, epoch: int) -> EpochStart | None:
        """The core's `new_epoch`: our part of the replica group `view` lists (None: follower)."""
        self._use_list(view, epoch)
        if self.me is None:
            return None
        return EpochStart(self._new_replica(self.me, []), self._assembler())

    @property
    def checks_envelopes_again(self) -> bool:
        """Only without dissemination: the replica a client reached judges the envelope again
        in its core (`RequestAdmission`), a hit of Broadcast's remembered signature check; with
        dissemination the core takes Broadcast's verdict (`ClientRequest.admitted`)."""
        return not self._dissemination

    def _disseminates(self) -> bool:
        """The channel's `batch.pbft_dissemination` (block 0's: fixed for the channel's life, as
        every replica must run the same protocol)."""
        return self._dissemination

    def _new_replica(self, me: int, records: Sequence[StoredRecord]) -> OrderingReplica:
        """Our replica, fresh or restored from `records`: a plain `Replica`, or with
        dissemination on a `DisseminatingReplica`; both are `OrderingReplica`s (`surface.py`)."""
        sign, admit, alone = self._sign, self._admit, is_config_update
        if self._disseminates():
            # The channel's batch timeout bounds how long envelopes wait while one of our
            # batches is in flight (Nagle's rule, `Disseminator.drained`): with a one-tick
            # wait every 50 ms cut a slot of its own under load (~38 envelopes at n = 4).
            timeout_ms = self.view.config.batch.timeout_ms
            dis = DisseminationConfig(
                batch_count_max=max(1, self._batch_max),
                batch_wait_ticks=max(1, round(timeout_ms / 1000 / TICK_S)),
                retransmit_ticks=self.config.retransmit_ticks,
                chain_batches_from_store=True,  # fetches of chain batches: from `store`
            )
            if records:
                core = DisseminatingReplica.restore(
                    self.config, me, sign, self.check, dis, records, admit, True, alone
                )
            else:
                core = DisseminatingReplica(
                    self.config, me, sign, self.check, dis, admit, True, alone
                )
            core.cut_max = 1
            return core
        plain = [r for r in records if not isinstance(r, BatchRecord | AssembledRecord)]
        if plain:
            return Replica.restore(
                self.config, me, sign, self.check, plain, request_ok=admit, alone=alone
            )
        return Replica(self.config, me, sign, self.check, request_ok=admit, alone=alone)

    def _assembler(self) -> BlockAssembler:
        me = 0 if self.me is None else self.me
        return BlockAssembler(
            self.view.channel_id, me, self.config.quorum, self.identities, self.check
        )

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool:
        """Does `signature` by orderer `replica` verify over `data`? The boundary's check of an
        arriving message (`rpc/replica.py`): a success is kept in `JustVerified` for the core's
        check of the same message (`check`), which is then a bytes comparison instead of the
        memo's SHA-256 of the data."""
        if not self._verify(replica, data, signature):
            return False
        self._just_verified.note(replica, data, signature)
        return True

    def check(self, replica: int, data: bytes, signature: bytes) -> bool:
        """The core's (and catch-up's) check: answered by `JustVerified` when the boundary
        verified exactly this a moment ago, else verified — and not kept there: nobody checks
        it again soon (the acks inside an availability certificate, a fetched block's
        signatures), so keeping it only held `JustVerified` full of entries never taken
        (1,024 on every orderer, mem3)."""
        if self._just_verified.take(replica, data, signature):
            return True
        return self._verify(replica, data, signature)

    def _verify(self, replica: int, data: bytes, signature: bytes) -> bool:
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
        """Restore the replica from its records (and over committed blocks it has not
        executed), rebuild unfinished blocks, start the links and the driver."""
        ledger = self.ledger
        stored = await ledger.read_snapshot(lambda r: r.get(CONFIG_NAMESPACE, EPOCH_KEY))
        epoch = restored_epoch(None if stored is None else stored[0])
        if await self.store.epoch() != epoch:  # a crash fell between the block and the reset
            await self.store.reset(epoch)
        self._use_list(self.view, epoch)
        records = await self.store.load_all() if self.me is not None else []
        sign = self._sign
        # (a follower's replica is a placeholder: never stepped)
        replica = self._new_replica(self.me or 0, records)
        unexecuted = await ledger.blocks(epoch + replica.next_block, ledger.height)
        self.core = PbftOrdererCore(
            replica,
            self._assembler(),
            sign,
            ledger.height,
            ledger.last_hash,
            unexecuted,
            self._hook,
            by_limits_only=self.view.config.batch.cut_by_limits_only,
            view=self.view,
            learn=self.admission.learn,
            epoch=epoch,
            new_epoch=self._enter_group,
            follower=self.me is None,
        )
        self._links_started = True
        for link in self.links.values():
            link.start()
        self.driver = Driver(
            f"pbft-{self.view.channel_id}",
            self.core,
            self._executor,
            self.ctx.tasks,
            inbox_max=self.ctx.limits.queue_max,
            tick_s=TICK_S,
            on_failure=lambda _: self.waiters.fail_all(stopped()),
            metrics=self.ctx.metrics,
        )
        await self.driver.start()

    async def stop(self) -> None:
        """Stop the driver (its step finishes), the fetch and the links; refuse waiters."""
        if self.driver is not None:
            await self.driver.stop()
        await self._executor.stop()
        for link in self.links.values():
            await link.stop()
        self.waiters.fail_all(stopped())
        await self.store.close()

    @property
    def replica(self) -> OrderingReplica | None:
        """The PBFT-lite replica (None before start)."""
        return self.core.replica if self.core is not None else None

    def catching_up(self) -> int | None:
        """The height the cluster is known to hold while this replica is behind it, else None
        (readiness: `PbftOrdererCore.behind`, with the signatures heard but not yet stepped)."""
        return self.core.behind(self.heard) if self.core is not None else None

    @property
    def current_view(self) -> int:
        """The replica's current view (for refusing stale-view messages)."""
        return self.core.replica.view if self.core is not None else 0

    async def submit(self, envelope: bytes) -> None:
        """Order an admitted envelope; returns once it is in a committed block here."""
        (error,) = await self.submit_many([envelope])
        if error is not None:
            raise error

    async def submit_many(self, envelopes: Sequence[bytes]) -> list[DltmwError | None]:
        """Order admitted envelopes (Broadcast checked them: `Ordering.submit_many`); returns
        once each is in a committed block here (None) or failed (OVERLOADED when the inbox is
        full, WAIT_TIMEOUT when not ordered in time)."""
        driver, core = self.driver, self.core
        if driver is None or core is None:
            raise stopped()
        waits: list[tuple[int, bytes, asyncio.Future[None]]] = []
        out: list[DltmwError | None] = []
        # Broadcast checked these envelopes (`rpc/orderer.py`: the ordering rule with the clock,
        # against the config in force); with dissemination no other replica judges them, so the
        # core does not judge them again (`ClientRequest.admitted`), size bound aside.
        judged, size_max = self._dissemination, self.config.request_bytes_max
        for envelope in envelopes:
            rid = request_id(envelope)
            out.append(None)
            if rid in core.replica.executed_ids:
                continue
            done = self.waiters.add(rid)
            admitted = judged and len(envelope) <= size_max
            try:
                driver.submit(ClientRequest(envelope, admitted, rid))
            except DltmwError as exc:
                self.waiters.discard(rid, done)
                out[-1] = exc
                continue
            waits.append((len(out) - 1, rid, done))
        try:
            results = await settled([f for _, _, f in waits], SUBMIT_WAIT_S)
        finally:
            for _position, rid, done in waits:
                self.waiters.discard(rid, done)
        for (position, _rid, _done), result in zip(waits, results, strict=True):
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
        if self._disseminates():
            return  # the requests carried are certificates: checked by the core, no cache
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

    def _link_refused(self, reason: int) -> None:
        """A peer refused a batch of ours: for its signer, it checks our signature against
        another replica list — perhaps one past a boundary we missed (`LaterEpoch(None)`)."""
        if reason in (errors_pb2.ERROR_REASON_BAD_SIGNATURE, errors_pb2.ERROR_REASON_NOT_A_MEMBER):
            self.later_epoch(None)

    def later_epoch(self, epoch: int | None) -> None:
        """A hint for the core (`LaterEpoch`): at most one per `HINT_INTERVAL_S`; dropped when
        its inbox is full (counted by the driver: the core is busy then, and its catch-up
        schedule runs anyway) or it is stopping; never an error of its own for the refusal that
        carries it."""
        if self.driver is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self.hinted_at < HINT_INTERVAL_S:
            return  # one recently passed on: the core fetches for it (HINT_INTERVAL_S)
        self.hinted_at = now
        with contextlib.suppress(TransientError):  # Overloaded, or SHUTTING_DOWN
            self.driver.submit_all([LaterEpoch(epoch)])

    def offer(self, messages: list[Envelope], signatures: list[replica_pb2.BlockSignature]) -> None:
        """Queue verified inbound messages for the core (all or nothing; OVERLOADED if full)."""
        if self.driver is None:
            raise stopped()
        for signature in signatures:  # the boundary verified them (`rpc/replica.py`)
            if signature.number > self.heard.get(signature.replica, -1):
                self.heard[signature.replica] = signature.number
        epoch = self.config.epoch
        for envelope in messages:  # Commits carrying a block signature (the signer's, verified)
            message = replica_pb2.ReplicaMessage.FromString(envelope.payload)
            claim = carried_claim(message, epoch)
            if claim is not None and claim > self.heard.get(envelope.replica, -1):
                self.heard[envelope.replica] = claim
            # With a vote collector, peers' Commits come inside its commit certificates: each
            # counts once verified (`verify` keeps the result for the core's own check of it).
            for commit, claim in certified_claims(message, epoch):
                if claim > self.heard.get(commit.replica, -1) and self.verify(
                    commit.replica, commit.payload, commit.signature
                ):
                    self.heard[commit.replica] = claim
        self.driver.submit_all([*messages, *signatures])
