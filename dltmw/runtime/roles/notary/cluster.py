"""One replica of a notary cluster: PBFT-lite orders admitted requests, every replica decides.

A node whose id is a member of a `[[notary_clusters]]` entry of the network map runs this role
instead of the single notary; it serves the same NotaryService, for transactions naming the
cluster id as their notary, and answers with its OWN signature (a client gathers f+1 matching
answers from distinct members, see `client/notary_cluster.py` and `core/notary_cluster.py`).

Request path: admit the call's requests on the verify pool (bad input is refused here with its
specific status and changes nothing), wrap the admitted ones with this replica's clock reading
into one PBFT request, and wait until it is decided and applied HERE. Loop (the PBFT orderer's
shape): step client requests and peer messages, tick, then execute each Ready in order —
records appended durably (RecordStore), each decided batch re-admitted at its stamp and applied
to the spent-set in one sqlite transaction (ClusterNotaryStore), and only then are waiters
answered and messages sent. Backups drop pre-prepares whose stamps are not fresh by their own
clock (`stamp_fresh`). A restart restores the replica from its records and re-applies decided
batches the spent-set missed, so nothing acknowledged is lost and re-asking gets the same answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.message import DecodeError

from dltmw.aio.clock import utc_now
from dltmw.core.errors import ClientError, DltmwError, InvariantViolation, TransientError
from dltmw.core.handlers.notary import Decision
from dltmw.core.identity import IdentityError, Membership
from dltmw.core.notary import NotarisationAsk, NotaryIdentity, admit
from dltmw.core.notary_cluster import Unpacked, stamp_fresh, unapplied, unwrap, wrap
from dltmw.core.pbft import ClientRequest, Envelope, PbftConfig, PbftReady, Replica, request_id
from dltmw.core.pbft.types import Record, StableRecord
from dltmw.core.utxo.build import org_of
from dltmw.core.utxo.model import to_ns
from dltmw.ledger.cluster_notary_store import ClusterNotaryStore
from dltmw.ledger.pbft_store import RecordStore
from dltmw.net.netmap import NetworkMap
from dltmw.runtime.context import NodeContext
from dltmw.runtime.replica_link import ReplicaLink
from dltmw.runtime.roles.notary.single import Outcome, admit_in_chunks
from dltmw.v1 import errors_pb2, notarisation_pb2, replica_pb2

logger = logging.getLogger(__name__)
R = errors_pb2
TICK_S = 0.05
SUBMIT_WAIT_S = 30.0
STOP_WAIT_S = 10.0
STEP_BATCH_MAX = 1000
WRAP_BYTES_MAX = 96 * 1024  # raw client requests per wrapped PBFT request
STAMP_SKEW_NS = 2_000_000_000  # a stamp may lead a backup's clock by this much
STAMP_AGE_NS = 60_000_000_000  # ... and lag it by this much (queueing, view changes)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def cluster_config(n: int) -> PbftConfig:
    """Protocol parameters of a notary cluster (ticks of TICK_S).

    Sizes are chosen so every PBFT message fits a 4 MiB gRPC message: certificates carry whole
    batches, so a new-view message holds up to 2f+1 view changes, each with the prepared
    pre-prepares of the whole window (window = 2 x checkpoint_interval batches of
    batch_size_max wraps of at most WRAP_BYTES_MAX): 4 x 2 x 96 KiB x (3 + 1) = 3 MiB.
    """
    return PbftConfig(
        n=n,
        checkpoint_interval=2,
        batch_size_max=2,
        request_bytes_max=WRAP_BYTES_MAX + 1024,
        view_change_timeout_ticks=40,
        request_timeout_ticks=40,
        retransmit_ticks=10,
        probe_ticks=20,
        transfer_batches_max=4,
        decided_retain=1024,
    )


def _moment(stamp_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=stamp_ns // 1000)


def open_request(
    request: bytes, n: int, identity: NotaryIdentity, membership: Membership
) -> Unpacked:
    """Re-admit a decided wrapped request at its stamp: the same verdict on every replica."""
    wrapped = unwrap(request, n)
    if wrapped is None:  # PBFT's request_ok let only well-formed requests into a batch
        raise InvariantViolation("a decided notary-cluster request does not parse")
    now = _moment(wrapped.stamp_ns)
    items: list[NotarisationAsk | Decision] = []
    for raw in wrapped.requests:
        try:
            signed = notarisation_pb2.NotarisationRequest.FromString(raw)
            items.append(admit(signed, identity, membership, now))
        except DecodeError:
            items.append(Decision("", reason=R.ERROR_REASON_MALFORMED, message="does not parse"))
        except ClientError as exc:
            items.append(Decision("", reason=exc.reason, message=str(exc)))
        except (ValueError, OverflowError) as exc:
            # Values admission's arithmetic cannot take (e.g. a time window near 2^62 s). A
            # faulty primary can wrap any bytes and every replica re-admits the decided batch,
            # so this must be a refusal like any other, never an exception stopping them all.
            message = f"out of range: {type(exc).__name__}: {exc}"[:200]
            items.append(Decision("", reason=R.ERROR_REASON_INVALID_FIELD, message=message))
    return Unpacked(wrapped.stamp_ns, tuple(items))


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
        self.links = {
            i: ReplicaLink(ctx, cluster_id, ids[i]) for i in range(len(ids)) if i != self.me
        }
        self._pool = pool
        self._inbox: asyncio.Queue[object] = asyncio.Queue(maxsize=max(64, queue_max))
        self._waiters: dict[bytes, list[asyncio.Future[tuple[Decision, ...]]]] = {}
        self.replica: Replica | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed = False
        self._stopping = False
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
            self.replica = Replica.restore(
                self.config, self.me, sign, self.verify, saved, request_ok=request_ok
            )
        else:
            self.replica = Replica(self.config, self.me, sign, self.verify, request_ok=request_ok)
        applied = await loop.run_in_executor(store.executor, store.applied)
        decided = {s: tuple(b.requests) for s, b in self.replica.decided.items()}
        for seq in unapplied(decided, applied):
            await self._apply(seq, decided[seq])
        for link in self.links.values():
            link.start()
        await self._execute(self.replica.ready())
        name = f"notary-{self.cluster_id}"
        self._task = self.ctx.tasks.forever(name, self._drive_logged, restart=False)

    async def stop(self) -> None:
        """Stop the loop and links, fail waiters, close the stores (idempotent)."""
        task, self._task = self._task, None
        if task is None:
            return
        # Let the loop finish its current Ready: cancelling it inside a record-log commit would
        # leave the commit's outcome unknown to the store (and its rollback would fail).
        self._stopping = True
        with contextlib.suppress(Exception):  # a loop that failed was logged by _drive_logged
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_WAIT_S)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for link in self.links.values():
            await link.stop()
        self._fail_all(TransientError(R.ERROR_REASON_SHUTTING_DOWN, "notary is stopping"))
        if self.records is not None:
            await self.records.close()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    async def notarise(
        self, requests: Sequence[notarisation_pb2.NotarisationRequest], tls_org: str | None
    ) -> list[Outcome]:
        """Admit `requests`, order the admitted ones, answer once decided here (in order)."""
        if self._task is None or self._failed:
            raise TransientError(R.ERROR_REASON_SHUTTING_DOWN, "the notary is not running")
        now = utc_now()
        pairs = await admit_in_chunks(
            self._pool, requests, self.identity, self.membership, now, tls_org
        )
        results = await asyncio.gather(*(self._order(c, a, to_ns(now)) for c, a in pairs))
        return [outcome for chunk in results for outcome in chunk]

    async def _order(
        self,
        requests: Sequence[notarisation_pb2.NotarisationRequest],
        admitted: list[NotarisationAsk | DltmwError],
        stamp_ns: int,
    ) -> list[Outcome]:
        """Answer tx_ids already signed here from the store (their answer can never change);
        order the other admitted requests in wraps of at most WRAP_BYTES_MAX."""
        out: list[Outcome] = list(admitted)  # type: ignore[arg-type]  # asks are replaced below
        store = self.cluster_store
        tx_ids = [a.tx_id for a in admitted if isinstance(a, NotarisationAsk)]
        signed = await asyncio.get_running_loop().run_in_executor(
            store.executor, store.signatures_of, tx_ids
        )
        groups: list[list[tuple[int, bytes]]] = [[]]
        size = 0
        for i, (request, item) in enumerate(zip(requests, admitted, strict=True)):
            if not isinstance(item, NotarisationAsk):
                continue
            if item.tx_id in signed:
                out[i] = Decision(item.tx_id, signature=signed[item.tx_id])
                continue
            raw = request.SerializeToString()
            if len(raw) > WRAP_BYTES_MAX:
                out[i] = ClientError(
                    R.ERROR_REASON_INVALID_FIELD, f"request exceeds {WRAP_BYTES_MAX} bytes"
                )
                continue
            if size + len(raw) > WRAP_BYTES_MAX:
                groups.append([])
                size = 0
            groups[-1].append((i, raw))
            size += len(raw)
        decided = await asyncio.gather(
            *(self._submit([raw for _, raw in g], stamp_ns) for g in groups if g)
        )
        for group, decisions in zip([g for g in groups if g], decided, strict=True):
            for (i, _), decision in zip(group, decisions, strict=True):
                out[i] = decision
        return out

    async def _submit(self, raws: list[bytes], stamp_ns: int) -> Sequence[Outcome]:
        """Order one wrap and wait for its decisions here (or a transient error for each)."""
        wrapped = wrap(raws, stamp_ns, self.me)
        future: asyncio.Future[tuple[Decision, ...]] = asyncio.get_running_loop().create_future()
        try:
            self._inbox.put_nowait(ClientRequest(wrapped))
        except asyncio.QueueFull:
            return [
                TransientError(R.ERROR_REASON_OVERLOADED, "notary cluster queue is full")
            ] * len(raws)
        rid = request_id(wrapped)
        self._waiters.setdefault(rid, []).append(future)
        try:
            return await asyncio.wait_for(future, SUBMIT_WAIT_S)
        except TimeoutError:
            wait = TransientError(R.ERROR_REASON_WAIT_TIMEOUT, "not decided in time")
            return [wait] * len(raws)
        except DltmwError as exc:
            return [exc] * len(raws)
        finally:
            waiters = self._waiters.get(rid, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(rid, None)

    def offer(self, messages: list[Envelope], signatures: list[replica_pb2.BlockSignature]) -> None:
        """Queue verified peer messages for the loop (all or nothing); a pre-prepare carrying a
        stamp that is not fresh by our clock is dropped here (see module docstring)."""
        if signatures:
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, "a notary cluster has no blocks")
        if self._inbox.qsize() + len(messages) > self._inbox.maxsize:
            raise TransientError(R.ERROR_REASON_OVERLOADED, "replica inbox is full")
        local_ns = to_ns(utc_now())
        for envelope in messages:
            if self._stale(envelope, local_ns):
                self.stale_dropped += 1
                continue
            self._inbox.put_nowait(envelope)

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

    async def _drive_logged(self) -> None:
        """Run the loop; on failure refuse everything waiting (the task owner logs it and
        stops the node)."""
        try:
            await self._drive()
        except Exception:
            self._failed = True
            self._fail_all(TransientError(R.ERROR_REASON_SHUTTING_DOWN, "the notary has stopped"))
            raise

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + TICK_S
        replica = self.replica
        if replica is None:
            raise InvariantViolation("notary cluster loop started before the replica")
        while not self._stopping:
            try:
                first = await asyncio.wait_for(self._inbox.get(), max(0.0, next_tick - loop.time()))
            except TimeoutError:
                first = None
            if first is not None:
                replica.step(first)
                for _ in range(STEP_BATCH_MAX):
                    if self._inbox.empty():
                        break
                    replica.step(self._inbox.get_nowait())
            if loop.time() >= next_tick:
                replica.tick()
                next_tick = loop.time() + TICK_S
            await self._execute(replica.ready())

    async def _execute(self, ready: PbftReady) -> None:
        """Persist, apply decided batches (answering waiters), send, refuse — in that order."""
        if self.records is None:
            raise InvariantViolation("notary cluster record log is not open")
        await self.records.append(ready.persist)
        for decided in ready.decided:
            await self._apply(decided.sequence, decided.requests)
        stable = [r.sequence for r in ready.persist if isinstance(r, StableRecord)]
        if stable:
            await self.records.compact(stable[-1], stable[-1] - self.config.decided_retain + 1)
        for destination, envelope in ready.send:
            link = self.links.get(destination)
            if link is not None:
                link.send(envelope)
        for rejected in ready.replies:
            error = ClientError(R.ERROR_REASON_INVALID_FIELD, f"refused: {rejected.reason}")
            for waiter in self._waiters.pop(rejected.request_id, []):
                if not waiter.done():
                    waiter.set_exception(error)

    async def _apply(self, sequence: int, requests: Sequence[bytes]) -> None:
        loop = asyncio.get_running_loop()
        unpacked = await loop.run_in_executor(self._pool, self._open_all, requests)
        outcome = await loop.run_in_executor(
            self.cluster_store.executor, self.cluster_store.apply, sequence, unpacked
        )
        for request, decisions in zip(requests, outcome.decisions, strict=True):
            for waiter in self._waiters.pop(request_id(request), []):
                if not waiter.done():
                    waiter.set_result(decisions)

    def _open_all(self, requests: Sequence[bytes]) -> list[Unpacked]:
        n = self.config.n
        return [open_request(r, n, self.identity, self.membership) for r in requests]

    def _fail_all(self, error: DltmwError) -> None:
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)


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
