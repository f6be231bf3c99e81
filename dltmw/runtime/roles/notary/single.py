"""The notary role: admits requests on worker threads, decides them in batches, durably.

Admission (`core/notary.admit`: parse, signature, tx_id) is stateless and CPU-bound; it runs on
the node's verify pool in chunks (cryptography releases the GIL, so both cores verify). Admitted
chunks then queue in the driver's bounded inbox (full: OVERLOADED) for the `SingleNotary` core.
Each driver step takes every chunk queued (group commit), loads the spent rows they touch, steps
the core — on the store's thread, so signing stays off the event loop — commits what it spent in
one sqlite transaction (`ledger/notary_store.py`) and only then answers the callers. Concurrent
callers thus share one sqlite transaction per batch, which is what makes thousands of
notarisations per second possible.

Test hook: when the environment variable `DLTMW_TEST_NOTARY_EXIT_AFTER_COMMIT` is "1" at start
(read once), the process exits right after the first durable commit that signed something and
before any reply leaves — the crash window that idempotent re-notarisation must survive.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from dltmw.aio.clock import utc_now
from dltmw.aio.pool import capturing, chunks, map_chunked
from dltmw.core import request_batch
from dltmw.core.effects import Token
from dltmw.core.errors import ClientError, DltmwError, TransientError
from dltmw.core.handlers.notary import Ask, Decide, Decision, SingleNotary, Spent
from dltmw.core.identity import Membership
from dltmw.core.notary import NotarisationAsk, NotaryIdentity, admit
from dltmw.core.utxo.build import org_of
from dltmw.core.utxo.constraints import BUILTIN_CODE, ContractCode
from dltmw.core.utxo.model import to_ns
from dltmw.ledger.notary_store import NotaryStore
from dltmw.runtime.context import NodeContext
from dltmw.runtime.driver import Driver
from dltmw.runtime.metrics import NodeMetrics
from dltmw.runtime.waiters import Waiters
from dltmw.v1 import errors_pb2, identity_pb2, notarisation_pb2

logger = logging.getLogger(__name__)
R = errors_pb2
EXIT_HOOK_ENV = "DLTMW_TEST_NOTARY_EXIT_AFTER_COMMIT"
ADMIT_CHUNK = 100
BATCH_MAX = 4000
Outcome = Decision | DltmwError
A = TypeVar("A")
T = TypeVar("T")


@dataclass(frozen=True)
class Chunk:
    """Admitted requests of one chunk, answered together under `token`."""

    asks: tuple[NotarisationAsk, ...]
    token: int


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
    batch_signer: bytes | None = None,
) -> NotarisationAsk:
    ask = admit(request, identity, membership, now, batch_signer)
    if tls_org is not None and _org(ask.requester) != tls_org:
        raise ClientError(
            R.ERROR_REASON_TLS_IDENTITY_MISMATCH,
            "the requester's organisation differs from the TLS client certificate's",
        )
    return ask


Admitted = NotarisationAsk | DltmwError
BatchCheck = tuple[
    identity_pb2.Signature,
    Sequence[notarisation_pb2.NotarisationRequest],
    Membership,
    datetime,
]


def _check_batch(args: BatchCheck) -> bytes:
    """Verify a requester batch signature over the requests' payloads (on the pool)."""
    batch, requests, membership, now = args
    hashes = [request_batch.payload_hash(r.payload) for r in requests]
    return request_batch.check(batch, hashes, membership, now)


async def admit_in_chunks(
    pool: ThreadPoolExecutor,
    requests: Sequence[notarisation_pb2.NotarisationRequest],
    identity: NotaryIdentity,
    membership: Membership,
    now: datetime,
    tls_org: str | None,
    batch: identity_pb2.Signature | None = None,
) -> list[
    tuple[Sequence[notarisation_pb2.NotarisationRequest], list[NotarisationAsk | DltmwError]]
]:
    """Admit `requests` in chunks of ADMIT_CHUNK on `pool` (`aio/pool.map_chunked`); returns
    each chunk with its admitted asks or errors, in order. Shared by the single notary and the
    notary cluster. With a requester `batch` signature it is verified first, once, on the pool
    (`core/request_batch.check`); if it fails every request is refused with its error."""
    signer: bytes | None = None
    if batch is not None:
        checked = await asyncio.get_running_loop().run_in_executor(
            pool, capturing(_check_batch, DltmwError), (batch, requests, membership, now)
        )
        if isinstance(checked, DltmwError):
            return [(c, [checked] * len(c)) for c in chunks(requests, ADMIT_CHUNK)]
        signer = checked
    one = functools.partial(
        _admit_one,
        identity=identity,
        membership=membership,
        now=now,
        tls_org=tls_org,
        batch_signer=signer,
    )
    admitted = await map_chunked(pool, capturing(one, DltmwError), requests, ADMIT_CHUNK)
    pieces = chunks(admitted, ADMIT_CHUNK)
    return [(c, list(a)) for c, a in zip(chunks(requests, ADMIT_CHUNK), pieces, strict=True)]


class NotaryExecutor:
    """Loads the spent rows a step touches, commits what it spent, answers chunks."""

    def __init__(
        self, store: NotaryStore, waiters: Waiters[Token, list[Decision]], metrics: NodeMetrics
    ) -> None:
        self._store = store
        self._waiters = waiters
        self._metrics = metrics

    async def load(self, inputs: Sequence[Chunk]) -> Sequence[Decide]:
        now_ns = to_ns(utc_now())
        asks = tuple(Ask(a, now_ns, chunk.token) for chunk in inputs for a in chunk.asks)
        rows = await self._on_store(self._store.rows_for, [a.ask for a in asks])
        return [Decide(asks, rows)]

    async def apply(self, decided: Sequence[Spent]) -> None:
        for spent in decided:
            await self._on_store(self._store.record, spent)

    async def persist(self, records: Sequence[None]) -> None:
        """The single notary keeps no log of its own."""

    async def send(self, messages: Sequence[tuple[int, None]]) -> None:
        """A single notary has no group."""

    async def reply(self, replies: Sequence[tuple[Token, Decision]]) -> None:
        by_chunk: dict[Token, list[Decision]] = {}
        for token, decision in replies:
            by_chunk.setdefault(token, []).append(decision)
        self._metrics.observe_decisions("single", (d for _, d in replies))
        for token, decisions in by_chunk.items():
            self._waiters.resolve(token, decisions)

    async def _on_store(self, fn: Callable[[A], T], arg: A) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._store.executor, fn, arg)


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
        code: ContractCode = BUILTIN_CODE,
    ) -> None:
        self.identity = NotaryIdentity(ctx.node_id, ctx.signer.identity_bytes, validating, code)
        self.membership = membership
        self.store = store
        self._pool = pool
        self._chunks = itertools.count()
        self._waiters: Waiters[Token, list[Decision]] = Waiters()
        self._started = False
        self._driver: Driver[Chunk, Decide, None, Spent, None, Decision] = Driver(
            "notary",
            SingleNotary(ctx.signer.sign),
            NotaryExecutor(store, self._waiters, ctx.metrics),
            ctx.tasks,
            inbox_max=max(1, queue_max // ADMIT_CHUNK),
            batch_max=BATCH_MAX // ADMIT_CHUNK,
            step_in=store.executor,
            on_failure=lambda _: self._waiters.fail_all(stopped("the notary has stopped")),
            metrics=ctx.metrics,
        )

    @staticmethod
    def exit_hook_enabled() -> bool:
        """The test hook's setting (read once, when the role is built)."""
        return os.environ.get(EXIT_HOOK_ENV) == "1"

    async def start(self) -> None:
        """Open the store and start the driver."""
        await asyncio.get_running_loop().run_in_executor(None, self.store.open)
        self._started = True
        await self._driver.start()

    async def stop(self) -> None:
        """Stop the driver (its step finishes), refuse who waits, close the store (idempotent)."""
        if not self._started:
            return
        self._started = False
        await self._driver.stop()
        self._waiters.fail_all(stopped("notary is stopping"))
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    async def notarise(
        self,
        requests: Sequence[notarisation_pb2.NotarisationRequest],
        tls_org: str | None,
        batch: identity_pb2.Signature | None = None,
        ordered_elsewhere: bool = False,
    ) -> list[Outcome]:
        """Admit and decide `requests` (signed each, or together by `batch`); one outcome per
        request, in order. `ordered_elsewhere` means nothing to a single notary."""
        if not self._driver.running:
            raise stopped("the notary is not running")
        pairs = await admit_in_chunks(
            self._pool, requests, self.identity, self.membership, utc_now(), tls_org, batch
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
        """Queue a chunk's admitted asks for the driver (one inbox entry per chunk, to keep
        per-request asyncio work off the hot path); OVERLOADED if the inbox is full."""
        asks = tuple(a for a in chunk if isinstance(a, NotarisationAsk))
        token = next(self._chunks)
        future = self._waiters.add(token)
        if not asks:
            self._waiters.resolve(token, [])
            return future
        try:
            self._driver.submit(Chunk(asks, token))
        except DltmwError as exc:
            self._waiters.discard(token, future)
            return exc
        return future


def stopped(message: str) -> TransientError:
    """The refusal of a caller the notary cannot answer (stopping, or stopped after a fault)."""
    return TransientError(R.ERROR_REASON_SHUTTING_DOWN, message)
