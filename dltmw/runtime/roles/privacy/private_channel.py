"""The privacy manager role of a node (Tessera style), one `PrivateChannel` per channel.

Send: the client's plaintext is sealed (`core/privacy/envelope.py`: fresh AES-256-GCM key, one box
per recipient), and the sealed payload waits in a bounded queue. A batcher takes every queued
payload at once (group commit), stores them in one sqlite transaction, pushes one signed
PushBatch per recipient node on that node's Push stream (`pusher.py`), and only when every
recipient acknowledged durable storage does Send return the payload hash. Persist, then send,
then reply. On every channel that requires agreements (ALL_RECIPIENTS, the default of `dltmw
init`, or a policy expression) a recipient that is down does not fail the Send: the deliveries
a push did not reach are recorded durably (`ledger/private_outbox.py`) before Send answers with
those nodes as pending, and `redelivery.py` pushes until each stored it. The invariant "a hash that
a client orders is always held by every recipient whose agreement it needs" holds on its own
there: a recipient agrees only on a payload it stored, so under ALL_RECIPIENTS a transaction
whose recipient is pending cannot be ordered VALID until the queue delivered and it agreed;
under an expression the executor of a returning recipient waits for the late payload.
Channels without agreements still fail the Send (their ledger does not name the recipients,
so a late payload could not be placed).

A payload sent for a transaction whose agreements the client asks in the same SendBatch
(`SendItem.collect_for_tx_id`) carries that tx_id on its Push (`PushBatch.agree_tx_ids`): the
recipient answers the push with its signed agreement (`Outgoing.answers`), so the collection
(`agreement.py`) needs no AgreeBatch round trip to it, and `Outgoing.stored` lets the sender's
own run start as soon as its store committed, while the push is still on its way.

Recipients are chosen from the signed channel config: the sending node, the peers of the named
organisations that have a privacy key, and the channel's auditors. Keys never come from requests.
The key wrap is the channel's (`ChannelConfig.private_key_wrap`): on a hybrid channel every box
is wrapped X25519 + ML-KEM-768 (`hybrid.py`) for the ML-KEM keys the config publishes, and Push
refuses a payload wrapped more weakly than the channel requires (no downgrade by a sender).

Push admission stores nothing unless the whole batch is right: signed by a peer node of the
channel (TLS certificate of its organisation), every payload's sender key is that node's
configured key, every claimed hash is SHA-256 of the ciphertext, this node is a recipient and its
own box opens. Plaintext never leaves the node except in a Receive reply to a client of the
node's own organisation; logs name payloads by hash only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from dltmw.aio.clock import utc_now
from dltmw.aio.entropy import token_bytes
from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError, DltmwError, TransientError
from dltmw.core.privacy.agreement_policy import requires_agreements
from dltmw.core.privacy.envelope import (
    PayloadError,
    PrivacyKey,
    add_recipients,
    check_algorithm,
    open_key,
    open_payload,
    payload_hash,
    recipients_of,
    seal,
)
from dltmw.core.privacy.kem import HYBRID, KNOWN_WRAPS, KemShare, effective_wrap, wrap_name
from dltmw.core.txcheck import parse
from dltmw.ledger.private_outbox import Delivery
from dltmw.ledger.private_purge import PurgeRecord
from dltmw.ledger.private_store import RESEND_CHUNK, NewPayload, PrivateStore
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.runtime.roles.privacy import group_delivery
from dltmw.runtime.roles.privacy.group_send import group_recipients
from dltmw.runtime.roles.privacy.hybrid import encapsulate_all
from dltmw.runtime.roles.privacy.prior_runs import PriorRuns
from dltmw.runtime.roles.privacy.pusher import Pusher
from dltmw.runtime.roles.privacy.redelivery import Redelivery
from dltmw.v1 import (
    config_pb2,
    errors_pb2,
    privacy_manager_service_pb2,
    private_agreement_pb2,
    private_payload_pb2,
)

logger = logging.getLogger(__name__)
P = privacy_manager_service_pb2
R = errors_pb2
EncryptedPayload = private_payload_pb2.EncryptedPayload
AgreeResult = private_agreement_pb2.AgreeResult
SEND_BATCH_MAX = 512
DELIVERY_EXPIRY_S = 7 * 24 * 3600.0  # `[private] delivery_expiry_s`'s default (config_file.py)
T = TypeVar("T")
PUSH_ATTEMPTS = 2
PUSH_PIPELINE = 4
Sent = tuple[bytes, int, tuple[str, ...]]  # (payload hash, boxes, recipients not reached yet)
Pushed = tuple[bytes, EncryptedPayload, str]  # (payload hash, payload, tx_id asked or "")


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


@dataclass
class Outgoing:
    """One payload being sent: stored here, then pushed to `nodes`. `stored` is set when this
    node's store committed it (never failed: a failure settles `done`); `done`, when every
    recipient acknowledged it (the nodes not reached: queued delivery) or the send failed;
    `answers`, by node id, each recipient's answer to the agreement asked on the Push for
    `tx_id` (filled before `done` is set; a node that answered none is absent)."""

    payload: EncryptedPayload
    payload_hash: bytes
    nodes: tuple[str, ...]
    tx_id: str = ""  # the transaction whose agreement the Push asks ("" for none)
    stored: asyncio.Future[None] = field(default_factory=_future)
    done: asyncio.Future[tuple[str, ...]] = field(default_factory=_future)
    answers: dict[str, AgreeResult] = field(default_factory=dict)


class PrivateChannel:
    """Payloads and private state of one channel, with the Send batcher."""

    def __init__(
        self,
        ctx: NodeContext,
        key: PrivacyKey,
        peer: PeerChannel,
        store: PrivateStore,
        pushers: dict[str, Pusher],
        delivery_expiry_s: float = DELIVERY_EXPIRY_S,
    ) -> None:
        self.ctx = ctx
        self.delivery_expiry_s = delivery_expiry_s  # `[private]`: queued delivery gives up
        self.key = key
        self.peer = peer
        self.store = store
        self._pushers = pushers
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue(maxsize=ctx.limits.queue_max)
        self._task: asyncio.Task[None] | None = None
        self._pushing = 0  # payloads stored, not yet acknowledged by every recipient
        self.redelivery: Redelivery | None = None  # queued delivery (`redelivery.py`)
        # this node's agreement runs, kept for the executor's commit (`prior_runs.py`)
        self.prior_runs = PriorRuns()
        # Every block below it executed here, its effects durable: the channel's
        # `PrivateExecutor.height`, wired by the manager (`left_group`); 0 until then.
        self.executed_height: Callable[[], int] = lambda: 0

    @property
    def view(self) -> ChannelView:
        """The channel's config view."""
        return self.peer.view

    @property
    def channel_id(self) -> str:
        """The channel id."""
        return self.peer.view.channel_id

    @property
    def pending(self) -> int:
        """Payloads sent here and not yet delivered to every recipient: queued, or stored and
        being pushed (read by the metrics)."""
        return self._queue.qsize() + self._pushing

    @property
    def given_up(self) -> dict[str, int]:
        """Deliveries the redelivery gave up since the start, by reason (read by the
        metrics: `dltmw_private_deliveries_given_up_total`)."""
        if self.redelivery is None:
            return {}
        return self.redelivery.given_up_by_reason()

    async def start(self) -> None:
        """Start the Send batcher and the redelivery of what is still owed."""
        name = f"send-{self.channel_id}"
        self._task = self.ctx.tasks.forever(name, self._batcher, restart=False)
        self.redelivery = Redelivery(self)
        self.redelivery.start()

    async def stop(self) -> None:
        """Stop the batcher (idempotent); queued sends fail as unavailable."""
        if self.redelivery is not None:
            await self.redelivery.stop()
        await cancel_and_wait(self._task)
        self._task = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.done.done():
                item.done.set_exception(
                    TransientError(R.ERROR_REASON_SHUTTING_DOWN, "privacy manager stopping")
                )

    # --- who is who -----------------------------------------------------------------------

    def peer_node(self, identity: bytes) -> config_pb2.NodeConfig | None:
        """The channel's peer entry signing with `identity`, if any."""
        return next((n for n in self.view.config.peers if n.identity == identity), None)

    def node_of_key(self, public_key: bytes) -> config_pb2.NodeConfig | None:
        """The channel's peer entry whose privacy key is `public_key`, if any."""
        return next((n for n in self.view.config.peers if n.privacy_public_key == public_key), None)

    def recipients(self, orgs: Sequence[str]) -> dict[str, bytes]:
        """node_id -> privacy key of every recipient other than this node."""
        members = self.view.membership.org_ids
        unknown = sorted(set(orgs) - members)
        if unknown:
            raise ClientError(
                R.ERROR_REASON_INVALID_FIELD, f"not members of {self.channel_id!r}: {unknown}"
            )
        auditors = set(self.view.config.privacy_auditors)
        chosen: dict[str, bytes] = {}
        for org in set(orgs):
            keyed = [n for n in self.view.config.peers if n.org_id == org and n.privacy_public_key]
            if not keyed:
                raise ClientError(
                    R.ERROR_REASON_INVALID_FIELD, f"organisation {org!r} runs no privacy manager"
                )
            chosen.update((n.node_id, n.privacy_public_key) for n in keyed)
        for n in self.view.config.peers:
            if n.node_id in auditors and n.privacy_public_key:
                chosen[n.node_id] = n.privacy_public_key
        chosen.pop(self.ctx.node_id, None)
        return chosen

    # --- Send -----------------------------------------------------------------------------

    @property
    def queued(self) -> bool:
        """Is delivery to a down recipient queued instead of failing the send? On every channel
        that requires agreements (module docstring): under ALL_RECIPIENTS nothing commits
        without the pending recipient's agreement, which it gives only once the queue delivered;
        under an expression its executor waits for the late payload. Not on a channel without
        agreements: its ledger does not say who the recipients are."""
        return requires_agreements(self.view.config)

    async def send(self, plaintext: bytes, orgs: Sequence[str]) -> Sent:
        """Seal, store, push to every recipient; (payload hash, number of boxes, node ids of
        the recipients not reached yet: their delivery is queued)."""
        return (await self.send_many([(plaintext, orgs)]))[0]

    async def send_many(self, items: Sequence[tuple[bytes, Sequence[str]]]) -> list[Sent]:
        """`send` for several payloads (each with its own fresh key), stored and pushed together."""
        return await self.settle(await self.submit([(p, orgs, "") for p, orgs in items]))

    async def submit(self, items: Sequence[tuple[bytes, Sequence[str], str]]) -> list[Outgoing]:
        """Seal each (plaintext, organisations, tx_id) and queue it for the batcher; the caller
        awaits `settle` (and may follow each item's `stored` and `answers`: `agreement.py`). A
        tx_id asks the recipients' agreements on the Push (only where the channel requires
        agreements: elsewhere nobody would use them)."""
        if self._queue.qsize() + len(items) > self._queue.maxsize:
            raise TransientError(R.ERROR_REASON_OVERLOADED, "privacy manager send queue full")
        asking = requires_agreements(self.view.config)
        chosen = [await group_recipients(self, plaintext, orgs) for plaintext, orgs, _ in items]
        outgoing = [self._seal(plaintext, orgs) for plaintext, orgs in chosen]
        for item, (_, _, tx_id) in zip(outgoing, items, strict=True):
            item.tx_id = tx_id if asking else ""
            self._queue.put_nowait(item)
        return outgoing

    @staticmethod
    async def settle(outgoing: Sequence[Outgoing]) -> list[Sent]:
        """Wait until every item is delivered (or raise the first failure)."""
        pending = await asyncio.gather(*(item.done for item in outgoing))
        return [
            (i.payload_hash, len(i.payload.recipient_boxes), nodes)
            for i, nodes in zip(outgoing, pending, strict=True)
        ]

    @property
    def key_wrap(self) -> int:
        """The channel's required key wrap (X25519 when the config names none)."""
        wrap = self.view.config.private_key_wrap
        if wrap not in KNOWN_WRAPS:
            raise ClientError(
                R.ERROR_REASON_UNSUPPORTED_ALGORITHM,
                f"channel {self.channel_id!r} requires {wrap_name(wrap)}, unknown to this node",
            )
        return effective_wrap(wrap)

    def kem_shares(self, keys: Sequence[bytes], wrap: int) -> dict[bytes, KemShare] | None:
        """Fresh ML-KEM shares for `keys` and this node when `wrap` is hybrid, else None; each
        recipient's ML-KEM key is the one the signed config publishes for its X25519 key."""
        if wrap != HYBRID:
            return None
        kem_keys: dict[bytes, bytes] = {}
        for key in set(keys) | {self.key.public_key}:
            node = self.node_of_key(key)
            if node is None or not node.privacy_kem_public_key:
                who = node.node_id if node is not None else key.hex()[:16]
                raise ClientError(
                    R.ERROR_REASON_INVALID_FIELD,
                    f"channel {self.channel_id!r} wraps hybrid but {who} publishes no ML-KEM key",
                )
            kem_keys[key] = node.privacy_kem_public_key
        return encapsulate_all(kem_keys)

    def _seal(self, plaintext: bytes, orgs: Sequence[str]) -> Outgoing:
        chosen = self.recipients(orgs)
        keys = sorted(set(chosen.values()))
        wrap = self.key_wrap
        payload = seal(
            plaintext,
            self.key,
            keys,
            token_bytes(32),
            token_bytes(12),
            [token_bytes(12) for _ in range(len(keys) + 1)],
            wrap,
            self.kem_shares(keys, wrap),
        )
        return Outgoing(payload, payload_hash(payload), tuple(sorted(chosen)))

    async def _batcher(self) -> None:
        """Group commit, then push: batch k+1 is stored while batch k is still being pushed
        (at most PUSH_PIPELINE batches in flight), so slow recipients do not serialise Sends."""
        slots = asyncio.Semaphore(PUSH_PIPELINE)
        pushing: set[asyncio.Task[None]] = set()
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < SEND_BATCH_MAX and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await slots.acquire()
                try:
                    await self._store(batch)
                except Exception as exc:
                    # The store retried transient faults for its whole budget already: what
                    # reaches here (StorageUnavailable, a bug) stops the node loudly (the task
                    # owner), after the callers heard of it — they must not wait forever.
                    self._fail(
                        batch,
                        TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, f"send failed: {exc}"),
                    )
                    raise
                for item in batch:
                    if not item.stored.done():
                        item.stored.set_result(None)
                task = asyncio.create_task(self._push_all(batch))
                pushing.add(task)
                task.add_done_callback(pushing.discard)
                task.add_done_callback(lambda _: slots.release())
        finally:
            for task in pushing:
                task.cancel()
            await asyncio.gather(*pushing, return_exceptions=True)

    @staticmethod
    def _fail(batch: list[Outgoing], error: Exception) -> None:
        for item in batch:
            if not item.done.done():
                item.done.set_exception(error)

    async def _store(self, batch: list[Outgoing]) -> None:
        """The payloads, in one transaction. The deliveries owed are recorded only for the
        recipients a push did not reach (`_queue_owed`): a Send whose recipients are all up
        writes no outbox row and deletes none (it costs what it did before queued delivery)."""
        await self.store.store_payloads(
            [
                NewPayload(
                    i.payload_hash, i.payload.SerializeToString(), tuple(recipients_of(i.payload))
                )
                for i in batch
            ]
        )

    async def _push_all(self, batch: list[Outgoing]) -> None:
        self._pushing += len(batch)
        try:
            await self._push_and_settle(batch)
        finally:  # cancelled (stopping) or failed unexpectedly: nobody waits forever
            self._pushing -= len(batch)
            self._fail(
                batch, TransientError(R.ERROR_REASON_SHUTTING_DOWN, "privacy manager stopping")
            )

    async def _push_and_settle(self, batch: list[Outgoing]) -> None:
        by_node: dict[str, list[Outgoing]] = {}
        for item in batch:
            for node_id in item.nodes:
                by_node.setdefault(node_id, []).append(item)
        nodes = sorted(by_node)
        results = await asyncio.gather(
            *(self._push(n, by_node[n]) for n in nodes), return_exceptions=True
        )
        failed: dict[int, BaseException] = {}
        pending: dict[int, list[str]] = {}
        for node_id, result in zip(nodes, results, strict=True):
            if not isinstance(result, BaseException):
                if self.redelivery is not None:  # it is up: what it is owed is due now
                    self.redelivery.heard_from(node_id)
                continue
            error = result
            if not isinstance(result, DltmwError):
                logger.error("push to %s failed: %r", node_id, result)
                error = TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, f"push to {node_id}")
            for item in by_node[node_id]:
                if self.queued and isinstance(error, TransientError):
                    pending.setdefault(id(item), []).append(node_id)
                else:
                    failed.setdefault(id(item), error)
        owed = [
            (item.payload_hash, node_id)
            for item in batch
            if id(item) not in failed
            for node_id in pending.get(id(item), [])
        ]
        if owed:
            try:
                await self._queue_owed(owed)
            except DltmwError as exc:  # not durable: the Send must not say "pending"
                logger.error("deliveries owed could not be recorded: %s", exc)
                for item in batch:
                    if id(item) in pending:
                        failed.setdefault(
                            id(item),
                            TransientError(
                                R.ERROR_REASON_PEER_UNAVAILABLE,
                                f"push to {', '.join(pending[id(item)])} failed and its"
                                f" delivery could not be queued: {exc}",
                            ),
                        )
        for item in batch:
            if item.done.done():
                continue
            cause = failed.get(id(item))
            if cause is None:
                item.done.set_result(tuple(sorted(pending.get(id(item), []))))
            else:
                item.done.set_exception(cause)

    def members(self) -> frozenset[str]:
        """Node ids of the channel config in force that run a privacy manager (a queued
        delivery to any other node is given up: `redelivery.py`)."""
        return frozenset(n.node_id for n in self.view.config.peers if n.privacy_public_key)

    def still_recipient(self, raw: bytes, node_id: str) -> bool:
        """Is `node_id`, as the config in force names it (its current key), a recipient of the
        payload `raw`? Not when it left the channel or its key changed: it could not open
        its box. An unreadable payload is not judged here (the push path refuses it)."""
        try:
            payload = EncryptedPayload.FromString(raw)
        except DecodeError:
            return True
        node = next((n for n in self.view.config.peers if n.node_id == node_id), None)
        return node is not None and node.privacy_public_key in recipients_of(payload)

    async def left_group(self, node_id: str, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """The hashes among (hash, stored payload) `items` owed to `node_id` that are given up
        because its organisation left the privacy group the payload was sent to, by this
        node's record of the group (`group_delivery.py`).

        Only while this node's private execution has caught up with its ledger: "not executed
        here" stands for "not committed" only then (review58: a transaction committed naming
        the node, not yet executed here, had its delivery given up, and the node's executor
        waited for the payload until a Recover). The executor's height (in memory: the stored
        cursor moves only on blocks with private effects) is read BEFORE the group reads and
        the ledger height AFTER them, so a block committed before the answer is either below
        the executed height (its record seen) or makes the ledger height pass it (nothing given
        up now; the next pass decides). Under a sustained private load execution may trail by
        a block at every pass: nothing is then given up by group until a lull, and the payload
        is pushed meanwhile (giving up is an economy, never needed for safety)."""
        executed = self.executed_height()
        left = await group_delivery.left_group(
            self.store, self.key, self.view.config, node_id, items
        )
        if left and executed < self.peer.ledger.height:
            return []
        return left

    def may_owe(self, raw: bytes, node_id: str) -> bool:
        """May this node owe `node_id` the stored payload `raw`? A recipient that answers it
        does not hold a payload this node sent (it lost its store and its recovery set the
        payload aside, or it was never pushed there) gets it queued again (`Redelivery.
        not_held`), so a collection waiting for its agreement can complete instead of waiting
        for a payload nobody will push. Only on a queued channel, and only for a payload whose
        sender is this node (Push accepts no other sender's payload from it) and one of whose
        recipients is that node."""
        if not self.queued:
            return False
        try:
            payload = EncryptedPayload.FromString(raw)
        except DecodeError:
            return False
        node = next((n for n in self.view.config.peers if n.node_id == node_id), None)
        return (
            payload.sender_public_key == self.key.public_key
            and node is not None
            and node.privacy_public_key in recipients_of(payload)
        )

    async def _queue_owed(self, owed: list[Delivery]) -> None:
        """Record the deliveries a push did not reach, durably, BEFORE the Send answers with
        them pending (a crash before that: the Send was never acknowledged, the client tries
        again); then wake the redelivery task, which deletes each row once its node stored the
        payload. Raises DltmwError when the store cannot record them (the Send then fails)."""
        await self.store.store_payloads((), owed, utc_now().timestamp())
        if self.redelivery is not None:
            self.redelivery.wake()

    async def _push(self, node_id: str, items: list[Outgoing]) -> int:
        """Push to one node, asking its agreement for the items with a tx_id; its answers go to
        each item's `answers` (none when it answered another number than asked: an older
        release answers none, and the collection then asks with AgreeBatch)."""
        pushes = [(i.payload_hash, i.payload, i.tx_id) for i in items]
        stored, at = 0, 0
        for chunk, response in await self._push_chunks(node_id, pushes):
            stored += response.stored
            asking = [item for item in items[at : at + len(chunk)] if item.tx_id]
            at += len(chunk)
            answers = response.agreements
            if len(answers) != len(asking):
                if answers:  # a faulty recipient: its answers are not paired with a guess
                    logger.warning(
                        "%s answered %d agreements for %d asked on its push: ignored",
                        node_id,
                        len(answers),
                        len(asking),
                    )
                continue
            for item, answer in zip(asking, answers, strict=True):
                item.answers[node_id] = answer
        return stored

    async def push_payloads(
        self, node_id: str, items: Sequence[tuple[bytes, EncryptedPayload]]
    ) -> int:
        """Push (hash, payload) pairs to one node in PushBatches that stay under the message
        size limit; the number stored there, or raises (PeerError refused, TransientError)."""
        done = await self._push_chunks(node_id, [(h, p, "") for h, p in items])
        return sum(response.stored for _, response in done)

    async def _push_chunks(
        self, node_id: str, items: Sequence[Pushed]
    ) -> list[tuple[Sequence[Pushed], P.PushResponse]]:
        """`push_payloads` of (hash, payload, tx_id) triples: each chunk with its answer."""
        budget = self.ctx.limits.max_message_bytes // 2
        chunks = by_size(items, lambda i: i[1].ByteSize(), budget)
        # (chunks are consecutive, so `_push` pairs the items with them in order)
        responses = await asyncio.gather(*(self._push_chunk(node_id, c) for c in chunks))
        return list(zip(chunks, responses, strict=True))

    async def _push_chunk(self, node_id: str, items: Sequence[Pushed]) -> P.PushResponse:
        push = P.PushBatch(
            channel_id=self.channel_id,
            requester=self.ctx.signer.identity_bytes,
            payloads=[p for _, p, _ in items],
            payload_hashes=[h for h, _, _ in items],
            agree_tx_ids=[t for _, _, t in items] if any(t for _, _, t in items) else [],
        )
        push.timestamp.FromDatetime(utc_now())
        data = push.SerializeToString()
        request = P.PushRequest(batch=data, signature=self.ctx.signer.sign(data))
        for attempt in range(PUSH_ATTEMPTS):
            pusher = self._pushers.get(node_id)
            if pusher is None:
                pusher = self._pushers[node_id] = Pusher(self.ctx, node_id)
            try:
                return await pusher.push(request)
            except (
                TransientError
            ):  # e.g. the node restarted: the stream is gone, Push is idempotent
                if attempt + 1 == PUSH_ATTEMPTS:
                    raise
        raise RuntimeError("unreachable: the loop returns or raises")

    # --- Push (receiving side) ------------------------------------------------------------

    def check_push(
        self, push: P.PushBatch, sender: config_pb2.NodeConfig, held: Mapping[bytes, bytes]
    ) -> list[NewPayload]:
        """Every check of an admitted batch; returns what to store, or raises (stores nothing).

        `held` maps already stored hashes to their bytes: such a copy is replaced only by one
        with strictly more recipients (AddRecipients); an equal re-push changes nothing."""
        if len(push.payloads) != len(push.payload_hashes):
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, "one payload_hash per payload needed")
        out: list[NewPayload] = []
        for payload, claimed in zip(push.payloads, push.payload_hashes, strict=True):
            if (
                not sender.privacy_public_key
                or payload.sender_public_key != sender.privacy_public_key
            ):
                raise ClientError(
                    R.ERROR_REASON_NOT_AUTHORIZED,
                    f"payload sender key is not the privacy key of {sender.node_id}",
                )
            self.check_wrap(payload)
            open_key(payload, self.key, claimed)  # hash, recipient, own box: raises PayloadError
            keys = tuple(recipients_of(payload))
            replace = False
            if claimed in held:
                try:
                    old = EncryptedPayload.FromString(held[claimed])
                    replace = set(keys) > set(recipients_of(old))
                except DecodeError:  # the held copy is damaged; this one just verified
                    replace = True
                if not replace:
                    continue
            out.append(NewPayload(claimed, payload.SerializeToString(), keys, replace))
        return out

    def check_wrap(self, payload: EncryptedPayload) -> None:
        """Refuse a payload wrapped with an unknown algorithm, or more weakly than the channel
        requires (an X25519-only payload on a hybrid channel: a downgrade)."""
        wrap = check_algorithm(payload)
        if self.key_wrap == HYBRID and wrap != HYBRID:
            raise ClientError(
                R.ERROR_REASON_INVALID_FIELD,
                f"channel {self.channel_id!r} requires {wrap_name(HYBRID)}, payload uses "
                f"{wrap_name(wrap)}",
            )

    async def add_recipients(self, digest: bytes, orgs: Sequence[str]) -> int:
        """Re-wrap a payload this node sent for more recipients, store it, push it to all."""
        raw = await self.store.payload(digest)
        if raw is None:
            raise ClientError(R.ERROR_REASON_NOT_FOUND, f"no payload {digest.hex()[:16]}.. here")
        payload = parse(EncryptedPayload, raw, "stored payload")
        if payload.sender_public_key != self.key.public_key:
            raise ClientError(
                R.ERROR_REASON_NOT_AUTHORIZED,
                "only the node that sent a payload can add recipients",
            )
        held = set(recipients_of(payload))
        new_keys = sorted(set(self.recipients(orgs).values()) - held)
        if not new_keys:
            return len(held)
        nonces = [token_bytes(12) for _ in range(len(held) + len(new_keys))]
        kem = self.kem_shares(sorted(held | set(new_keys)), check_algorithm(payload))
        updated = add_recipients(payload, self.key, new_keys, nonces, kem)
        keys = tuple(recipients_of(updated))
        nodes = {n.node_id for k in keys if (n := self.node_of_key(k)) is not None}
        item = Outgoing(updated, digest, tuple(sorted(nodes - {self.ctx.node_id})))
        # The deliveries owed go in the replace's own transaction (not only after a failed push,
        # as for a Send): a crash between the two would leave the payload naming the new
        # recipients, so a retry finds nothing to add and returns, and nobody would push it to
        # them. A push that succeeds leaves its row; the redelivery pushes once more
        # (idempotent) and deletes it.
        await self.store.store_payloads(
            [NewPayload(digest, updated.SerializeToString(), keys, replace=True)],
            [(digest, n) for n in item.nodes] if self.queued else [],
            utc_now().timestamp(),
        )
        await self._push_all([item])
        await item.done
        return len(keys)

    # --- Receive / Resend -----------------------------------------------------------------

    async def receive(self, digest: bytes) -> bytes:
        """Plaintext of a held payload this node is a recipient of. A payload a purge removed
        here is PAYLOAD_PURGED (the purge's tx id and block): gone for good, which a reader
        must tell from "not held" — a payload owed here may still come (queued delivery)."""
        raw = await self.store.payload_or_purge(digest)
        if isinstance(raw, PurgeRecord):
            raise ClientError(
                R.ERROR_REASON_PAYLOAD_PURGED,
                f"payload {digest.hex()[:16]}.. was purged by transaction {raw.tx_id}"
                f" in block {raw.block_number}",
                {"purge_tx_id": raw.tx_id, "block_number": str(raw.block_number)},
            )
        if raw is None:
            raise ClientError(
                R.ERROR_REASON_NOT_AUTHORIZED,
                f"this node is not a recipient of payload {digest.hex()[:16]}.."
                " (or does not hold it)",
            )
        payload = parse(EncryptedPayload, raw, "stored payload")
        try:
            return open_payload(payload, self.key, digest)
        except PayloadError as exc:
            logger.error(
                "stored payload %s refused on %s: %s",
                digest.hex(),
                self.channel_id,
                exc.reason_name,
            )
            raise

    async def resend_chunks(self, recipient: bytes) -> AsyncIterator[list[EncryptedPayload]]:
        """Every held payload addressed to `recipient`, in bounded chunks."""
        after = b""
        while True:
            rows = await self.store.payloads_for(recipient, after, RESEND_CHUNK)
            if not rows:
                return
            payloads = [EncryptedPayload.FromString(r) for r in rows]
            after = payload_hash(payloads[-1])
            budget = self.ctx.limits.max_message_bytes // 2
            for chunk in by_size(payloads, lambda p: p.ByteSize(), budget):
                yield chunk
            if len(rows) < RESEND_CHUNK:
                return


def by_size(items: Sequence[T], size_of: Callable[[T], int], budget: int) -> list[list[T]]:
    """Consecutive chunks whose sizes add up to at most `budget` (an item alone may exceed it)."""
    chunks: list[list[T]] = []
    current: list[T] = []
    total = 0
    for item in items:
        size = size_of(item)
        if current and total + size > budget:
            chunks.append(current)
            current, total = [], 0
        current.append(item)
        total += size
    if current:
        chunks.append(current)
    return chunks
