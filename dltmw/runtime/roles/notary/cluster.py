"""One replica of a notary cluster: PBFT-lite orders admitted requests, every replica decides.

A node whose id is a member of a `[[notary_clusters]]` entry of the network map runs this role
instead of the single notary; it serves the same NotaryService, for transactions naming the
cluster id as their notary, and answers with its OWN signature (a client gathers f+1 matching
answers from distinct members, see `client/notary_cluster.py` and `core/notary_cluster.py`).

Request path: admit the call's requests on the verify pool (bad input is refused here with its
specific status and changes nothing); if the client asked another member to order them
(`ordered_elsewhere`), wait for their decisions here first (`cluster_attest.py`); wrap the rest
into PBFT requests of at most WRAP_BYTES_MAX, calls that wait for a turn merged into one wrap, and
hand them to PBFT-lite a few at a time, each stamped with this replica's clock when it leaves
(`cluster_intake.py`: why), then wait until each is decided and applied HERE. Two cores, each
run by the one driver (`runtime/driver.py`): the PBFT-lite `Replica` orders wrapped requests
(its executor appends records durably to the RecordStore, then hands each decided batch to the
decider, then sends to the links); the `ClusterDecider` (`core/notary_cluster.py`) decides each
batch — its executor's load re-admits the batch at its stamp on the verify pool
(`cluster_open.py`) and reads the spent rows it touches, and its effects commit the batch with
its sequence in one sqlite transaction (ClusterNotaryStore) before the waiters are answered;
decided batches already queued when the decider steps (up to DECIDER_BATCH_MAX) are decided in
one step and committed in ONE transaction (group commit: one fsync for all of them).
Backups drop pre-prepares whose stamps are not fresh by their own clock (`stamp_fresh`). A
restart restores the replica from its records and re-applies decided batches the spent-set
missed (read from the records, not from memory), so nothing acknowledged is lost and re-asking
gets the same answer. Records are compacted only 1024 batches below a stable checkpoint
(`decided_retain`), far more than the decider's bounded inbox can hold unapplied. Only the
last DECIDED_KEPT decided batches stay in memory (each carries whole wraps: 1,024 of them were
~20 MiB per member, issue 18; 32 still ~7 MB of peak RSS at 2,048 in flight, where slots carry
full wraps: RESULTS.md 2026-12-04, ncl6); a lagging member's catch-up for older ones is answered
from the records (`DecidedFromStore` read here, stepped back in as `StoredDecided`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dltmw.aio.clock import utc_now
from dltmw.core import request_batch
from dltmw.core.effects import Token
from dltmw.core.errors import ClientError, InvariantViolation
from dltmw.core.handlers.notary import signed as signed_decision
from dltmw.core.identity import IdentityError, Membership
from dltmw.core.notary import NotarisationAsk, NotaryIdentity
from dltmw.core.notary_cluster import (
    ClusterDecider,
    Part,
    Unpacked,
    stamp_fresh,
    unapplied,
    unwrap,
    wrap_parts,
)
from dltmw.core.notary_cluster_cut import NagleCut
from dltmw.core.pbft import (
    ClientRequest,
    DecidedRecord,
    Envelope,
    PbftConfig,
    Record,
    Replica,
    request_id,
)
from dltmw.core.utxo.build import org_of
from dltmw.core.utxo.model import to_ns
from dltmw.ledger.cluster_notary_store import ClusterNotaryStore
from dltmw.ledger.pbft_store import RecordStore
from dltmw.net.netmap import NetworkMap
from dltmw.runtime.context import NodeContext
from dltmw.runtime.driver import Driver
from dltmw.runtime.replica_link import ReplicaLink
from dltmw.runtime.roles.notary.cluster_attest import ATTEST_WAIT_S, Admitted, Attesting
from dltmw.runtime.roles.notary.cluster_effects import (
    Answers,
    DecidedBatch,
    DeciderDriver,
    DecisionExecutor,
    ReplicaDriver,
    ReplicaExecutor,
)
from dltmw.runtime.roles.notary.cluster_intake import (
    ENTRY_FRAMING,
    HASH_BYTES,
    WRAP_BASE_BYTES,
    Group,
    Item,
    OwnWraps,
    SignedPart,
    groups_of,
    own_wraps_max,
)
from dltmw.runtime.roles.notary.cluster_open import open_request
from dltmw.runtime.roles.notary.single import Outcome, admit_in_chunks, stopped
from dltmw.runtime.waiters import Waiters
from dltmw.v1 import errors_pb2, identity_pb2, notarisation_pb2, replica_pb2

logger = logging.getLogger(__name__)
R = errors_pb2
# A non-full slot is cut at the primary's tick under load (`core/notary_cluster_cut.py`): 200 ms
# lets wraps gather into full slots (50 ms made ~35 % of the slots one-wrap ones, RESULTS.md
# 2026-12-03, branch ncl5); a quiet cluster proposes at once instead of waiting for it.
TICK_S = 0.2
SUBMIT_WAIT_S = 30.0
DECIDER_INBOX_MAX = 64  # decided batches waiting for the decider
# Decided batches one decider step takes (one spent-set transaction, one fsync): while a commit
# waits for its fsync the next batches queue, and the next step commits them together. The core
# layers a step's earlier decisions over the rows loaded before it (`_Layered`), so a batch sees
# what the batches before it in the same step spent. Bounded so one step's rows stay small.
DECIDER_BATCH_MAX = 8
WRAP_BYTES_MAX = 96 * 1024  # raw client requests per wrapped PBFT request
STAMP_SKEW_NS = 2_000_000_000  # a stamp may lead a backup's clock by this much
STAMP_AGE_NS = 60_000_000_000  # ... and lag it by this much (queueing, view changes)
DECIDED_RETAIN = 1024  # decided batches in the records: state transfer, de-duplication
DECIDED_KEPT = 4  # ... of which in memory (two windows; older: read back from the records)


def cluster_config(n: int) -> PbftConfig:
    """Protocol parameters of a notary cluster (ticks of TICK_S).

    Sizes are chosen so every PBFT message fits a 4 MiB gRPC message: certificates carry whole
    batches, so a new-view message holds up to 2f+1 view changes, each with the prepared
    pre-prepares of the whole window (window = 2 x checkpoint_interval batches of
    batch_size_max wraps of at most WRAP_BYTES_MAX): 2 x 4 x 96 KiB x (3 + 1) = 3 MiB.

    Two slots of four wraps rather than four slots of two (the same 8 wraps in flight, the
    same bound above): the members' own wraps (`own_wraps_max`) fill one window, so a shorter
    window means fuller slots, and a member's cost is mostly per slot (~9 replica messages,
    their signatures and gRPC writes, one record append and one spent-set commit each); a
    checkpoint every slot costs less than the slots it saves (benchmarks/RESULTS.md,
    2026-12-03, branch ncl3). Every member must use the same values.
    """
    return PbftConfig(
        n=n,
        checkpoint_interval=1,
        batch_size_max=4,
        request_bytes_max=WRAP_BYTES_MAX + 1024,
        view_change_timeout_ticks=10,  # 2 s of TICK_S
        request_timeout_ticks=10,  # 2 s
        retransmit_ticks=3,  # 0.6 s
        probe_ticks=5,  # 1 s
        transfer_batches_max=4,
        decided_retain=DECIDED_RETAIN,
        decided_kept=DECIDED_KEPT,
    )


class ClusterNotaryRole:
    """Notary-cluster replica of one node; served by the same NotaryServicer as the single
    notary (it has the `identity`, `membership` and `notarise` that `rpc.notary.Notarising`
    asks for)."""

    def __init__(
        self,
        ctx: NodeContext,
        cluster_id: str,
        members: Sequence[tuple[str, bytes]],
        store: ClusterNotaryStore,
        records_path: Path,
        membership: Membership,
        pool: ThreadPoolExecutor,
        queue_max: int,
    ) -> None:
        ids = [node_id for node_id, _ in members]
        if ctx.node_id not in ids:
            raise InvariantViolation(
                f"{ctx.node_id} is not a member of notary cluster {cluster_id}"
            )
        self.ctx = ctx
        self.cluster_id = cluster_id
        self.identity = NotaryIdentity(cluster_id, ctx.signer.identity_bytes, validating=False)
        self.membership = membership
        self.store = self.cluster_store = store
        self.records_path = records_path
        self.records: RecordStore | None = None
        self.identities = [identity for _, identity in members]
        self.member_orgs = frozenset(org_of(identity) for identity in self.identities)
        self.me = ids.index(ctx.node_id)
        self.config = cluster_config(len(ids))
        self.own_wraps = OwnWraps(
            own_wraps_max(self.config),
            self._signed_here,
            self._decide,
            lambda: to_ns(utc_now()),
            WRAP_BYTES_MAX,
            owner=ctx.tasks,
        )
        self.links = {
            i: ReplicaLink(ctx, cluster_id, ids[i]) for i in range(len(ids)) if i != self.me
        }
        self.pool = pool
        self.waiters: Waiters[Token, Answers] = Waiters()
        self.attesting = Attesting(
            lambda answered, ordered: ctx.metrics.observe_attested(cluster_id, answered, ordered)
        )
        self.replica: Replica | None = None
        self._replica_driver: ReplicaDriver | None = None
        self.decider: DeciderDriver | None = None  # built at start, once `applied` is read
        self._inbox_max = max(64, queue_max)
        self.stale_dropped = 0

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool:
        """Does `signature` by member `replica` verify over `data`?"""
        if not 0 <= replica < len(self.identities):
            return False
        try:
            self.membership.verify(self.identities[replica], data, signature, utc_now())
        except IdentityError:
            return False
        return True

    @property
    def current_view(self) -> int:
        """The replica's view (the servicer refuses messages of older views)."""
        return self.replica.view if self.replica is not None else 0

    async def start(self) -> None:
        """Open the stores, restore the replica, re-apply what the spent-set missed, run."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.store.open)
        store = self.cluster_store
        self.records = await RecordStore.open(
            self.records_path, synchronous=store.synchronous, retry=self.ctx.storage_retry
        )
        saved: list[Record] = await self.records.load()
        sign, n = self.ctx.signer.sign, self.config.n

        def request_ok(request: bytes) -> bool:
            return unwrap(request, n) is not None

        if saved:
            replica = Replica.restore(
                self.config, self.me, sign, self.verify, saved, request_ok=request_ok
            )
        else:
            replica = Replica(self.config, self.me, sign, self.verify, request_ok=request_ok)
        self.replica = replica
        applied = await loop.run_in_executor(store.executor, store.applied)
        decider = self.decider = DeciderDriver(
            f"notary-decider-{self.cluster_id}",
            ClusterDecider(sign, applied),
            DecisionExecutor(self),
            self.ctx.tasks,
            inbox_max=DECIDER_INBOX_MAX,
            batch_max=DECIDER_BATCH_MAX,  # one sqlite transaction per step
            on_failure=self._failed,
            metrics=self.ctx.metrics,
        )
        await decider.start()
        decided = {
            r.batch.sequence: tuple(r.batch.requests)
            for r in saved
            if isinstance(r, DecidedRecord) and r.batch.sequence > applied
        }
        del saved
        for seq in unapplied(decided, applied):
            await decider.put(DecidedBatch(seq, decided[seq]))
        for link in self.links.values():
            link.start()
        self._replica_driver = Driver(
            f"notary-{self.cluster_id}",
            NagleCut(replica),  # when a non-full slot leaves: `core/notary_cluster_cut.py`
            ReplicaExecutor(self),
            self.ctx.tasks,
            inbox_max=self._inbox_max,
            tick_s=TICK_S,
            on_failure=self._failed,
            metrics=self.ctx.metrics,
        )
        await self._replica_driver.start()

    async def stop(self) -> None:
        """Stop both drivers (each finishes its step) and the links, refuse waiters, close the
        stores (idempotent)."""
        replica, decider = self._replica_driver, self.decider
        if replica is None or decider is None:
            return
        await replica.stop()
        await decider.stop()
        self._replica_driver = self.decider = None
        for link in self.links.values():
            await link.stop()
        self.waiters.fail_all(stopped("notary is stopping"))
        await self.own_wraps.close()
        if self.records is not None:
            await self.records.close()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    def _failed(self, _: BaseException) -> None:
        self.waiters.fail_all(stopped("the notary has stopped"))

    @property
    def running(self) -> bool:
        """Both drivers run."""
        replica, decider = self._replica_driver, self.decider
        return replica is not None and decider is not None and replica.running and decider.running

    async def notarise(
        self,
        requests: Sequence[notarisation_pb2.NotarisationRequest],
        tls_org: str | None,
        batch: identity_pb2.Signature | None = None,
        ordered_elsewhere: bool = False,
    ) -> list[Outcome]:
        """Admit `requests` (each signed, or all by the requester `batch` signature), order the
        admitted ones, answer once decided here (in order). `ordered_elsewhere`: another member
        orders them; wait for their decisions here first (`cluster_attest.py`)."""
        if not self.running:
            raise stopped("the notary is not running")
        now = utc_now()
        signed: SignedPart | None = None
        if batch is not None:
            hashes = tuple(request_batch.payload_hash(r.payload) for r in requests)
            if len(hashes) * HASH_BYTES > WRAP_BYTES_MAX // 2:
                limit = WRAP_BYTES_MAX // 2 // HASH_BYTES
                error = ClientError(
                    R.ERROR_REASON_INVALID_FIELD,
                    f"a batch-signed message to a notary cluster holds at most {limit} requests",
                )
                return [error] * len(requests)
            signed = SignedPart(batch, hashes)
        pairs = await admit_in_chunks(
            self.pool, requests, self.identity, self.membership, now, tls_org, batch
        )
        admitted: list[Admitted] = [a for _, chunk in pairs for a in chunk]
        if ordered_elsewhere:
            admitted = await self.attesting.await_decisions(
                admitted, self._signed_here, ATTEST_WAIT_S
            )
        return await self._order(requests, admitted, signed)

    async def _order(
        self,
        requests: Sequence[notarisation_pb2.NotarisationRequest],
        admitted: Sequence[Admitted],
        signed_part: SignedPart | None = None,
    ) -> list[Outcome]:
        """Answer tx_ids already signed here from the store (their answer can never change);
        order the other admitted requests in wraps of at most WRAP_BYTES_MAX (with the
        requester batch signature and the batch's payload hashes counted in, when signed), a
        few at a time (`cluster_intake`)."""
        out: list[Outcome] = list(admitted)  # type: ignore[arg-type]  # asks are replaced below
        tx_ids = [a.tx_id for a in admitted if isinstance(a, NotarisationAsk)]
        signed = await self._signed_here(tx_ids) if tx_ids else {}
        base = WRAP_BASE_BYTES + (0 if signed_part is None else signed_part.overhead)
        items: list[Item] = []
        for i, (request, item) in enumerate(zip(requests, admitted, strict=True)):
            if not isinstance(item, NotarisationAsk):
                continue
            if item.tx_id in signed:
                out[i] = signed_decision(item.tx_id, signed[item.tx_id])
                continue
            raw = request.SerializeToString()
            if base + len(raw) + ENTRY_FRAMING > WRAP_BYTES_MAX:
                out[i] = ClientError(
                    R.ERROR_REASON_INVALID_FIELD, f"request exceeds {WRAP_BYTES_MAX} bytes"
                )
                continue
            items.append(Item(i, item.tx_id, raw))
        groups = groups_of(items, base, WRAP_BYTES_MAX)
        decided = await asyncio.gather(
            *(self.own_wraps.order(Group(tuple(g), signed_part), SUBMIT_WAIT_S) for g in groups)
        )
        for group, decisions in zip(groups, decided, strict=True):
            for entry, decision in zip(group, decisions, strict=True):
                out[entry.position] = decision
        return out

    async def _signed_here(self, tx_ids: list[str]) -> dict[str, bytes]:
        """The stored signatures of those of `tx_ids` notarised here already."""
        store = self.cluster_store
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(store.executor, store.signatures_of, tx_ids)

    async def _decide(self, parts: Sequence[Part], stamp_ns: int) -> Sequence[Outcome]:
        """Order one wrap of `parts` and wait for its decisions here, one per request in part
        order (the caller bounds the wait)."""
        wrapped = wrap_parts(parts, stamp_ns, self.me)
        rid = request_id(wrapped)
        future = self.waiters.add(rid)
        try:
            self._driver().submit(ClientRequest(wrapped))
            return await asyncio.shield(future)
        finally:
            self.waiters.discard(rid, future)

    def offer(self, messages: list[Envelope], signatures: list[replica_pb2.BlockSignature]) -> None:
        """Queue verified peer messages for the replica (all or nothing); a pre-prepare carrying
        a stamp that is not fresh by our clock is dropped here (see module docstring)."""
        if signatures:
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, "a notary cluster has no blocks")
        local_ns = to_ns(utc_now())
        fresh = [e for e in messages if not self._stale(e, local_ns)]
        self.stale_dropped += len(messages) - len(fresh)
        self._driver().submit_all(fresh)

    @property
    def replica_driver(self) -> ReplicaDriver | None:
        """The replica's driver while it runs."""
        return self._replica_driver

    def _driver(self) -> ReplicaDriver:
        if self._replica_driver is None:
            raise stopped("the notary is not running")
        return self._replica_driver

    def _stale(self, envelope: Envelope, local_ns: int) -> bool:
        """A pre-prepare or forwarded-requests message carrying a stamp that is not fresh here.
        Forwarded ones too: else a faulty member could make every honest primary propose a
        wrap that honest backups refuse, and stall the cluster with view change after view
        change."""
        message = replica_pb2.ReplicaMessage.FromString(envelope.payload)  # servicer parsed it
        kind = message.WhichOneof("body")
        if kind == "pre_prepare":
            requests = message.pre_prepare.requests
        elif kind == "forwarded":
            requests = message.forwarded.requests
        else:
            return False
        for request in requests:
            wrapped = unwrap(request, self.config.n)
            if wrapped is None:
                return False  # the core refuses the batch itself
            if not stamp_fresh(wrapped.stamp_ns, local_ns, STAMP_SKEW_NS, STAMP_AGE_NS):
                return True
        return False

    def open_all(self, requests: Sequence[bytes]) -> list[Unpacked]:
        """Re-admit a decided batch's requests at their stamps (on the verify pool)."""
        n = self.config.n
        return [open_request(r, n, self.identity, self.membership) for r in requests]


def build_cluster_role(
    ctx: NodeContext,
    netmap: NetworkMap,
    data_dir: Path,
    synchronous: str,
    pool: ThreadPoolExecutor,
    queue_max: int,
) -> ClusterNotaryRole | None:
    """The cluster role of this node if the (trusted) network map makes it a cluster member."""
    for cluster_id, members in sorted(netmap.clusters.items()):
        if ctx.node_id in members:
            store = ClusterNotaryStore(
                data_dir / "notary.sqlite", ctx.signer.sign, synchronous, retry=ctx.storage_retry
            )
            return ClusterNotaryRole(
                ctx,
                cluster_id,
                [(m, netmap.identity_of(m)) for m in members],
                store,
                data_dir / "notary-pbft.sqlite",
                netmap.membership(),
                pool,
                queue_max,
            )
    return None
