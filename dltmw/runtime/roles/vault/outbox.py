"""Durable finality: delivering final transactions until every recipient acknowledged.

The initiator of a flow records the notarised transaction and one outbox row per recipient in
the SAME sqlite transaction (`VaultStore.record(..., deliveries)`); from then on the duty to
deliver survives any crash. The flow tries each recipient once right away; whatever is left is
retried here, per (tx_id, node), with exponential backoff, until the recipient's
RecordTransaction succeeds (recording is idempotent at the receiver, so a delivery repeated
after a lost acknowledgement changes nothing), and the row is deleted. After a restart the task
simply reads the outbox again. Sharing grants for the backchain live in memory, so every
attempt re-grants the ancestors before sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Protocol

from google.protobuf.message import Message

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
    """Retries pending deliveries of one vault node in the background."""

    def __init__(self, role: Sender) -> None:
        self._role = role
        self._next: dict[tuple[str, str], tuple[float, int]] = {}  # -> (due, failures)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cursor = ("", "")  # (tx_id, node) the next pass reads after

    def start(self, tasks: TaskOwner) -> None:
        """Start the retry task under `tasks` (it resumes whatever the outbox holds)."""
        if self._task is None:
            self._task = tasks.forever("vault-outbox", self._run)

    async def stop(self) -> None:
        """Stop the retry task (idempotent); rows stay for the next start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Look at the outbox now (a flow left deliveries behind)."""
        self._wake.set()

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
        self._next.pop((d.tx_id, d.node), None)

    async def _run(self) -> None:
        while True:
            try:
                wait = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A transient fault (a peer, a busy store) waits for the next pass; anything else
                # — StorageUnavailable once the store's retry budget is spent, a bug — stops the
                # node loudly through the task owner, never a log line and carry on.
                if not is_transient(exc):
                    raise
                logger.warning("outbox pass failed (%s); next pass in %.0f s", exc, BACKOFF_MAX_S)
                wait = BACKOFF_MAX_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _pass(self) -> float:
        """Try every due row once; returns how long to wait before the next pass."""
        rows = await self._role.store.outbox(BATCH, self._cursor)
        self._cursor = (rows[-1].tx_id, rows[-1].node) if len(rows) == BATCH else ("", "")
        now = time.monotonic()
        if len(self._next) > TRACKED_MAX:  # bounded memory; forgotten rows start over
            keys = {(d.tx_id, d.node) for d in rows}
            self._next = {k: v for k, v in self._next.items() if k in keys}
        for d in rows:
            key = (d.tx_id, d.node)
            if key not in self._next:
                self._next[key] = (now + FIRST_DELAY_S, 0)
                continue
            due, failures = self._next[key]
            if due > now:
                continue
            try:
                await self.deliver(d)
            except DltmwError as err:
                delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2**failures)
                self._next[key] = (time.monotonic() + delay, failures + 1)
                logger.info("delivery of %s to %s failed (%s)", d.tx_id[:12], d.node, err)
        if self._cursor != ("", ""):
            return 0.05  # more pages to look at
        if not self._next:  # every row seen was delivered (deliver() drops its entry)
            return IDLE_S
        soonest = min(due for due, _ in self._next.values())
        return max(0.05, min(IDLE_S, soonest - time.monotonic()))
