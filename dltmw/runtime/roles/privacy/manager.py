"""The node's privacy manager: its channels, private executors, and the cross-node operations.

Node-wide state is one X25519 key (its public half is in every channel config that names the
node) and one Push stream per destination node. Per channel there is a `PrivateChannel` (store,
Send batcher, Push admission, Receive, Resend) and a `PrivateExecutor`.

Cross-node operations live here:

* private state validation — ValidatePrivateState asks every other recipient of a payload for its
  (status, state hash) of that private transaction (PrivateStateHash, answered only to recipients)
  and reports who differs; a mismatch is also logged;
* recovery — Recover asks every other peer of the channel to Resend the payloads addressed to this
  node, keeps only payloads whose hash is a VALID private transaction on this node's own ledger
  and whose box opens with this node's key (so a tampered or unrelated copy is refused), stores
  them, then re-derives the private state from block 0. A node recovering at start may still be
  catching up on blocks: a refused payload that would be kept but for not being on the ledger
  yet, and that a channel peer sealed (as Push requires), is set aside (`defer_payloads`) and
  becomes this node's payload if its transaction commits — refused for good, it would have
  stayed NOT_HELD there (found by the simulator, `dltmw/sim/scenarios/private.py`). A
  store created at start on a node that ran before (a lost store) is marked incomplete when it
  is created and recovered automatically in the background, again at every start, until every
  other peer answered (the simulator found each of: a lost store on a ledger with no block yet
  — payloads reach a node before their transactions are ordered —, a recovery answered only
  by peers that held nothing, and a crash during the recovery).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import grpc

from dltmw.aio.clock import utc_now
from dltmw.aio.key_order import KeyOrder
from dltmw.core.errors import ClientError, DltmwError, TransientError
from dltmw.core.privacy.envelope import (
    PayloadError,
    PrivacyKey,
    open_key,
    payload_hash,
    recipients_of,
)
from dltmw.core.privacy.execution import CONTRACT_FAILED, EXECUTED, NOT_HELD
from dltmw.core.txcheck import parse
from dltmw.ledger import private_outbox
from dltmw.ledger.private_store import NewPayload, PrivateStore
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.runtime.roles.privacy.executor import PrivateExecutor, private_txs
from dltmw.runtime.roles.privacy.links import forget_if_gone
from dltmw.runtime.roles.privacy.private_channel import DELIVERY_EXPIRY_S, PrivateChannel, Sent
from dltmw.runtime.roles.privacy.pusher import Pusher
from dltmw.v1 import (
    config_pb2,
    errors_pb2,
    privacy_manager_service_pb2,
    privacy_manager_service_pb2_grpc,
    private_agreement_pb2,
    private_payload_pb2,
)

logger = logging.getLogger(__name__)
P = privacy_manager_service_pb2
R = errors_pb2
# (channel id, lost_if_created) -> the channel's private store, opened (`Node`'s choice of backend)
StoreOpener = Callable[[str, bool], Awaitable[PrivateStore]]
CALL_TIMEOUT_S = 30.0
# outbox state (`ledger/private_outbox.py`) -> the wire's DeliveryState
DELIVERY_STATE = {
    private_outbox.OWED: P.DELIVERY_STATE_PENDING,
    private_outbox.EXPIRED: P.DELIVERY_STATE_EXPIRED,
    private_outbox.REMOVED: P.DELIVERY_STATE_RECIPIENT_REMOVED,
    private_outbox.ABANDONED: P.DELIVERY_STATE_ABANDONED,
}
PAGE_DEFAULT = 256  # PendingDeliveries' page when the query names none
PAGE_MAX = 1000
RECOVER_WAIT_S = 120.0
AUTO_RECOVER_ATTEMPTS = 10
SCAN_CHUNK = 64


class PrivacyManager:
    """Every private channel of one node."""

    def __init__(
        self,
        ctx: NodeContext,
        key: PrivacyKey,
        open_store: StoreOpener,
        delivery_expiry_s: float = DELIVERY_EXPIRY_S,
    ) -> None:
        self.ctx = ctx
        self.delivery_expiry_s = delivery_expiry_s  # `[private]` (redelivery.py)
        self.key = key
        self._open_store = open_store  # the node's: sqlite file or PostgreSQL schema
        self.channels: dict[str, PrivateChannel] = {}
        self.executors: dict[str, PrivateExecutor] = {}
        self._pushers: dict[str, Pusher] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._recover_lock = asyncio.Lock()
        self._agreements = Agreements(ctx, key)
        # Pushes are stored concurrently (rpc/privacy.py Push); those naming the same payload
        # in arrival order (`aio/key_order.py`: the replace decision reads what is held).
        self._push_order = KeyOrder()

    async def add_channel(self, peer: PeerChannel) -> None:
        """Serve a channel this node's peer joined (if the config lists this node's key)."""
        cid = peer.view.channel_id
        me = next((n for n in peer.view.config.peers if n.node_id == self.ctx.node_id), None)
        if me is None or me.privacy_public_key != self.key.public_key:
            logger.error(
                "channel %s does not list this node's privacy key: no privacy manager", cid
            )
            return
        if me.privacy_kem_public_key and me.privacy_kem_public_key != self.key.kem_public_key:
            logger.error(
                "channel %s lists another ML-KEM key for this node: no privacy manager", cid
            )
            return
        # A private store created now replaces a lost one unless the node is new. Not only when
        # the ledger has blocks: payloads are pushed before their transactions are ordered, so a
        # node that lost its store before committing any block may have held some.
        store = await self._open_store(cid, peer.ledger.height > 1 or not peer.ledger.created)
        channel = PrivateChannel(
            self.ctx, self.key, peer, store, self._pushers, self.delivery_expiry_s
        )
        executor = PrivateExecutor(self.key, peer, store, channel.prior_runs)
        channel.executed_height = lambda: executor.height  # (group give-ups wait for it)
        await channel.start()
        await executor.start()
        self.channels[cid], self.executors[cid] = channel, executor
        if await store.incomplete():  # lost, and not recovered yet (maybe by a crashed start)
            task = self.ctx.tasks.spawn(f"recover-{cid}", self._auto_recover(cid))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def channel(self, channel_id: str) -> PrivateChannel:
        """The private channel, or CHANNEL_NOT_FOUND."""
        channel = self.channels.get(channel_id)
        if channel is None:
            raise ClientError(
                R.ERROR_REASON_CHANNEL_NOT_FOUND, f"no private channel {channel_id!r} here"
            )
        return channel

    async def stop(self) -> None:
        """Stop everything (idempotent)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._agreements.close()
        for pusher in self._pushers.values():
            await pusher.close()
        for cid in list(self.channels):
            await self.executors.pop(cid).stop()
            channel = self.channels.pop(cid)
            await channel.stop()
            await channel.store.close()

    # --- Push -----------------------------------------------------------------------------

    async def accept_push(self, push: P.PushBatch, sender: config_pb2.NodeConfig) -> P.PushResponse:
        """Check a whole admitted batch, then store it in one transaction (which the store's
        group commit shares with the concurrent pushes of this and other streams); then, for
        the payloads whose agreement the push asks (`agree_tx_ids`), this node's agreements on
        its committed private state (`Agreements.agree_pushed`)."""
        channel = self.channel(push.channel_id)
        async with self._push_order.turn((push.channel_id, h) for h in push.payload_hashes):
            held = await channel.store.held(list(push.payload_hashes))
            await channel.store.store_payloads(channel.check_push(push, sender, held))
        self.executors[push.channel_id].payloads_arrived()  # it may be waiting for one
        if channel.redelivery is not None:  # the sender is up: what it is owed is due now
            channel.redelivery.heard_from(sender.node_id)
        # agree_tx_ids: empty (none asked) or one per payload (the servicer checked)
        tx_ids = push.agree_tx_ids
        asked = [(h, t) for h, t in zip(push.payload_hashes, tx_ids, strict=False) if t]
        if not asked:
            return P.PushResponse(stored=len(push.payloads))
        contract_of = self.executors[push.channel_id].contract_of
        key = sender.privacy_public_key
        agreements = await self._agreements.agree_pushed(channel, contract_of, asked, key)
        return P.PushResponse(stored=len(push.payloads), agreements=agreements)

    # --- agreement before commit (runtime/roles/privacy/agreement.py) ----------------------

    async def agree(
        self, query: private_agreement_pb2.AgreeQuery, requester_key: bytes
    ) -> private_agreement_pb2.PrivateAgreement:
        """This node's signed verdict on another recipient's proposal."""
        channel = self.channel(query.channel_id)
        contract_of = self.executors[query.channel_id].contract_of
        return await self._agreements.agree(channel, contract_of, query, requester_key)

    async def agree_many(
        self,
        channel_id: str,
        queries: Sequence[private_agreement_pb2.AgreeQuery],
        requester_key: bytes,
    ) -> list[private_agreement_pb2.AgreeResult]:
        """This node's verdicts on a batch of another recipient's proposals (AgreeBatch)."""
        channel = self.channel(channel_id)
        contract_of = self.executors[channel_id].contract_of
        return await self._agreements.agree_many(channel, contract_of, queries, requester_key)

    async def collect_agreements(
        self, channel_id: str, digest: bytes, tx_id: str
    ) -> private_agreement_pb2.CollectAgreementsResponse:
        """Every recipient's signed agreement for the transaction `tx_id` will be."""
        channel = self.channel(channel_id)
        contract_of = self.executors[channel_id].contract_of
        return await self._agreements.collect(channel, contract_of, digest, tx_id)

    async def collect_many(
        self, channel_id: str, items: Sequence[tuple[bytes, str]]
    ) -> list[private_agreement_pb2.CollectAgreementsResult]:
        """`collect_agreements` for many (payload hash, tx_id) of one client batch."""
        channel = self.channel(channel_id)
        contract_of = self.executors[channel_id].contract_of
        return await self._agreements.collect_many(channel, contract_of, items)

    async def send_and_collect(
        self, channel_id: str, items: Sequence[tuple[bytes, Sequence[str], str]]
    ) -> tuple[list[Sent], list[private_agreement_pb2.CollectAgreementsResult]]:
        """SendBatch: send each (plaintext, organisations, tx_id); for each with a tx_id, also
        collect its agreements, asked on the Push and started as soon as the payload is stored
        here (`Agreements.collect`): (what was sent, one result per item with a tx_id, in
        order). The send fails as before: the first failure is raised, and the collections of
        the call's other items are stopped (nothing of it is answered)."""
        channel = self.channel(channel_id)
        sending = await channel.submit(items)
        asked = [(s, tx_id) for s, (_, _, tx_id) in zip(sending, items, strict=True) if tx_id]
        contract_of = self.executors[channel_id].contract_of
        pairs = [(s.payload_hash, t) for s, t in asked]
        collect = self._agreements.collect_many(channel, contract_of, pairs, [s for s, _ in asked])
        collecting: asyncio.Future[list[private_agreement_pb2.CollectAgreementsResult]]
        collecting = asyncio.ensure_future(collect)
        try:
            sent = await channel.settle(sending)
        except BaseException:  # a send failed (or the call ended): the collections end too
            collecting.cancel()
            await asyncio.gather(collecting, return_exceptions=True)
            raise
        return sent, await collecting

    # --- private state validation ---------------------------------------------------------

    async def _held(
        self, channel: PrivateChannel, digest: bytes
    ) -> private_payload_pb2.EncryptedPayload:
        raw = await channel.store.payload(digest)
        if raw is None:
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "this node does not hold that payload")
        return parse(private_payload_pb2.EncryptedPayload, raw, "stored payload")

    async def state_record(
        self, channel_id: str, digest: bytes, requester_key: bytes
    ) -> P.PrivateStateHashResponse:
        """This node's record of a private transaction, for another recipient."""
        channel = self.channel(channel_id)
        payload = await self._held(channel, digest)
        if not requester_key or requester_key not in recipients_of(payload):
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "requester is not a recipient")
        record = await channel.store.ptx(digest)
        if record is None:
            raise ClientError(R.ERROR_REASON_NOT_FOUND, "private transaction not executed here")
        return P.PrivateStateHashResponse(
            status=record.status,  # type: ignore[arg-type]
            state_hash=record.state_hash,
            block_number=record.block_number,
            tx_index=record.tx_index,
        )

    async def validate(self, channel_id: str, digest: bytes) -> P.ValidatePrivateStateResponse:
        """Compare this node's private-state hash for a transaction with every other party's.

        The sender's view of a payload whose delivery is still owed to someone and that this
        node has not executed (under ALL_RECIPIENTS it cannot be ordered before the pending
        recipient agreed) is answered too: status UNSPECIFIED ("not executed here yet"), each
        pending party marked `delivery_pending`, no mismatch. Without owed deliveries a payload
        not executed here stays NOT_FOUND, as before. Each party's `delivery_state` says what
        became of a delivery not acknowledged (pending, or given up: expired, recipient removed,
        abandoned); a recipient no longer in the config is listed by its node id with it."""
        channel = self.channel(channel_id)
        payload = await self._held(channel, digest)
        owed = await channel.store.delivery_states(digest)  # this node sent it: queued
        try:
            mine: P.PrivateStateHashResponse | None = await self.state_record(
                channel_id, digest, self.key.public_key
            )
        except ClientError as exc:
            if exc.reason != R.ERROR_REASON_NOT_FOUND or not owed:
                raise
            mine = None  # sent here, not executed yet, a delivery still pending
        out = P.ValidatePrivateStateResponse()
        if mine is not None:
            out.status, out.state_hash = mine.status, mine.state_hash
        others = [k for k in recipients_of(payload) if k != self.key.public_key]
        answers = await asyncio.gather(*(self._ask_state(channel, digest, k) for k in others))
        named = {party.node_id for party in answers}
        for node_id in sorted(set(owed) - named):  # left the config: no key to ask it by
            answers.append(P.PartyStateHash(node_id=node_id, error="not in the channel config"))
        for party in answers:
            state = owed.get(party.node_id)
            party.delivery_pending = state == private_outbox.OWED
            if state is not None:
                party.delivery_state = DELIVERY_STATE[state]
            party.matches = mine is not None and (
                party.status == mine.status and party.state_hash == mine.state_hash
            )
            out.parties.append(party)
        out.mismatch = mine is not None and any(not p.error and not p.matches for p in out.parties)
        if out.mismatch:
            logger.warning(
                "private state mismatch for payload %s on %s: %s",
                digest.hex(),
                channel_id,
                ", ".join(p.node_id for p in out.parties if not p.error and not p.matches),
            )
        return out

    async def _ask_state(
        self, channel: PrivateChannel, digest: bytes, key: bytes
    ) -> P.PartyStateHash:
        node = channel.node_of_key(key)
        if node is None:
            return P.PartyStateHash(error="recipient key is not in the channel config")
        query = P.PrivateStateHashQuery(
            channel_id=channel.channel_id,
            payload_hash=digest,
            requester=self.ctx.signer.identity_bytes,
        )
        query.timestamp.FromDatetime(utc_now())
        data = query.SerializeToString()
        request = P.PrivateStateHashRequest(query=data, signature=self.ctx.signer.sign(data))
        link: grpc.aio.Channel | None = None
        try:
            link = await self.ctx.channel_to(node.node_id)
            stub = privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub(link)
            reply = await stub.PrivateStateHash(request, timeout=CALL_TIMEOUT_S)
        except (grpc.aio.AioRpcError, TransientError) as exc:
            await forget_if_gone(self.ctx, node.node_id, link, exc)
            detail = (
                f"{exc.code().name}: {exc.details()}"
                if isinstance(exc, grpc.aio.AioRpcError)
                else str(exc)
            )
            return P.PartyStateHash(node_id=node.node_id, error=detail)
        return P.PartyStateHash(
            node_id=node.node_id, status=reply.status, state_hash=reply.state_hash
        )

    # --- the sender's queued deliveries (docs/privacy.md "Queued delivery") --------------

    async def pending_deliveries(
        self, channel_id: str, after: tuple[bytes, str], limit: int
    ) -> P.PendingDeliveriesResponse:
        """A page of this node's deliveries not acknowledged yet: pending or given up."""
        channel = self.channel(channel_id)
        size = min(limit or PAGE_DEFAULT, PAGE_MAX)
        out = P.PendingDeliveriesResponse()
        for digest, node, since, state in await channel.store.outbox_rows(after, size):
            row = out.deliveries.add(
                payload_hash=digest,
                node_id=node,
                state=DELIVERY_STATE[state],
            )
            if since is not None:
                row.queued_at.FromDatetime(datetime.fromtimestamp(since, UTC))
        return out

    async def abandon_delivery(self, channel_id: str, digest: bytes) -> P.AbandonDeliveryResponse:
        """Push `digest` no more to any recipient still owed it (ABANDONED, logged once)."""
        channel = self.channel(channel_id)
        if channel.redelivery is not None:  # after any push of it under way (`abandon`)
            nodes = await channel.redelivery.abandon(digest)
        else:  # not started (no pass can run)
            nodes = await channel.store.pending_nodes(digest)
            if nodes:
                await channel.store.give_up(
                    [([(digest, n) for n in nodes], private_outbox.ABANDONED)]
                )
        if not nodes:
            raise ClientError(
                R.ERROR_REASON_NOT_FOUND,
                f"no delivery of payload {digest.hex()[:16]}.. is pending here",
            )
        count = len(nodes)
        logger.warning(
            "channel %s: delivery of payload %s abandoned by a client: no longer pushed to %s",
            channel_id,
            digest.hex(),
            ", ".join(nodes),
        )
        return P.AbandonDeliveryResponse(abandoned=count)

    # --- recovery -------------------------------------------------------------------------

    async def _ledger_hashes(self, channel: PrivateChannel) -> set[bytes]:
        ledger = channel.peer.ledger
        hashes: set[bytes] = set()
        height = ledger.height
        for start in range(0, height, SCAN_CHUNK):
            for block in await ledger.blocks(start, min(height, start + SCAN_CHUNK)):
                hashes.update(digest for _, _, digest in private_txs(block))
        return hashes

    async def _resend_from(
        self, channel: PrivateChannel, node_id: str
    ) -> list[private_payload_pb2.EncryptedPayload]:
        """Every payload `node_id` holds for this node (Resend); a failed call drops the cached
        channel it used when the connection is bad (`links.py`), then raises."""
        query = P.ResendQuery(
            channel_id=channel.channel_id, requester=self.ctx.signer.identity_bytes
        )
        query.timestamp.FromDatetime(utc_now())
        data = query.SerializeToString()
        link = await self.ctx.channel_to(node_id)
        stub = privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub(link)
        out: list[private_payload_pb2.EncryptedPayload] = []
        call = stub.Resend(
            P.ResendRequest(query=data, signature=self.ctx.signer.sign(data)),
            timeout=CALL_TIMEOUT_S,
        )
        try:
            async for reply in call:
                out.extend(reply.payloads)
        except grpc.aio.AioRpcError as exc:
            await forget_if_gone(self.ctx, node_id, link, exc)
            raise
        return out

    async def recover(self, channel_id: str) -> P.RecoverResponse:
        """Fetch this node's payloads from the other peers, verify, store, re-derive state."""
        channel = self.channel(channel_id)
        async with self._recover_lock:
            on_ledger = await self._ledger_hashes(channel)
            others = [
                n.node_id
                for n in channel.view.config.peers
                if n.privacy_public_key and n.node_id != self.ctx.node_id
            ]
            good: dict[bytes, NewPayload] = {}
            deferred: dict[bytes, NewPayload] = {}
            out = P.RecoverResponse()
            for node_id in others:
                try:
                    offered = await self._resend_from(channel, node_id)
                except (grpc.aio.AioRpcError, TransientError) as exc:
                    logger.warning("resend from %s failed: %s", node_id, exc)
                    continue
                out.peers_answered += 1
                for payload in offered:
                    digest = payload_hash(payload)
                    if digest in good:
                        continue
                    if not self._acceptable(payload, digest, on_ledger, node_id):
                        out.refused += 1
                        if digest not in on_ledger and self._deferrable(channel, payload, digest):
                            deferred[digest] = NewPayload(
                                digest, payload.SerializeToString(), tuple(recipients_of(payload))
                            )
                        continue
                    good[digest] = NewPayload(
                        digest, payload.SerializeToString(), tuple(recipients_of(payload))
                    )
            if others and not out.peers_answered:
                raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, "no peer answered Resend")
            out.recovered = await channel.store.store_payloads(list(good.values()))
            await channel.store.defer_payloads([d for h, d in deferred.items() if h not in good])
            self.executors[channel_id].payloads_arrived()
            out.re_executed = await self._rederive(channel)
            logger.info(
                "recovered %d payloads of %s (%d refused) from %d peers",
                out.recovered,
                channel_id,
                out.refused,
                out.peers_answered,
            )
            return out

    async def replicate_from(
        self, channel_id: str, node_id: str, recheck: Sequence[bytes] = ()
    ) -> list[bytes]:
        """A standby's pass (runtime/standby.py `Standby.follow`): the payloads its active
        `node_id` (same identity and key) holds for this node, checked as in `recover` (hash on
        this ledger, box opens); one not on this ledger yet is set aside (`defer_payloads`) and
        becomes this node's when its transaction commits. The private state is re-derived when
        a payload stored now or in the previous pass (`recheck`: the executor may have passed
        its block just as it was stored) was executed as NOT_HELD. Returns the stored hashes."""
        channel = self.channel(channel_id)
        async with self._recover_lock:
            offered = {payload_hash(p): p for p in await self._resend_from(channel, node_id)}
            held = await channel.store.held(list(offered))
            fresh = {d: p for d, p in offered.items() if d not in held}
            good: list[NewPayload] = []
            later: list[NewPayload] = []
            on_ledger = await self._ledger_hashes(channel) if fresh else set()
            for digest, payload in fresh.items():
                new = NewPayload(digest, payload.SerializeToString(), tuple(recipients_of(payload)))
                if self._acceptable(payload, digest, on_ledger, node_id):
                    good.append(new)
                elif digest not in on_ledger and self._deferrable(channel, payload, digest):
                    later.append(new)
            await channel.store.store_payloads(good)
            await channel.store.defer_payloads(later)
            self.executors[channel_id].payloads_arrived()
            stored = [p.payload_hash for p in good]
            records = [await channel.store.ptx(d) for d in [*stored, *recheck]]
            if any(r is not None and r.status == NOT_HELD for r in records):
                await self._rederive(channel)
            return stored

    def _deferrable(
        self, channel: PrivateChannel, payload: private_payload_pb2.EncryptedPayload, digest: bytes
    ) -> bool:
        """Sealed by a channel peer for this node (what Push accepts): worth keeping aside."""
        if channel.node_of_key(payload.sender_public_key) is None:
            return False
        try:
            open_key(payload, self.key, digest)
        except PayloadError:
            return False
        return True

    def _acceptable(
        self,
        payload: private_payload_pb2.EncryptedPayload,
        digest: bytes,
        on_ledger: set[bytes],
        node_id: str,
    ) -> bool:
        if digest not in on_ledger:
            logger.warning(
                "resend from %s offered payload %s not on the ledger", node_id, digest.hex()
            )
            return False
        try:
            open_key(payload, self.key, digest)
        except PayloadError as exc:
            logger.warning("resend from %s: payload %s refused: %s", node_id, digest.hex(), exc)
            return False
        return True

    async def _rederive(self, channel: PrivateChannel) -> int:
        executor = self.executors[channel.channel_id]
        await executor.stop()
        await channel.store.reset_private_state()
        await executor.start()
        await executor.wait_for(channel.peer.ledger.height, RECOVER_WAIT_S)
        return await channel.store.count_status([EXECUTED, CONTRACT_FAILED])

    async def _auto_recover(self, channel_id: str) -> None:
        """Recover a store lost before this start, retrying while other peers are still down:
        until every other peer answered once (the ones that hold this node's payloads may be
        the ones that were down — found by the simulator), or the attempts are spent."""
        channel = self.channel(channel_id)
        others = sum(
            1
            for n in channel.view.config.peers
            if n.privacy_public_key and n.node_id != self.ctx.node_id
        )
        for attempt in range(AUTO_RECOVER_ATTEMPTS):
            try:
                report = await self.recover(channel_id)
                if report.peers_answered >= others:
                    await channel.store.mark_complete()
                    return
                logger.warning(
                    "automatic recovery of %s (%d): %d of %d peers answered; trying again",
                    channel_id,
                    attempt,
                    report.peers_answered,
                    others,
                )
            except DltmwError as exc:
                logger.warning("automatic recovery of %s failed (%d): %s", channel_id, attempt, exc)
            await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
