"""The peer role of one channel: endorser and committer.

Committer. The peer follows the channel's orderer with a Deliver stream from its own height (a
supervised loop) and hands every block to its committer (`committer.py`: the one driver running
the pure commit decision, `core/committer.py`), waiting for each. Nothing inside a block can
stop the peer: the per-envelope checks are total (any bytes give a validation code,
`core/txcheck.check_transaction`), so a block that passes the chain link and the orderer
signatures is always committed. A block that fails them is refused (PeerError) and the peer
tries another orderer; so does a peer whose orderer withholds a block that another orderer shows
a verified header of (the censorship monitor, `header_monitor.py`, on a channel with more than
one orderer), or whose stream went quiet while a block is wanted (`deliver_watch.py`). Anything
else that escapes a commit (a storage fault, a bug) is logged with its traceback at once, never
left to surface only at shutdown.

Endorser. A proposal is admitted (signature, membership, tx_id, time window, not yet on the
ledger), simulated against one consistent snapshot of committed state on the ledger's reader
thread (in place, on the loop, for a small batch of bounded built-in functions: `in_place.py`),
and the response payload is signed over (payload || endorser identity).

Read your writes. A proposal may name a `min_block_number`: the state it is simulated on must
include that block (a client saw it committed). `endorse_at` endorses at once the proposals whose
block is committed here and holds each other group (one per distinct block) on the commit
condition for at most `limits.height_wait_s`, then refuses it with HEIGHT_NOT_REACHED
(UNAVAILABLE: the peer is catching up). Groups never wait for each other, so a proposal naming a
block far ahead holds up nobody else. Every response names the last block of the state it was
simulated on (`state_block_number`), read in the same snapshot, so a gateway can tell a refusal
from an endorser that was behind from a final one.

Contracts run with the transaction's header facts (`TxInfo`) and a wall-clock backstop per
invocation (`limits.contract_wall_s`): past it a metered contract stops with status 503, which
is never endorsed and reaches the caller as RESOURCE_EXHAUSTED (`core/contract.py`).

Batching. Concurrent requests are coalesced (`aio/coalesce.py`): the signature checks of
every proposal admitted at one moment run in chunks on the thread pool, their duplicate checks
are one reader-thread hop, and their simulations and signatures another — so nothing awaited on
the hot path is per transaction. Commit status waiters are resolved from the committed block
itself (`watch`), not by polling the ledger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

import grpc

from dltmw.aio.clock import duration_clock, utc_now
from dltmw.aio.coalesce import Coalescer
from dltmw.aio.pool import capturing, map_chunked
from dltmw.aio.rpc_errors import reconnects
from dltmw.aio.tasks import cancel_and_wait
from dltmw.core import endorsement_batch
from dltmw.core.block import TxRecord
from dltmw.core.channel import ChannelView, CurrentConfig
from dltmw.core.committer import Committed
from dltmw.core.contract import simulate
from dltmw.core.errors import ClientError, DltmwError, PeerError, TransientError
from dltmw.core.hashing import sha256
from dltmw.core.lifecycle import NAMESPACE
from dltmw.core.lifecycle_contract import ADMIN_FUNCTIONS
from dltmw.core.light_client import trusted_roots
from dltmw.core.txcheck import ChannelTrust, CheckedProposal, check_signed_proposal
from dltmw.ledger.backend import Ledger, StateReader
from dltmw.rpc.orderer import HEIGHT_METADATA
from dltmw.rpc.tracing import now_ns
from dltmw.runtime.blockfeed import BlockSignal, RecentBlocks, follow
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.peer import proofs
from dltmw.runtime.roles.peer.censor_watch import CensorWatch
from dltmw.runtime.roles.peer.committer import Committer
from dltmw.runtime.roles.peer.deliver_watch import STALL_S, DeliverWatch
from dltmw.runtime.roles.peer.header_monitor import RECONNECT, HeaderMonitor, deliver_request
from dltmw.runtime.roles.peer.in_place import in_place_reads
from dltmw.runtime.roles.peer.lifecycle import ChannelLifecycle, ContractSource
from dltmw.runtime.roles.peer.pipeline import commit_pipelined
from dltmw.runtime.waiters import Waiters
from dltmw.v1 import (
    block_pb2,
    crosschain_pb2,
    errors_pb2,
    orderer_service_pb2_grpc,
    proposal_pb2,
    transaction_pb2,
)

logger = logging.getLogger(__name__)


R = errors_pb2
CHECK_CHUNK = 64
DUPLICATE_TXID = transaction_pb2.TX_VALIDATION_CODE_DUPLICATE_TXID
T = TypeVar("T")


class PeerChannel:
    """Endorses and commits one channel.

    `channel_config` is the channel's one current-config holder on this peer: the committer
    replaces its view when a config block commits, and everything (admission, endorsement, the
    gateway and the servicers, through `view`) reads it from there, from the next block on.
    """

    def __init__(
        self,
        ctx: NodeContext,
        view: ChannelView,
        ledger: Ledger,
        pool: ThreadPoolExecutor,
        packages: ContractSource | None = None,
        genesis_hash: bytes = b"",
    ) -> None:
        self.ctx = ctx
        self.genesis_hash = genesis_hash  # block 0's hash: contracts' TxInfo.channel_genesis
        # clients' identity references resolve through the ledger's table (core/identity_table)
        self.channel_config = CurrentConfig(view, clients=ledger.identities)
        self.ledger = ledger
        self._pool = pool
        # The committed contract definitions: what runs, under which policy and sequence.
        self.lifecycle = ChannelLifecycle(self.channel_config, packages, ctx.node_id)
        self._committed = BlockSignal()  # the block followers' and `reach`'s wake-up
        self._recent = RecentBlocks()  # the last committed blocks, for `committed_blocks`
        # The height whose blocks are applied in full: committed AND their effects on this
        # peer's views taken (a lifecycle commit's definitions are loaded after the block is
        # written, across an await). None until the first commit here: all on disk is applied.
        self._applied: int | None = None
        self._task: asyncio.Task[None] | None = None
        name = view.channel_id
        owner = ctx.tasks  # a batching task that dies stops the node (aio/coalesce.py)
        self._admitter = Coalescer(self.admit_many, name=f"admit-{name}", owner=owner)
        self._endorser = Coalescer(self.endorse_many, name=f"endorse-{name}", owner=owner)
        self._lookup = Coalescer(
            self.ledger.tx_records, batch_max=512, name=f"txid-{name}", owner=owner
        )
        self._watchers: Waiters[str, TxRecord] = Waiters()
        self.committer = Committer(
            ctx, self.channel_config, ledger, pool, self._on_committed, self.lifecycle
        )
        # The orderer's height as last heard (Deliver's initial metadata, then each block);
        # None until a Deliver stream opened since this process started.
        self.orderer_height: int | None = None
        self.deliver_watch = DeliverWatch()  # re-dials a quiet stream when a block is wanted
        # ... and one that withholds what another orderer's headers show (header_monitor.py;
        # its timeout, `limits.censorship_timeout_s`, is set when following starts)
        self.censor_watch = CensorWatch(0.0, lambda: asyncio.get_running_loop().time())

    @property
    def view(self) -> ChannelView:
        """The channel's current config (read it each time: a config block replaces it)."""
        return self.channel_config.view

    async def start(self) -> None:
        """Start the committer, then follow the orderer."""
        await self.committer.start()
        self.censor_watch.timeout_s = self.ctx.limits.censorship_timeout_s
        self._task = self.ctx.tasks.forever(f"deliver-{self.view.channel_id}", self._follow)

    async def stop(self) -> None:
        """Stop following, then the committer (its block in progress finishes; idempotent)."""
        await cancel_and_wait(self._task)
        self._task = None
        await self.committer.stop()
        for coalescer in (self._admitter, self._endorser, self._lookup):
            await coalescer.close()

    async def offload(self, fn: Callable[[T], object], items: Sequence[T]) -> list[object]:
        """`fn` over `items` on the thread pool in chunks (signature checks use both cores);
        an item whose `fn` raised DltmwError gets that exception as its result."""
        return await map_chunked(self._pool, capturing(fn, DltmwError), items, CHECK_CHUNK)

    # --- endorser -------------------------------------------------------------------------

    async def admit(self, signed: proposal_pb2.SignedProposal) -> CheckedProposal:
        """Admission checks of a proposal, including the duplicate tx_id check (batched)."""
        return await self._admitter.call(signed)

    def _check_proposal(self, signed: proposal_pb2.SignedProposal) -> CheckedProposal:
        checked = check_signed_proposal(
            signed, self.view, utc_now(), self.ctx.limits.timestamp_window_s
        )
        name = checked.invocation.contract
        admin_only = name == NAMESPACE and checked.invocation.function in ADMIN_FUNCTIONS
        if admin_only and "admin" not in checked.creator.roles:
            raise ClientError(
                R.ERROR_REASON_NOT_AUTHORIZED,
                "lifecycle transactions (approve, commit) need an admin identity of a member"
                f" organisation; {checked.creator.common_name!r} is not an admin",
            )
        if name != NAMESPACE:
            self.lifecycle.resolve(name)
        return checked

    async def admit_many(
        self, batch: Sequence[proposal_pb2.SignedProposal]
    ) -> list[CheckedProposal | BaseException]:
        """`admit` of many proposals at once: the admitted ones, or each one's ClientError."""
        results = await self.check_many(batch)
        admitted = [r for r in results if isinstance(r, CheckedProposal)]
        refusals = iter(await self.duplicates(admitted))
        return [(next(refusals) or r) if isinstance(r, CheckedProposal) else r for r in results]

    async def check_many(
        self, batch: Sequence[proposal_pb2.SignedProposal]
    ) -> list[CheckedProposal | BaseException]:
        """Admission's checks of many proposals (signatures, creator, contract) without the
        duplicate tx_id check, which needs a read transaction. Two ways to make it: a caller
        that reads the ledger next anyway makes it in that read (`endorse_at(check_duplicates=
        True)`: the gateway's own peer, and `admit_and_endorse`, the endorser service); any
        other in a read of its own (`duplicates`: `admit`, the gateway's proposals its peer is
        not asked for)."""
        # each item: `_check_proposal`'s CheckedProposal, or the DltmwError it raised
        return cast(
            list[CheckedProposal | BaseException], await self.offload(self._check_proposal, batch)
        )

    async def duplicates(self, batch: Sequence[CheckedProposal]) -> list[ClientError | None]:
        """Admission's duplicate tx_id check in a read of its own (one hop, none for an empty
        batch): for each proposal, its DUPLICATE_TX_ID refusal (`duplicate`) if its
        transaction is on the ledger, else None."""
        on_ledger = await self.ledger.existing_tx_ids(c.tx_id for c in batch)
        return [duplicate(c) if c.tx_id in on_ledger else None for c in batch]

    async def admit_and_endorse(
        self, batch: Sequence[proposal_pb2.SignedProposal]
    ) -> list[proposal_pb2.ProposalResponse | BaseException]:
        """`admit_many`, then `endorse_many` of the admitted proposals (on any committed
        state: the caller reached the blocks it names first), with the duplicate check and the
        simulation in ONE read transaction (`endorse_at(check_duplicates=True)`): each read
        transaction after a commit re-reads sqlite's pages (38 to 50 µs, 150 to 179 after idle;
        benchmarks/RESULTS.md, lane lat15), and at one transaction per block every endorsement
        follows a commit. The same answers: each proposal's response, or the error admission
        or the read gave it."""
        results = await self.check_many(batch)
        admitted = [r for r in results if isinstance(r, CheckedProposal)]
        answers = iter(await self.endorse_at(admitted, [0] * len(admitted), True))
        return [next(answers) if isinstance(r, CheckedProposal) else r for r in results]

    def _trust(self) -> ChannelTrust:
        """What a contract may know besides the signed header: the channels this channel's
        config trusts (cross-channel contracts start light clients only from those), this
        channel's block 0 hash and the notaries its config trusts (cross-flow DvP)."""
        config = self.view.config
        return ChannelTrust(
            trusted_genesis=trusted_roots(config),
            channel_genesis=self.genesis_hash,
            trusted_notaries=tuple(config.trusted_notaries),
        )

    async def simulate(self, checked: CheckedProposal) -> proposal_pb2.ProposalResponsePayload:
        """Simulate an admitted proposal on one snapshot of committed state."""
        contract, sequence = self.lifecycle.runnable(checked.invocation.contract)
        clock = duration_clock()
        payload = await self.ledger.read_snapshot(
            lambda reader: simulate(
                contract,
                checked.invocation,
                reader,
                checked.tx_info(self._trust()),
                self._backstop(clock),
            )
        )
        payload.rwset.contract_sequence = sequence
        payload.proposal_hash = sha256(checked.proposal_bytes)
        return payload

    async def endorse(self, signed: proposal_pb2.SignedProposal) -> proposal_pb2.ProposalResponse:
        """ProcessProposal: admit, simulate, sign (no endorsement when the contract refused)."""
        return await self.endorse_checked(await self.admit(signed))

    async def endorse_checked(self, checked: CheckedProposal) -> proposal_pb2.ProposalResponse:
        """Simulate and sign an already admitted proposal (batched with concurrent ones)."""
        return await self._endorser.call(checked)

    async def endorse_many(
        self, batch: Sequence[CheckedProposal]
    ) -> list[proposal_pb2.ProposalResponse]:
        """Simulate every proposal on one snapshot and sign, all on the reader thread; in
        place, on the loop, for a small batch of bounded built-in functions (`in_place.py`:
        the bus's lone message, whose hop cost more than its simulation)."""
        return (await self._endorse_once(batch, check_duplicates=False))[1]

    async def _endorse_once(
        self, batch: Sequence[CheckedProposal], check_duplicates: bool
    ) -> tuple[set[str], list[proposal_pb2.ProposalResponse]]:
        """`endorse_many`'s read transaction; with `check_duplicates`, the tx_ids of `batch`
        already on the ledger first (`existing_tx_ids`, in the same transaction: the chunked
        `tx_records_found`, a few statements for the batch, not one per tx_id; sorted, so
        the statements are the same for the same batch), and a response for each other
        proposal only."""
        if not batch:
            return set(), []

        clock = duration_clock()  # virtual in the simulator

        trust = self._trust()  # one config in force for the whole batch
        batches = self.view.config.endorsement_batches
        wanted = sorted({c.tx_id for c in batch if c.tx_id}) if check_duplicates else []

        def run(reader: StateReader) -> tuple[set[str], list[proposal_pb2.ProposalResponse]]:
            on_ledger = set(reader.tx_records_found(wanted)) if wanted else set()
            todo = [c for c in batch if c.tx_id not in on_ledger]
            number = max(0, reader.last_block_number())
            responses = [self._simulate(reader, checked, trust, number, clock) for checked in todo]
            self._sign(responses, batches)
            return on_ledger, responses

        tracer = self.ctx.tracer
        start_ns = now_ns() if tracer.enabled else 0
        lookups = in_place_reads(batch, self.lifecycle.builtin_of)
        if lookups is None:
            on_ledger, responses = await self.ledger.read_snapshot(run)
        else:
            on_ledger, responses = await self.ledger.read_small(lookups + len(wanted), run)
        if tracer.enabled:  # an "endorse" span per proposal, in its transaction's trace
            channel = {"dltmw.channel": self.view.channel_id}
            done = [c.tx_id for c in batch if c.tx_id not in on_ledger]
            tracer.record("endorse", done, start_ns, now_ns(), channel)
        return on_ledger, responses

    async def endorse_at(
        self,
        batch: Sequence[CheckedProposal],
        min_blocks: Sequence[int],
        check_duplicates: bool = False,
    ) -> list[proposal_pb2.ProposalResponse | DltmwError]:
        """`endorse_many`, each proposal on a state that includes its `min_blocks` entry (0: any),
        or HEIGHT_NOT_REACHED for a block not committed within `limits.height_wait_s`.

        With `check_duplicates` (proposals that passed `check_many` only), admission's
        duplicate check is made in the simulation's read transaction: a proposal whose tx_id is
        on the ledger gets DUPLICATE_TX_ID (`duplicate`) and is not simulated. The gateway's
        own peer: one read transaction per lone proposal instead of two (admission's, then the
        simulation's; each re-reads sqlite's pages after a commit, benchmarks/RESULTS.md, lane
        lat15); `admit_and_endorse`, the endorser service, likewise. A failed read answers
        each proposal of its group with its TransientError."""
        if not batch:
            return []
        groups: dict[int, list[int]] = {}
        for index, number in enumerate(min_blocks):
            # Every block already committed here is one group: one snapshot for all of them.
            groups.setdefault(0 if number < self.applied_height else number, []).append(index)
        out: list[proposal_pb2.ProposalResponse | DltmwError | None] = [None] * len(batch)

        async def group(number: int, indexes: list[int]) -> None:
            answers: Sequence[proposal_pb2.ProposalResponse | DltmwError]
            todo = [batch[i] for i in indexes]
            try:
                await self.reach(number, self.ctx.limits.height_wait_s)
                on_ledger, responses = await self._endorse_once(todo, check_duplicates)
            except TransientError as exc:
                answers = [exc] * len(indexes)
            else:
                fresh = iter(responses)
                answers = [duplicate(c) if c.tx_id in on_ledger else next(fresh) for c in todo]
            for i, answer in zip(indexes, answers, strict=True):
                out[i] = answer

        if len(groups) == 1:  # the usual case: no task per group, no extra loop turn
            await group(*next(iter(groups.items())))
        else:
            await asyncio.gather(*(group(n, ix) for n, ix in groups.items()))
        return [a for a in out if a is not None]

    async def reach(self, block_number: int, timeout_s: float) -> None:
        """Return once block `block_number` is committed here (at once for 0, which every
        joined peer holds), or raise HEIGHT_NOT_REACHED after `timeout_s`."""
        if block_number == 0 or self.applied_height > block_number:
            return
        first_s = STALL_S if timeout_s > STALL_S else timeout_s
        if not await self._committed_within(block_number, first_s):
            # Not here soon: if the Deliver stream has gone quiet, dial again (deliver_watch)
            if timeout_s > STALL_S and self.deliver_watch.wanted(self.ledger.height):
                logger.warning(
                    "block %d wanted on %s, not delivered within %.1fs: re-dialling Deliver",
                    block_number,
                    self.ctx.node_id,
                    STALL_S,
                )
            if not await self._committed_within(block_number, timeout_s - first_s):
                last = self.ledger.height - 1
                raise TransientError(
                    R.ERROR_REASON_HEIGHT_NOT_REACHED,
                    f"block {block_number} not committed on {self.ctx.node_id} within"
                    f" {timeout_s}s (last committed: {last})",
                    {"min_block_number": str(block_number), "block_number": str(last)},
                )

    async def _committed_within(self, block_number: int, timeout_s: float) -> bool:
        """Whether block `block_number` is committed here within `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._committed.wait_until(lambda: self.applied_height > block_number)
        except TimeoutError:
            return False
        return True

    def _simulate(
        self,
        reader: StateReader,
        checked: CheckedProposal,
        trust: ChannelTrust,
        state_block_number: int,
        clock: Callable[[], float],
    ) -> proposal_pb2.ProposalResponse:
        """The unsigned response to one proposal (`_sign` endorses the batch's together)."""
        contract, sequence = self.lifecycle.runnable(checked.invocation.contract)
        tx = checked.tx_info(trust)
        payload = simulate(contract, checked.invocation, reader, tx, self._backstop(clock))
        payload.rwset.contract_sequence = sequence  # validation compares it with the committed
        payload.proposal_hash = sha256(checked.proposal_bytes)
        return proposal_pb2.ProposalResponse(
            payload=payload.SerializeToString(),
            response=payload.response,
            state_block_number=state_block_number,
        )

    def _sign(self, responses: Sequence[proposal_pb2.ProposalResponse], batches: bool) -> None:
        """Endorse every response whose contract agreed: one signature over the batch's root
        where the channel signs in batches (`batches`, core/endorsement_batch.py), else one
        each."""
        ok = [r for r in responses if r.response.status == 200]
        signed = endorsement_batch.sign(
            self.ctx.signer, self.view.membership, [r.payload for r in ok], batches
        )
        for response, endorsement in zip(ok, signed, strict=True):
            response.endorsement.CopyFrom(endorsement)

    def _backstop(self, clock: Callable[[], float]) -> Callable[[], bool]:
        """The wall-clock backstop of one invocation (a metered contract polls it; the step
        budget, identical on every endorser, is what normally stops a runaway contract).
        `clock` (`aio.clock.duration_clock`) is read where the simulation runs."""
        deadline = clock() + self.ctx.limits.contract_wall_s
        return lambda: clock() > deadline

    # --- committer ------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Deliver blocks from our height, forever, switching orderers on failure. The list is
        read again at each attempt: a config update may add or remove orderers, and a peer that
        kept block 0's list never fetched from an orderer added later (so, with the original
        ones down, it stopped committing although the new one was cutting blocks)."""
        attempt = 0
        while True:
            orderers = self.view.orderer_ids()
            named = self.deliver_watch.take_next_source()  # it showed a block ours withheld
            node_id = named if named in orderers else orderers[attempt % len(orderers)]
            try:
                await self._deliver_from(node_id)
                attempt = 0
            except (grpc.aio.AioRpcError, TransientError, PeerError) as exc:
                logger.warning("deliver from %s failed: %s", node_id, exc)
                if reconnects(exc):
                    await self.ctx.forget(node_id)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self.deliver_watch.take_stalled() or (task and task.cancelling()):
                    raise  # our own task's cancellation, not the watch's re-dial
                logger.warning("deliver from %s went quiet: the next orderer", node_id)
            finally:
                self.deliver_watch.closed()
            attempt += 1
            await asyncio.sleep(RECONNECT.delay_s(attempt))

    async def _deliver_from(self, node_id: str) -> None:
        channel = await self.ctx.channel_to(node_id)
        stub = orderer_service_pb2_grpc.OrdererServiceStub(channel)
        call = stub.Deliver(deliver_request(self.ctx, self.view.channel_id, self.ledger.height))
        watch, censor = self.deliver_watch, self.censor_watch
        watch.opened(call)
        censor.opened(self.ledger.height)
        monitor = None
        if censor.enabled and len(self.view.orderer_ids()) > 1:
            headers = HeaderMonitor(self.ctx, lambda: self.view, node_id, censor, watch, self._pool)
            monitor = self.ctx.tasks.spawn(f"censor-monitor-{self.view.channel_id}", headers.run())

        async def delivered() -> AsyncIterator[block_pb2.Block]:
            async for response in call:
                number = response.block.header.number
                watch.delivered(number)
                censor.delivered(number)
                self.orderer_height = max(self.orderer_height or 0, number + 1)
                yield response.block

        try:
            self._heard_height(await call.initial_metadata())
            await commit_pipelined(delivered(), self.committer.enqueue, lambda: self.ledger.height)
        finally:
            await cancel_and_wait(monitor)

    def _heard_height(self, metadata: grpc.aio.Metadata | None) -> None:
        """The orderer's height at the opening of a Deliver stream (an orderer that says none,
        as the simulated network's, leaves only the blocks themselves to tell)."""
        value = (metadata or grpc.aio.Metadata()).get(HEIGHT_METADATA)
        height = int(value) if isinstance(value, str) and value.isdigit() else 0
        self.orderer_height = max(self.orderer_height or 0, height)

    @property
    def caught_up(self) -> bool:
        """Ready to serve current state: a Deliver stream opened since start and this peer has
        committed every block the orderer was last heard to hold (docs/operations.md)."""
        known = self.orderer_height
        return known is not None and self.ledger.height >= known

    async def commit(self, block: block_pb2.Block) -> None:
        """Validate and commit the next block (PeerError when it is refused)."""
        await self.committer.commit(block)

    @property
    def applied_height(self) -> int:
        """Blocks below it are committed and applied (`reach` waits on it, not on the ledger's
        height: a proposal naming block n must see n's lifecycle definitions, not only its
        writes — the demo's trader was refused CONTRACT_NOT_COMMITTED right after the commit)."""
        return self.ledger.height if self._applied is None else self._applied

    async def _on_committed(self, committed: Committed) -> None:
        """A block is durable: answer its commit-status watchers, wake the block followers."""
        self._applied = max(self._applied or 0, committed.number + 1)
        self.deliver_watch.committed()
        self._resolve_watchers(committed.number, committed.tx_ids, committed.codes)
        if committed.block is not None:
            self._recent.remember(committed.block)
        self._committed.committed()

    # --- queries --------------------------------------------------------------------------

    async def tx_record(self, tx_id: str) -> TxRecord | None:
        """Where `tx_id` committed here, or None (batched with concurrent lookups)."""
        return await self._lookup.call(tx_id)

    def tx_record_soon(self, tx_id: str) -> asyncio.Future[TxRecord | None]:
        """`tx_record` as a future (no coroutine per lookup: the gateway's batched Submit)."""
        return self._lookup.submit(tx_id)

    async def commit_proof(self, tx_id: str) -> crosschain_pb2.CommitProof:
        """A commit proof of `tx_id` with this peer's attestation (`proofs.py`)."""
        return await proofs.commit_proof(self.ledger, self.ctx.signer, tx_id)

    async def config_blocks(self, from_block: int) -> tuple[list[block_pb2.Block], int, int]:
        """Config blocks from `from_block` on: (blocks, scanned_to, height)."""
        found = await proofs.config_blocks(self.ledger, from_block)
        return found.blocks, found.scanned_to, found.height

    def watch(self, tx_id: str) -> asyncio.Future[TxRecord]:
        """A future resolved when a block committing `tx_id` (first occurrence) is durable here.

        Register BEFORE checking the ledger or submitting, so no commit can slip in between;
        always `unwatch` when done with it.
        """
        return self._watchers.add(tx_id)

    def unwatch(self, tx_id: str, future: asyncio.Future[TxRecord]) -> None:
        """Forget a watcher (idempotent)."""
        self._watchers.discard(tx_id, future)

    def _resolve_watchers(self, number: int, tx_ids: Sequence[str], codes: Sequence[int]) -> None:
        # A DUPLICATE_TXID entry is never the first occurrence: the record is the earlier one,
        # which either resolved its watchers already or is on the ledger for `wait_for_tx`.
        if not self._watchers:
            return
        for index, (tx_id, code) in enumerate(zip(tx_ids, codes, strict=True)):
            if code != DUPLICATE_TXID and tx_id in self._watchers:
                self._watchers.resolve(tx_id, TxRecord(number, index, code))

    async def wait_for_tx(self, tx_id: str, timeout_s: float) -> TxRecord:
        """Block until `tx_id` is committed here; UNAVAILABLE(WAIT_TIMEOUT) after `timeout_s`."""
        future = self.watch(tx_id)
        try:
            record = await self.tx_record(tx_id)
            if record is not None:
                return record
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout_s)
            except TimeoutError:
                raise TransientError(
                    R.ERROR_REASON_WAIT_TIMEOUT, f"tx {tx_id} not committed within {timeout_s}s"
                ) from None
        finally:
            self.unwatch(tx_id, future)

    def committed_blocks(self, start: int) -> AsyncIterator[block_pb2.Block]:
        """Committed blocks (with this peer's validation codes) from `start`, forever; the
        last few from memory (`blockfeed.RecentBlocks`: shared, never to be changed)."""
        return follow(self.ledger, self._committed, start, recent=self._recent)


def duplicate(checked: CheckedProposal) -> ClientError:
    """Admission's refusal of a proposal whose transaction is already on the ledger."""
    return ClientError(R.ERROR_REASON_DUPLICATE_TX_ID, f"tx {checked.tx_id} is on the ledger")
