"""The notary role: admits requests on worker threads, decides them in batches, durably.

Admission (`core/notary.admit`: parse, signature, tx_id) is stateless and CPU-bound; it runs on
the node's verify pool in chunks (cryptography releases the GIL, so both cores verify). Admitted
requests then queue (bounded: a full queue is OVERLOADED) for ONE decider task that drains the
queue into a batch, and hands it to the store thread, which decides in order, commits, and only
then lets the replies go (`ledger/notary_store.py`). Concurrent callers thus share one sqlite
transaction per batch, which is what makes thousands of notarisations per second possible.

Test hook: when the environment variable `DLTMW_TEST_NOTARY_EXIT_AFTER_COMMIT` is "1" at start
(read once), the process exits right after the first durable commit that signed something and
before any reply leaves — the crash window that idempotent re-notarisation must survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from dltmw.aio.clock import utc_now
from dltmw.aio.pool import capturing, chunks, map_chunked
from dltmw.core.errors import ClientError, DltmwError, TransientError
from dltmw.core.handlers.notary import Ask, Decision
from dltmw.core.identity import Membership
from dltmw.core.notary import NotarisationAsk, NotaryIdentity, admit
from dltmw.core.utxo.build import org_of
from dltmw.core.utxo.model import to_ns
from dltmw.ledger.notary_store import NotaryStore
from dltmw.runtime.context import NodeContext
from dltmw.v1 import errors_pb2, notarisation_pb2

logger = logging.getLogger(__name__)
R = errors_pb2
EXIT_HOOK_ENV = "DLTMW_TEST_NOTARY_EXIT_AFTER_COMMIT"
ADMIT_CHUNK = 100
BATCH_MAX = 4000
Outcome = Decision | DltmwError


@dataclass(frozen=True)
class _Queued:
    """Admitted requests of one chunk and the future of their decisions (one per ask)."""

    asks: list[NotarisationAsk]
    future: asyncio.Future[list[Decision]]


@functools.lru_cache(maxsize=1024)
def _org(identity: bytes) -> str:
    """Organisation of a (verified) requester identity; cached, requesters repeat."""
    return org_of(identity)


def _admit_one(
    request: notarisation_pb2.NotarisationRequest,
    identity: NotaryIdentity,
    membership: Membership,
    now: datetime,
    tls_org: str | None,
) -> NotarisationAsk:
    ask = admit(request, identity, membership, now)
    if tls_org is not None and _org(ask.requester) != tls_org:
        raise ClientError(
            R.ERROR_REASON_TLS_IDENTITY_MISMATCH,
            "the requester's organisation differs from the TLS client certificate's",
        )
    return ask


Admitted = NotarisationAsk | DltmwError


async def admit_in_chunks(
    pool: ThreadPoolExecutor,
    requests: Sequence[notarisation_pb2.NotarisationRequest],
    identity: NotaryIdentity,
    membership: Membership,
    now: datetime,
    tls_org: str | None,
) -> list[
    tuple[Sequence[notarisation_pb2.NotarisationRequest], list[NotarisationAsk | DltmwError]]
]:
    """Admit `requests` in chunks of ADMIT_CHUNK on `pool` (`aio/pool.map_chunked`); returns
    each chunk with its admitted asks or errors, in order. Shared by the single notary and the
    notary cluster."""
    one = functools.partial(
        _admit_one, identity=identity, membership=membership, now=now, tls_org=tls_org
    )
    admitted = await map_chunked(pool, capturing(one, DltmwError), requests, ADMIT_CHUNK)
    pieces = chunks(admitted, ADMIT_CHUNK)
    return [(c, list(a)) for c, a in zip(chunks(requests, ADMIT_CHUNK), pieces, strict=True)]


class NotaryRole:
    """Single notary of one node."""

    def __init__(
        self,
        ctx: NodeContext,
        store: NotaryStore,
        membership: Membership,
        pool: ThreadPoolExecutor,
        validating: bool,
        queue_max: int,
    ) -> None:
        self.identity = NotaryIdentity(ctx.node_id, ctx.signer.identity_bytes, validating)
        self.membership = membership
        self.store = store
        self._pool = pool
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue(
            maxsize=max(1, queue_max // ADMIT_CHUNK)
        )
        self._tasks = ctx.tasks
        self._task: asyncio.Task[None] | None = None
        self._failed = False

    @staticmethod
    def exit_hook_enabled() -> bool:
        """The test hook's setting (read once, when the role is built)."""
        return os.environ.get(EXIT_HOOK_ENV) == "1"

    async def start(self) -> None:
        """Open the store and start the decider."""
        await asyncio.get_running_loop().run_in_executor(None, self.store.open)
        self._task = self._tasks.forever("notary-decider", self._decide_forever, restart=False)

    async def stop(self) -> None:
        """Stop deciding, refuse what is queued, close the store (idempotent)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._fail_queued(TransientError(R.ERROR_REASON_SHUTTING_DOWN, "notary is stopping"))
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    async def notarise(
        self, requests: Sequence[notarisation_pb2.NotarisationRequest], tls_org: str | None
    ) -> list[Outcome]:
        """Admit and decide `requests`; one outcome per request, in order."""
        if self._task is None or self._failed:
            raise TransientError(R.ERROR_REASON_SHUTTING_DOWN, "the notary is not running")
        pairs = await admit_in_chunks(
            self._pool, requests, self.identity, self.membership, utc_now(), tls_org
        )
        admitted = [a for _, a in pairs]
        futures = [self._enqueue(chunk) for chunk in admitted]
        out: list[Outcome] = []
        for chunk, future in zip(admitted, futures, strict=True):
            decisions = iter(await future if isinstance(future, asyncio.Future) else ())
            for item in chunk:
                if isinstance(item, DltmwError):
                    out.append(item)
                elif isinstance(future, DltmwError):
                    out.append(future)
                else:
                    out.append(next(decisions))
        return out

    def _enqueue(
        self, chunk: list[NotarisationAsk | DltmwError]
    ) -> asyncio.Future[list[Decision]] | DltmwError:
        """Queue a chunk's admitted asks for the decider (one queue entry per chunk, to keep
        per-request asyncio work off the hot path); OVERLOADED if the queue is full."""
        future: asyncio.Future[list[Decision]] = asyncio.get_running_loop().create_future()
        asks = [a for a in chunk if isinstance(a, NotarisationAsk)]
        if not asks:
            future.set_result([])
            return future
        try:
            self._queue.put_nowait(_Queued(asks, future))
        except asyncio.QueueFull:
            return TransientError(R.ERROR_REASON_OVERLOADED, "notary queue is full")
        return future

    async def _decide_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].asks)
            while size < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1].asks)
            now_ns = to_ns(utc_now())
            asks = [Ask(a, now_ns, n) for n, q in enumerate(batch) for a in q.asks]
            try:
                ready = await loop.run_in_executor(self.store.executor, self.store.decide, asks)
            except Exception:
                # A failed commit (storage unavailable after the store's retries, or the
                # spent-set's primary key catching a double spend) is fatal for this notary:
                # nobody was answered, nothing more is decided, and the node stops (the task
                # owner logs the traceback); after a restart it decides from what is durable.
                self._failed = True
                err = TransientError(R.ERROR_REASON_SHUTTING_DOWN, "the notary has stopped")
                for q in batch:
                    if not q.future.done():
                        q.future.set_exception(err)
                self._fail_queued(err)
                raise
            decided: list[list[Decision]] = [[] for _ in batch]
            for token, decision in ready.replies:
                if not isinstance(token, int):
                    raise TypeError("notary reply token must be the chunk's position")
                decided[token].append(decision)
            for q, decisions in zip(batch, decided, strict=True):
                if not q.future.done():
                    q.future.set_result(decisions)

    def _fail_queued(self, error: DltmwError) -> None:
        while not self._queue.empty():
            queued = self._queue.get_nowait()
            if not queued.future.done():
                queued.future.set_exception(error)
