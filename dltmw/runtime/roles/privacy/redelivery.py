"""Queued delivery: pushing owed private payloads until each recipient node stored them.

Send on a channel with an agreement policy expression records, with the payloads, one outbox
row per recipient node (`ledger/private_outbox.py`) and pushes at once; a row whose push failed
for a transient reason (the node is down) stays, Send answers with that node named as pending,
and this task pushes the row again with exponential backoff per node until the node
acknowledges; then the row is deleted. After a restart the task reads the table again. The
pattern is the vault's durable finality (`runtime/roles/vault/outbox.py`).

A recipient that returns executes the missed transactions in block order: its private executor
waits for a payload the ledger says it is a recipient of (`executor.py`), so the late payload
is executed exactly where it belongs, before anything after it.

The task is the node's (`TaskOwner.forever`): a transient fault of the store is retried; one
that is not (StorageUnavailable after the store's own retries, a bug) stops the node loudly —
health NOT_SERVING — never a log line and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from google.protobuf.message import DecodeError

from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.errors import DltmwError, PeerError
from dltmw.ledger.private_outbox import Delivery
from dltmw.ledger.private_store import PrivateStore
from dltmw.runtime.context import NodeContext
from dltmw.runtime.faults import is_transient
from dltmw.v1 import private_payload_pb2

logger = logging.getLogger(__name__)
BATCH = 256  # rows read per pass; passes page through the whole outbox
FIRST_DELAY_S = 1.0  # a node first seen here: the Send that queued it may still be pushing
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
IDLE_S = 30.0  # wait when nothing is owed (a Send that leaves work wakes the task)
TRACKED_MAX = 4096  # nodes with backoff state kept in memory


class Owner(Protocol):
    """What the task needs of its private channel (declared here, so that the channel may own
    the task without the two modules importing each other)."""

    @property
    def ctx(self) -> NodeContext:
        """The node (its task owner)."""
        ...

    @property
    def channel_id(self) -> str:
        """The channel id."""
        ...

    @property
    def store(self) -> PrivateStore:
        """The private store (outbox rows and payloads)."""
        ...

    async def push_payloads(
        self, node_id: str, items: Sequence[tuple[bytes, private_payload_pb2.EncryptedPayload]]
    ) -> int:
        """Push (hash, payload) pairs to one node; raises DltmwError on failure."""
        ...


class Redelivery:
    """Retries the owed deliveries of one private channel in the background."""

    def __init__(self, channel: Owner) -> None:
        self._channel = channel
        self._next: dict[str, tuple[float, int]] = {}  # node -> (due, failures)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cursor: Delivery = (b"", "")

    def start(self) -> None:
        """Start the retry task (it resumes whatever the outbox holds)."""
        if self._task is None:
            name = f"redeliver-{self._channel.channel_id}"
            self._task = self._channel.ctx.tasks.forever(name, self._run)

    async def stop(self) -> None:
        """Stop the retry task (idempotent); rows stay for the next start."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def wake(self) -> None:
        """Look at the outbox now (a Send left deliveries behind)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                wait = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                logger.warning("redelivery pass failed (%s); next in %.0f s", exc, BACKOFF_MAX_S)
                wait = BACKOFF_MAX_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _pass(self) -> float:
        """Push every due node's owed payloads once; how long to wait before the next pass."""
        store = self._channel.store
        rows = await store.owed(self._cursor, BATCH)
        self._cursor = rows[-1] if len(rows) == BATCH else (b"", "")
        now = _now()
        by_node: dict[str, list[bytes]] = {}
        for digest, node in rows:
            by_node.setdefault(node, []).append(digest)
        if len(self._next) > TRACKED_MAX:
            self._next = {n: v for n, v in self._next.items() if n in by_node}
        for node, hashes in sorted(by_node.items()):
            if node not in self._next:
                self._next[node] = (now + FIRST_DELAY_S, 0)
                continue
            due, failures = self._next[node]
            if due <= now:
                await self._deliver(node, hashes, failures)
        if self._cursor != (b"", ""):
            return 0.05  # more pages to look at
        if not rows:
            self._next.clear()
            return IDLE_S
        soonest = min((due for due, _ in self._next.values()), default=now + IDLE_S)
        return max(0.05, min(IDLE_S, soonest - _now()))

    async def _deliver(self, node: str, hashes: list[bytes], failures: int) -> None:
        """Push `hashes` to `node`; on acknowledgement their rows go, else the node backs off."""
        store = self._channel.store
        held = await store.held(hashes)
        gone = [(h, node) for h in hashes if h not in held]  # purged since: nothing owed
        items = []
        for digest in hashes:  # in hash order (the outbox's), not the dict's
            raw = held.get(digest)
            if raw is None:
                continue
            try:
                items.append((digest, private_payload_pb2.EncryptedPayload.FromString(raw)))
            except DecodeError:
                gone.append((digest, node))
                logger.error("owed payload %s is unreadable here: not pushed", digest.hex())
        try:
            if items:
                await self._channel.push_payloads(node, items)
        except DltmwError as err:
            delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**failures)
            self._next[node] = (_now() + delay, failures + 1)
            level = logging.WARNING if isinstance(err, PeerError) else logging.INFO
            logger.log(level, "delivery of %d payload(s) to %s failed: %s", len(items), node, err)
            await store.delivered(gone)
            return
        await store.delivered([(h, node) for h, _ in items] + gone)
        self._next.pop(node, None)
        logger.info("delivered %d queued payload(s) to %s", len(items), node)


def _now() -> float:
    """The loop's clock, not the OS's: virtual in the simulator, which must not be steered by the
    wall clock (tests/sim/test_vloop.py)."""
    return asyncio.get_running_loop().time()
