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

A delivery that can no longer be made is given up, never pushed for ever (branch priv57): a row
whose node is no longer a member of the channel config in force (or whose key there is not one
the payload was sealed for: it could not open its box) turns REMOVED, and a row queued longer
ago than the node's `[private] delivery_expiry_s` (default 7 days; 0: never) turns EXPIRED;
a row of a payload sent to a privacy group whose record here no longer lists the node's
organisation, for a transaction not executed here, turns REMOVED too (`group_delivery.py`,
branch priv58).
Either is logged once, at WARNING, when it happens, and the row stays as the sender's record
(ValidatePrivateState's `delivery_state`, `dltmw private pending`). What Tessera and Corda do:
Tessera fails the send when a push does not go through (no queue: the sender resends, the
recipient can ask for a resend), Corda's messaging keeps retrying a peer until it returns and its
flow hospital keeps a flow that cannot finish until an operator acts; a sender that owes a
payload for ever to a party that left is neither, so here it stops, says so, and the operator
(or the client's resume/abandon) settles the transaction.

The task is the node's (`TaskOwner.forever`): a transient fault of the store is retried; one
that is not (StorageUnavailable after the store's own retries, a bug) stops the node loudly —
health NOT_SERVING — never a log line and carry on. The retry schedule and the task are
`aio/outbox_retry.py`'s, shared with the vault's durable finality.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Protocol

from google.protobuf.message import DecodeError

from dltmw.aio.clock import utc_now
from dltmw.aio.outbox_retry import PAGE_S, OutboxTask, RetrySchedule, loop_now
from dltmw.core.errors import DltmwError, PeerError
from dltmw.ledger.private_outbox import ABANDONED, EXPIRED, OWED, REMOVED, Delivery, Owed
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
CLAIMS_MAX = 4096  # "not held" answers waiting for the next pass (more: the next ask repeats it)
# A given-up state as the wire's DeliveryState names it, without the prefix (the metadata
# `state` of PRIVATE_DELIVERY_GIVEN_UP, `agreement.py`).
GIVEN_UP_NAMES = {EXPIRED: "EXPIRED", REMOVED: "RECIPIENT_REMOVED", ABANDONED: "ABANDONED"}


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

    def may_owe(self, raw: bytes, node_id: str) -> bool:
        """May this node owe `node_id` the stored payload `raw` (it sealed it, the node is one
        of its recipients, the channel queues deliveries)?"""
        ...

    def members(self) -> frozenset[str]:
        """Node ids of the channel config in force that run a privacy manager."""
        ...

    def still_recipient(self, raw: bytes, node_id: str) -> bool:
        """Is `node_id`, as the config in force names it, a recipient of payload `raw`?"""
        ...

    @property
    def delivery_expiry_s(self) -> float:
        """How long a delivery is retried before it is given up (0: for ever)."""
        ...

    async def left_group(self, node_id: str, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """The hashes among (hash, stored payload) `items` owed to `node_id` whose delivery is
        given up because its organisation left the privacy group the payload was sent to
        (`group_delivery.py`)."""
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
        self._round: set[str] = set()  # nodes seen so far in this pass over the table
        # (payload hash, node) a recipient said it does not hold (`not_held`)
        self._claims: set[Delivery] = set()
        self.given_up: dict[int, int] = {}  # outbox state -> deliveries given up since start
        # Is any outbox row given up? None: not read yet since the start (`given_up_of`).
        self._any_given_up: bool | None = None
        # held by a pass from its read of the rows to its last push's outcome, and by `abandon`:
        # a payload abandoned is never pushed after AbandonDelivery answered
        self._passing = asyncio.Lock()

    def start(self) -> None:
        """Start the retry task (it resumes whatever the outbox holds)."""
        self._task.start(self._channel.ctx.tasks)

    async def stop(self) -> None:
        """Stop the retry task (idempotent); rows stay for the next start."""
        await self._task.stop()

    def wake(self) -> None:
        """Look at the outbox now (a Send left deliveries behind)."""
        self._task.wake()

    def given_up_by_reason(self) -> dict[str, int]:
        """`given_up` named for the metrics (expired, recipient_removed)."""
        names = {EXPIRED: "expired", REMOVED: "recipient_removed"}
        return {names[state]: count for state, count in self.given_up.items()}

    def heard_from(self, node: str) -> None:
        """`node` answered a call (a collection's AgreeBatch, a Send's push): if its deliveries
        are backing off, they are due now (within BACKOFF_MIN_S) instead of at the end of a
        backoff of up to BACKOFF_MAX_S. Cheap when nothing is owed to it (a dict lookup)."""
        if self.schedule.hurry(node, loop_now(), BACKOFF_MIN_S):
            self.wake()

    def not_held(self, node: str, hashes: Sequence[bytes]) -> None:
        """`node` answered that it does not hold `hashes` (PAYLOAD_NOT_HELD): the next pass
        checks that this node owes them (`Owner.may_owe`) and queues them again, all in one
        store transaction, off the caller's path (a collection's batched ask). Bounded: past
        CLAIMS_MAX waiting, the rest is dropped — the next ask hears it again."""
        room = CLAIMS_MAX - len(self._claims)
        self._claims.update((h, node) for h in hashes[: max(0, room)])
        self.wake()

    async def given_up_of(self, digest: bytes) -> dict[str, int]:
        """node -> state (EXPIRED, REMOVED, ABANDONED) of each delivery of `digest` given up:
        a collection of its agreements is refused at once (`agreement.py`). While no row was
        ever given up (the common case) this reads nothing: one read of the table per start
        says so, and every give-up here sets it."""
        if self._any_given_up is None:
            found = await self._channel.store.any_given_up()
            if self._any_given_up is None:  # a give-up meanwhile already said True
                self._any_given_up = found
        if not self._any_given_up:
            return {}
        states = await self._channel.store.delivery_states(digest)
        return {node: state for node, state in states.items() if state != OWED}

    async def abandon(self, digest: bytes) -> list[str]:
        """Give up every delivery of `digest` still owed (ABANDONED); the nodes it was owed to.

        Waits for a pass under way: that pass read the row as owed and may be pushing it (a
        push to a node coming back can wait for its connection), so the row is turned only
        once that push has ended — delivered (the row is gone: nothing left to abandon) or
        not — and no later pass reads it as owed. Without the wait, a payload abandoned while
        its push was in flight still reached the recipient, and the acknowledgement deleted
        the ABANDONED row, so the sender's record of it went too."""
        store = self._channel.store
        async with self._passing:
            nodes = await store.pending_nodes(digest)
            if nodes:
                self._any_given_up = True  # before the write: a collection may not slip through
                await store.give_up([([(digest, n) for n in nodes], ABANDONED)])
        return nodes

    async def _pass(self) -> float:
        """Push every due node's owed payloads once; how long to wait before the next pass."""
        async with self._passing:
            return await self._pass_held()

    async def _pass_held(self) -> float:
        store = self._channel.store
        if self._claims:
            await self._owe_claimed()
        first_page = self._cursor == (b"", "")
        page = await store.owed(self._cursor, BATCH)
        self._cursor = page[-1][:2] if len(page) == BATCH else (b"", "")
        rows = await self._settle(page)
        now = loop_now()
        by_node: dict[str, list[bytes]] = {}
        for digest, node in rows:
            by_node.setdefault(node, []).append(digest)
        self.schedule.keep_only(by_node)
        self._round.update(by_node)
        for node, hashes in sorted(by_node.items()):
            failures = self.schedule.due(node, now)
            if failures is not None:
                await self._deliver(node, hashes, failures)
        if self._cursor != (b"", ""):
            return PAGE_S  # more pages to look at
        if first_page and not rows:  # nothing owed (not just past the last page)
            self.schedule.clear()
        else:
            self.schedule.retain(self._round)  # nodes whose rows all went since
        self._round = set()
        return self.schedule.wait_s(loop_now(), IDLE_S)

    async def _settle(self, page: Sequence[Owed]) -> list[Delivery]:
        """The rows of `page` still to push; those that cannot be delivered any more are given
        up (`give_up`: REMOVED, EXPIRED) and rows older than the `since` column stamped, in one
        store transaction, each group logged once at WARNING when it changes."""
        members = self._channel.members()
        wall = utc_now().timestamp()
        removed, expired, unstamped = give_up(page, members, wall, self._channel.delivery_expiry_s)
        if removed or expired or unstamped:
            if removed or expired:
                self._any_given_up = True
            groups = [(removed, REMOVED), (expired, EXPIRED)]
            changed = await self._channel.store.give_up(groups, unstamped, wall)
            for (rows, state), count in zip(groups, changed, strict=True):
                if count:
                    self._warn_given_up(rows, state)
        gone = set(removed) | set(expired)
        return [(h, n) for h, n, _ in page if (h, n) not in gone]

    def _warn_given_up(self, rows: Sequence[Delivery], state: int, why: str = "") -> None:
        """The one WARNING of deliveries given up, per node."""
        why = (
            why
            or {
                REMOVED: "is no longer a recipient in the channel config in force",
                EXPIRED: f"was not reached within delivery_expiry_s="
                f"{self._channel.delivery_expiry_s:.0f}s",
            }[state]
        )
        by_node: dict[str, list[bytes]] = {}
        for digest, node in rows:
            by_node.setdefault(node, []).append(digest)
        for node, hashes in sorted(by_node.items()):
            self.given_up[state] = self.given_up.get(state, 0) + len(hashes)
            logger.warning(
                "channel %s: %d queued payload(s) for %s given up, no longer pushed: %s %s"
                " (first: %s)",
                self._channel.channel_id,
                len(hashes),
                node,
                node,
                why,
                ", ".join(h.hex()[:16] for h in hashes[:4]),
            )

    async def _owe_claimed(self) -> None:
        """Queue again the deliveries recipients said they do not hold (`not_held`): one read
        of the payloads, one store transaction for the rows, and the nodes are due at once
        (they answered). A store fault puts the claims back for the next pass."""
        claims, self._claims = sorted(self._claims), set()
        store = self._channel.store
        try:
            held = await store.held(sorted({h for h, _ in claims}))
            owed = [(h, n) for h, n in claims if h in held and self._channel.may_owe(held[h], n)]
            if owed:
                await store.store_payloads((), owed, utc_now().timestamp())
        except BaseException:
            room = CLAIMS_MAX - len(self._claims)  # claims heard meanwhile count too
            self._claims.update(claims[: max(0, room)])
            raise
        now = loop_now()
        for node in sorted({n for _, n in owed}):
            self.schedule.hurry(node, now, 0.0, add=True)
        for digest, node in owed:
            logger.info("%s does not hold payload %s: delivery queued again", node, digest.hex())

    async def _deliver(self, node: str, hashes: list[bytes], failures: int) -> None:
        """Push `hashes` to `node`; on acknowledgement their rows go, else the node backs off."""
        store = self._channel.store
        held = await store.held(hashes)
        gone = [(h, node) for h in hashes if h not in held]  # purged since: nothing owed
        items = []
        removed: list[Delivery] = []
        raws: dict[bytes, bytes] = {}
        for digest in hashes:  # in hash order (the outbox's), not the dict's
            raw = held.get(digest)
            if raw is None:
                continue
            if not self._channel.still_recipient(raw, node):  # its key changed: cannot open it
                removed.append((digest, node))
                continue
            try:
                items.append((digest, private_payload_pb2.EncryptedPayload.FromString(raw)))
                raws[digest] = raw
            except DecodeError:
                gone.append((digest, node))
                logger.error("owed payload %s is unreadable here: not pushed", digest.hex())
        left = set(await self._channel.left_group(node, list(raws.items()))) if raws else set()
        if left:  # its organisation left the payload's privacy group (`group_delivery.py`)
            items = [(h, p) for h, p in items if h not in left]
        if removed or left:
            self._any_given_up = True
            out = [(h, node) for h in sorted(left)]
            changed = await store.give_up([(removed, REMOVED), (out, REMOVED)])
            if changed[0]:
                self._warn_given_up(removed, REMOVED)
            if changed[1]:
                self._warn_given_up(out, REMOVED, "left the privacy group the payload was sent to")
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


def give_up(
    page: Sequence[Owed], members: Collection[str], now: float, expiry_s: float
) -> tuple[list[Delivery], list[Delivery], list[Delivery]]:
    """(removed, expired, unstamped) of a page of owed rows at wall-clock second `now`: rows for
    a node not among `members` (the channel config in force), rows queued more than `expiry_s`
    ago (0: none expire), rows without a queued time (stamped `now`, so they expire a full
    period later, never at once). Pure: the pass's decision, tested on its own."""
    removed = [(h, n) for h, n, _ in page if n not in members]
    expired = [
        (h, n)
        for h, n, since in page
        if n in members and expiry_s > 0 and since is not None and now - since > expiry_s
    ]
    unstamped = [(h, n) for h, n, since in page if since is None and n in members]
    return removed, expired, unstamped
