"""Durable finality: delivering final transactions until every recipient acknowledged.

The initiator of a flow records the notarised transaction and one outbox row per recipient in
the SAME sqlite transaction (`VaultStore.record(..., deliveries)`); from then on the duty to
deliver survives any crash. The flow tries each recipient once right away; whatever is left is
retried here, per (tx_id, node), with exponential backoff, until the recipient's
RecordTransaction succeeds (recording is idempotent at the receiver, so a delivery repeated
after a lost acknowledgement changes nothing), and the row is deleted. After a restart the task
simply reads the outbox again. Sharing grants for the backchain live in memory, so every
attempt re-grants the ancestors before sending. The retry schedule and the task are
`aio/outbox_retry.py`'s, shared with private queued delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from google.protobuf.message import Message

from dltmw.aio.outbox_retry import PAGE_S, OutboxTask, RetrySchedule, loop_now
from dltmw.aio.tasks import TaskOwner
from dltmw.core.errors import DltmwError
from dltmw.core.utxo.verify import read_signed
from dltmw.ledger.vault_store import Delivery, VaultStore
from dltmw.net.netmap import NetworkMap
from dltmw.runtime.faults import is_transient
from dltmw.runtime.roles.vault.backchain import dependencies
from dltmw.v1 import flow_service_pb2 as F

logger = logging.getLogger(__name__)
BATCH = 64  # rows read per pass; passes page through the whole outbox
TRACKED_MAX = 4096  # backoff entries kept in memory
FIRST_DELAY_S = 1.0  # a row first seen by the task: the flow may still be delivering it
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
IDLE_S = 30.0  # wait when nothing is due (a flow wakes the task when it leaves work)


class Sender(Protocol):
    """What the outbox needs of its vault role (declared here, so that the role may own an
    outbox without the two modules importing each other)."""

    @property
    def store(self) -> VaultStore:
        """The vault's store (outbox rows live there)."""
        ...

    @property
    def netmap(self) -> NetworkMap:
        """The network map (recipients' identities)."""
        ...

    async def share(self, to: bytes, tx_ids: Iterable[str]) -> None:
        """Let party `to` fetch `tx_ids` and their ancestors."""

    def signed_message(self, **fields: object) -> tuple[bytes, bytes]:
        """A FlowMessage from this node, serialised and signed."""
        ...

    async def call(self, node_id: str, method: str, request: Message) -> Message:
        """FlowService.`method` on another node (failures as DltmwError)."""
        ...


class Outbox:
    """Retries pending deliveries of one vault node in the background (the schedule and the
    task are `aio/outbox_retry.py`'s, shared with private queued delivery)."""

    def __init__(self, role: Sender) -> None:
        self._role = role
        self.schedule: RetrySchedule[tuple[str, str]] = RetrySchedule(  # (tx_id, node)
            first_delay_s=FIRST_DELAY_S,
            backoff_min_s=BACKOFF_MIN_S,
            backoff_max_s=BACKOFF_MAX_S,
            tracked_max=TRACKED_MAX,
        )
        self._task = OutboxTask("vault-outbox", self._pass, is_transient, BACKOFF_MAX_S)
        self._cursor = ("", "")  # (tx_id, node) the next pass reads after

    def start(self, tasks: TaskOwner) -> None:
        """Start the retry task under `tasks` (it resumes whatever the outbox holds)."""
        self._task.start(tasks)

    async def stop(self) -> None:
        """Stop the retry task (idempotent); rows stay for the next start."""
        await self._task.stop()

    def wake(self) -> None:
        """Look at the outbox now (a flow left deliveries behind)."""
        self._task.wake()

    async def deliver(self, d: Delivery) -> None:
        """Send `d` once; on acknowledgement delete its row. Raises DltmwError on failure."""
        role = self._role
        stx = read_signed(d.stx)
        await role.share(role.netmap.identity_of(d.node), dependencies(stx.wire))
        raw, sig = role.signed_message(signed_transaction=stx.raw, observer=d.observer)
        await role.call(
            d.node, "RecordTransaction", F.RecordTransactionRequest(message=raw, signature=sig)
        )
        await role.store.delivered(d.tx_id, d.node)
        self.schedule.done((d.tx_id, d.node))

    async def _pass(self) -> float:
        """Try every due row once; returns how long to wait before the next pass."""
        first_page = self._cursor == ("", "")
        rows = await self._role.store.outbox(BATCH, self._cursor)
        self._cursor = (rows[-1].tx_id, rows[-1].node) if len(rows) == BATCH else ("", "")
        now = loop_now()
        self.schedule.keep_only((d.tx_id, d.node) for d in rows)
        for d in rows:
            key = (d.tx_id, d.node)
            failures = self.schedule.due(key, now)
            if failures is None:
                continue
            try:
                await self.deliver(d)
            except DltmwError as err:
                self.schedule.failed(key, failures, loop_now())
                logger.info("delivery of %s to %s failed (%s)", d.tx_id[:12], d.node, err)
        if self._cursor != ("", ""):
            return PAGE_S  # more pages to look at
        if first_page and not rows:  # the outbox is empty (not just past its last page)
            self.schedule.clear()
        return self.schedule.wait_s(loop_now(), IDLE_S)
