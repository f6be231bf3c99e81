"""Queued delivery: pushing owed private payloads until each recipient node stored them.

Send on a channel that requires agreements (ALL_RECIPIENTS, the default, or a policy expression)
pushes at once; for a recipient whose push failed for a transient reason (the node is down) it
records one outbox row (`ledger/private_outbox.py`) durably and answers with that node named as
pending, and this task pushes the row again with exponential backoff per node until the node
acknowledges; then the row is deleted. After a restart the task reads the table again. The pattern
is the vault's durable finality (`runtime/roles/vault/outbox.py`).

A recipient that returns executes the missed transactions in block order: its private executor
waits for a payload the ledger says it is a recipient of (`executor.py`), so the late payload
is executed exactly where it belongs, before anything after it.

The task is the node's (`TaskOwner.forever`): a transient fault of the store is retried; one
that is not (StorageUnavailable after the store's own retries, a bug) stops the node loudly —
health NOT_SERVING — never a log line and carry on. The retry schedule and the task are
`aio/outbox_retry.py`'s, shared with the vault's durable finality.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from google.protobuf.message import DecodeError

from dltmw.aio.outbox_retry import PAGE_S, OutboxTask, RetrySchedule, loop_now
from dltmw.core.errors import DltmwError, PeerError
from dltmw.ledger.private_outbox import Delivery
from dltmw.ledger.private_store import PrivateStore
from dltmw.runtime.context import NodeContext
from dltmw.runtime.faults import is_transient
from dltmw.v1 import private_payload_pb2

logger = logging.getLogger(__name__)
BATCH = 256  # rows read per pass; passes page through the whole outbox
FIRST_DELAY_S = 1.0  # a node first seen here: an add_recipients push may still be on its way
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
    """Retries the owed deliveries of one private channel in the background (the schedule and
    the task are `aio/outbox_retry.py`'s, shared with the vault's durable finality)."""

    def __init__(self, channel: Owner) -> None:
        self._channel = channel
        self.schedule: RetrySchedule[str] = RetrySchedule(  # by recipient node
            first_delay_s=FIRST_DELAY_S,
            backoff_min_s=BACKOFF_MIN_S,
            backoff_max_s=BACKOFF_MAX_S,
            tracked_max=TRACKED_MAX,
        )
        name = f"redeliver-{channel.channel_id}"
        self._task = OutboxTask(name, self._pass, is_transient, BACKOFF_MAX_S)
        self._cursor: Delivery = (b"", "")

    def start(self) -> None:
        """Start the retry task (it resumes whatever the outbox holds)."""
        self._task.start(self._channel.ctx.tasks)

    async def stop(self) -> None:
        """Stop the retry task (idempotent); rows stay for the next start."""
        await self._task.stop()

    def wake(self) -> None:
        """Look at the outbox now (a Send left deliveries behind)."""
        self._task.wake()

    async def _pass(self) -> float:
        """Push every due node's owed payloads once; how long to wait before the next pass."""
        store = self._channel.store
        first_page = self._cursor == (b"", "")
        rows = await store.owed(self._cursor, BATCH)
        self._cursor = rows[-1] if len(rows) == BATCH else (b"", "")
        now = loop_now()
        by_node: dict[str, list[bytes]] = {}
        for digest, node in rows:
            by_node.setdefault(node, []).append(digest)
        self.schedule.keep_only(by_node)
        for node, hashes in sorted(by_node.items()):
            failures = self.schedule.due(node, now)
            if failures is not None:
                await self._deliver(node, hashes, failures)
        if self._cursor != (b"", ""):
            return PAGE_S  # more pages to look at
        if first_page and not rows:  # nothing owed (not just past the last page)
            self.schedule.clear()
        return self.schedule.wait_s(loop_now(), IDLE_S)

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
            self.schedule.failed(node, failures, loop_now())
            level = logging.WARNING if isinstance(err, PeerError) else logging.INFO
            logger.log(level, "delivery of %d payload(s) to %s failed: %s", len(items), node, err)
            await store.delivered(gone)
            return
        await store.delivered([(h, node) for h, _ in items] + gone)
        self.schedule.done(node)
        logger.info("delivered %d queued payload(s) to %s", len(items), node)
