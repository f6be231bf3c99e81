"""Coalescing concurrent per-item calls into one batched call (group commit for anything).

Each awaited thread hop (a store's worker thread, `run_in_executor`) costs ~70-100 µs and each gRPC
message ~0.2 ms of CPU on this machine (`reference/limits.md`), about as much as a transaction's
signature checks. Code that handles one transaction at a time (a unary RPC, one Endorse) would pay
that per transaction. A `Coalescer` lets it keep its per-item shape: `await c.call(item)` queues the
item, and one background task hands everything queued at that moment (at most `batch_max`) to the
batch function in ONE call. Under load the items that arrive while a batch is being processed form
the next batch, so batches grow with the load and an idle caller waits for nothing but one loop
turn.

The batch function returns one result per item, in order; an item's result that is an Exception
is raised to that item's caller only. If the batch function itself raises, every caller of that
batch gets the exception.

Supervision (no silent failure): the background tasks are started through the node's `TaskOwner`
(`aio/tasks.py`) when the Coalescer is given one (`owner`), so a task that dies on anything but a
transient failure stops the node (health NOT_SERVING, `EXIT_FATAL`), as every long-lived task of a
node does. A Coalescer without an owner (a client's) logs such a death at once. Either way the
callers whose items were queued when the task died get its exception rather than waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from dltmw.aio.tasks import TaskOwner

In = TypeVar("In")
Out = TypeVar("Out")
logger = logging.getLogger(__name__)

BatchFn = Callable[[Sequence[In]], Awaitable[Sequence[Out | BaseException]]]


class Coalescer(Generic[In, Out]):
    """Per-item `call`, executed in batches by one background task.

    `max_concurrent` > 1 lets that many batches be in progress at once, for batch functions that
    wait on something slow (a remote endorser): a batch stuck until its timeout then does not
    hold up the items behind it.

    `hold_s` (with `max_concurrent` > 1) keeps the batching natural: while a batch younger than
    `hold_s` is in progress, items that arrive wait for it to end and then leave together as
    the next batch, as with `max_concurrent` 1. Without it, every item that arrives while a
    batch is in progress starts a batch of its own at once, so at moderate load, when arrivals
    are spread out, nearly every batch holds one item and pays the batch's fixed cost (for the
    gateway's Endorse: a ProcessProposals message each way, a simulation hop on each endorser).
    Only a batch older than `hold_s` — one stuck on a slow endorser — stops holding anyone: the
    items behind it start the next batch, up to `max_concurrent`. A lone item with nothing in
    progress still goes at once; `hold_s` only bounds how long a batch in progress holds the
    next one, it never delays a batch that could start.

    `size` with `size_max` bounds a batch by the sum of its items' sizes as well as by
    `batch_max` (e.g. bytes, when the batch becomes one message with a size limit); a batch
    always takes at least one item, so an item larger than `size_max` travels alone.
    """

    def __init__(
        self,
        batch_fn: BatchFn[In, Out],
        batch_max: int = 256,
        name: str = "",
        max_concurrent: int = 1,
        hold_s: float | None = None,
        size: Callable[[In], int] | None = None,
        size_max: int = 0,
        owner: TaskOwner | None = None,
    ) -> None:
        self._owner = owner
        self._batch_fn = batch_fn
        self._batch_max = batch_max
        self._name = name
        self._max_concurrent = max_concurrent
        self._hold_s = hold_s
        self._size = size
        self._size_max = size_max
        self._queue: list[tuple[In, asyncio.Future[Out]]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: dict[asyncio.Task[None], float] = {}  # batch in progress -> its start

    async def call(self, item: In) -> Out:
        """Process `item` in the next batch; returns its result or raises its exception."""
        return await self.submit(item)

    def submit(self, item: In) -> asyncio.Future[Out]:
        """Queue `item` for the next batch; the future of its result. For a caller with many
        items at once (a Transact request): no task or coroutine per item, and cancelling the
        future before its batch starts takes the item out, as for `call`."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = self._start(f"coalesce-{self._name}", self._run())
        assert self._wakeup is not None
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Stop the background task; callers still waiting get CancelledError."""
        tasks = [t for t in [self._task, *self._running] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()

    def _start(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A background task, under the owner's supervision if there is one (module docstring)."""
        if self._owner is not None:
            return self._owner.spawn(name, coro)
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_death)
        return task

    async def _run(self) -> None:
        try:
            await self._drain()
        except Exception as exc:  # the task dies: the waiting callers hear why, then the owner
            for _, future in self._queue:
                if not future.done():
                    future.set_exception(exc)
            self._queue.clear()
            raise

    async def _drain(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            await wakeup.wait()
            wakeup.clear()
            while self._queue:
                if self._max_concurrent == 1:
                    batch = self._take()
                    if batch:
                        await self._execute(batch)
                    continue
                await self._until_free()
                batch = self._take()
                if not batch:
                    continue
                task = self._start(f"coalesce-{self._name}-batch", self._execute(batch))
                self._running[task] = asyncio.get_running_loop().time()
                task.add_done_callback(self._finished)

    def _take(self) -> list[tuple[In, asyncio.Future[Out]]]:
        """The next batch off the queue: at most `batch_max` items and, with `size`, at most
        `size_max` in total (but at least one item). Items whose caller gave up (cancelled,
        e.g. its deadline passed) before the batch started are dropped, not processed."""
        queue, size = self._queue, self._size
        batch: list[tuple[In, asyncio.Future[Out]]] = []
        total = 0
        taken = 0  # entries of the queue's front looked at: the batch's and the dropped ones
        for entry in queue:  # only the front: a backlog is not walked once per batch
            if len(batch) == self._batch_max:
                break
            if entry[1].done():
                taken += 1
                continue
            if size is not None:
                total += size(entry[0])
                if total > self._size_max and batch:
                    break
            batch.append(entry)
            taken += 1
        del queue[:taken]
        return batch

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)

    async def _until_free(self) -> None:
        """Wait until the next batch may start: fewer than `max_concurrent` in progress and,
        with `hold_s`, none of them younger than `hold_s` (class docstring)."""
        loop = asyncio.get_running_loop()
        while self._running:
            timeout: float | None = None
            if len(self._running) < self._max_concurrent:
                if self._hold_s is None:
                    return
                youngest = max(self._running.values())
                timeout = youngest + self._hold_s - loop.time()
                if timeout <= 0:
                    return
            await asyncio.wait(self._running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)

    async def _execute(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            results = await self._batch_fn([item for item, _ in batch])
        except BaseException as exc:  # the batch as a whole failed: every caller hears of it
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:
                    future.cancel()
            if not isinstance(exc, Exception):
                raise  # cancelled (close): the callers were told, now stop
            return
        if len(results) != len(batch):
            err = RuntimeError(f"{self._name}: {len(results)} results for {len(batch)} items")
            results = [err] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the caller gave up (cancelled)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _report_death(task: asyncio.Task[None]) -> None:
    """Log an unowned Coalescer task's failure at once (not at garbage collection)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.critical("task %s failed", task.get_name(), exc_info=exc)


async def pipelined(
    requests: AsyncIterator[In], handle: Callable[[In], Coroutine[Any, Any, Out]], depth: int = 32
) -> AsyncIterator[Out]:
    """Serve a request stream with up to `depth` requests in progress at once; yield their
    results in request order (what a stream of "one response per request, in order" promises).

    Handling request k+1 while request k still waits on I/O keeps batches flowing through the
    coalescers behind `handle`; the bound keeps a fast writer from queueing without limit.
    """
    pending: asyncio.Queue[asyncio.Task[Out] | None] = asyncio.Queue(maxsize=depth)

    async def read() -> None:
        try:
            async for request in requests:
                await pending.put(asyncio.create_task(handle(request)))
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await pending.put(None)

    reader = asyncio.create_task(read(), name="pipelined-reader")
    try:
        while (task := await pending.get()) is not None:
            yield await task
        await reader  # re-raise what ended the request stream, if anything
    finally:
        reader.cancel()
        while not pending.empty():
            leftover = pending.get_nowait()
            if leftover is not None:
                leftover.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def bounded(
    future: asyncio.Future[Out], timeout_s: float, on_timeout: Callable[[], BaseException]
) -> Out:
    """Await `future`, failing it with `on_timeout()` after `timeout_s`.

    `asyncio.wait_for` wraps the awaitable in a task and a second future on every call, which
    shows in profiles when it runs once per transaction; one timer handle does the same here.
    The future is failed (not cancelled) on timeout, so whoever resolves it later is ignored.
    The error is only built when it happens (a grpc AioRpcError is costly to make).
    """
    loop = asyncio.get_running_loop()

    def expire() -> None:
        if not future.done():
            future.set_exception(on_timeout())

    handle = loop.call_later(timeout_s, expire)
    try:
        return await future
    finally:
        handle.cancel()


async def settled(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Return once every one of `futures` is settled, whatever its outcome (one waiter for a
    batch of per-item futures, instead of a coroutine awaiting each). Awaited one by one: the
    waiter wakes once, when the first pending one settles, and finds the others of the same
    batch settled too (`asyncio.wait` costs a callback per future and a second loop turn to
    wake). If the waiter is cancelled, so are the futures still pending: their items are
    withdrawn, as a cancelled `Coalescer.call`'s is."""
    try:
        for future in futures:
            if future.done():
                continue
            try:
                await future
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the waiter itself is cancelled (not just this future)
            except Exception:  # (its outcome is for whoever holds the future to read)
                pass
    except BaseException:
        for future in futures:
            future.cancel()
        raise
