"""A durable message bus on a channel: topics, publish, subscribe from a checkpoint.

Built on the ledger, not beside it: `publish` is a transaction of the built-in `bus` contract
(`contracts/bus.py`) that emits the message as a contract event, and returns once it committed
VALID — so a published message is ordered, signed, hash-chained and durable on every peer.
`subscribe` follows the channel's committed blocks (the Gateway's Events stream) and yields the
messages of the topics asked for, in commit order.

Position and resumption. Every message has a position (block number, tx index, event index)
that is the same on every peer. A subscription keeps the position of the last message its
consumer finished with in a `Checkpointer` under the subscription's name, and on start resumes
right after it (reading from that block again and skipping what is at or before the position),
so a restarted subscriber — after its own crash or its node's — gets every message once, none
lost. "Finished" is when the consumer asks for the next message: the position of a message is
saved as soon as the consumer's loop comes back for more, before anything else is read. A
consumer that crashes while handling a message gets that one message again after restart; one
that must never apply it twice stores the position together with its own effect (implement
`Checkpointer` over its own database, in the same transaction).

A slow subscriber never slows the node or the publishers: it reads blocks at its own pace from
the peer's ledger (flow control on its own stream): the node holds at most that stream's
window for it (bounded), never a backlog that grows with what it has not read.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from google.protobuf.message import DecodeError
from tenacity import AsyncRetrying, retry_if_result, stop_after_delay, wait_exponential_jitter

from dltmw.aio.files import write_durably
from dltmw.contracts.bus import BATCH_BYTES_MAX, BATCH_MAX, MESSAGE_BYTES_MAX, TOPIC
from dltmw.sdk.client import Client
from dltmw.sdk.errors import InvalidRequest, LimitExceeded, PayloadPurged, Unavailable
from dltmw.sdk.results import Block, Committed, EventFilter, Transaction
from dltmw.sdk.submitted import Submitted
from dltmw.v1 import bus_pb2, private_payload_pb2

__all__ = ["Bus", "Checkpointer", "FileCheckpointer", "Message", "Position", "Subscription"]
CONTRACT = "bus"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Position(NamedTuple):
    """Where a message is in the channel: ordered like the ledger."""

    block: int
    tx_index: int
    event_index: int


@dataclass(frozen=True)
class Message:
    """One message delivered to a subscriber."""

    topic: str
    payload: bytes
    headers: Mapping[str, str]
    tx_id: str
    position: Position
    private: bool = False  # sent to recipient organisations only (the ledger holds its hash)
    # A private message whose payload the consortium purged from our node (docs/privacy.md
    # "Purge"): payload, headers and topic (which only the payload named) are empty.
    purged: bool = False


class Checkpointer(Protocol):
    """Durable store of subscription positions (module docstring)."""

    async def load(self, name: str) -> Position | None:
        """The last position saved for `name`, or None."""

    async def save(self, name: str, position: Position) -> None:
        """Save `position` for `name` durably before returning."""


class FileCheckpointer:
    """One small JSON file per subscription in `directory`, replaced atomically and fsynced."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        _check_name(name)
        return self.directory / f"{name}.json"

    async def load(self, name: str) -> Position | None:
        """The saved position; a damaged file is an error, never a silent restart from 0."""
        path = self._path(name)
        try:
            raw = json.loads(path.read_text())
            return Position(int(raw["block"]), int(raw["tx_index"]), int(raw["event_index"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise _invalid(f"checkpoint {path} is damaged: {exc}") from exc

    async def save(self, name: str, position: Position) -> None:
        """Write, fsync, rename, fsync the directory: the position survives a crash."""
        write_durably(self._path(name), json.dumps(position._asdict()))


class Bus:
    """Topics of one channel, used through one client."""

    def __init__(self, client: Client, channel_id: str) -> None:
        self.client = client
        self.channel_id = channel_id

    async def create_topic(self, topic: str) -> None:
        """Declare `topic` (ContractRefused with status 409 in the message if it exists)."""
        _check_topic(topic)
        await self.client.submit(self.channel_id, CONTRACT, "create_topic", topic)

    async def publish(
        self, topic: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> Committed:
        """Publish one message; returns once it is committed (its tx id and block):
        `publish_async` and the handle's `committed()`. `CommitUnknown` as `Client.submit`
        (finish it with `bus.client.resume_submit`). Cancelled after the message was endorsed,
        it cancels the wait only; a publisher with its own timeout uses `publish_async`. A
        creator reference refused before anything was applied is published again in full
        (`Client.submit`)."""
        raw = _encoded(topic, payload, headers)
        return await self.client.submit(self.channel_id, CONTRACT, "publish", topic, raw)

    async def publish_async(
        self, topic: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> Submitted:
        """Endorse one message and hand it on to be ordered: its handle (`Client.submit_async`:
        the tx id before it is ordered, `committed()`, `status()`), which a cancelled wait
        never loses, and which never changes: a creator reference refused after the hand-off
        ends the handle with that refusal (nothing applied: publish again)."""
        raw = _encoded(topic, payload, headers)
        return await self.client.submit_async(self.channel_id, CONTRACT, "publish", topic, raw)

    async def publish_batch(
        self, topic: str, messages: Sequence[tuple[bytes, Mapping[str, str] | None]]
    ) -> Committed:
        """Publish several messages in one transaction (one endorsement, one signature, one
        commit for all): they keep the order given and each has its own position. The batch
        is ONE transaction, so one tx id names every message of it, on cancellation as in
        `publish`: cancelled after it was endorsed, it cancels the wait only (the log names
        that tx id, `Client.submit`); a publisher with its own timeout uses
        `publish_batch_async` and keeps the handle."""
        raws = _batch(topic, messages)
        return await self.client.submit(self.channel_id, CONTRACT, "publish_batch", topic, *raws)

    async def publish_batch_async(
        self, topic: str, messages: Sequence[tuple[bytes, Mapping[str, str] | None]]
    ) -> Submitted:
        """`publish_batch` handed on to be ordered: its handle (`publish_async`), whose one tx
        id names every message of the batch and never changes."""
        raws = _batch(topic, messages)
        return await self.client.submit_async(
            self.channel_id, CONTRACT, "publish_batch", topic, *raws
        )

    async def create_private_topic(self, topic: str, recipients: Sequence[str]) -> None:
        """Declare `topic` in the private state of the `recipients` organisations (a private
        transaction: other members see only its hash). Private messages of the topic go to
        recipients among these."""
        _check_topic(topic)
        await self.client.submit_private(
            self.channel_id, recipients, CONTRACT, "create_topic", topic
        )

    async def publish_private(
        self,
        topic: str,
        payload: bytes,
        recipients: Sequence[str],
        headers: Mapping[str, str] | None = None,
    ) -> Committed:
        """Publish a message readable only by the `recipients` organisations' subscribers: it
        travels encrypted to their nodes (the privacy manager), and the ledger orders only its
        hash, which every member sees. Returns once that committed."""
        raw = _encoded(topic, payload, headers)
        return await self.client.submit_private(
            self.channel_id, recipients, CONTRACT, "publish", topic, raw
        )

    def subscribe(
        self,
        topics: str | Iterable[str],
        name: str | None = None,
        checkpointer: Checkpointer | None = None,
        from_block: int = 0,
    ) -> Subscription:
        """Messages of `topics` in commit order; with `name` and `checkpointer`, resumes after
        the last message the consumer finished with (module docstring)."""
        wanted = frozenset({topics} if isinstance(topics, str) else topics)
        if not wanted:
            raise _invalid("subscribe to at least one topic")
        if from_block < 0:
            raise _invalid(f"from_block {from_block} is negative")
        for topic in wanted:
            _check_topic(topic)
        if (name is None) != (checkpointer is None):
            raise _invalid("give both a subscription name and a checkpointer, or neither")
        if checkpointer is not None and name is not None:
            _check_name(name)
        return Subscription(self, wanted, name, checkpointer, from_block)


class Subscription:
    """An async iterator of messages, and an async context manager that saves the position of
    the last message handed out when its block ends without an exception (a `break` out of
    the loop included); otherwise a message counts as finished when the next one is asked for.
    """

    def __init__(
        self,
        bus: Bus,
        topics: frozenset[str],
        name: str | None,
        checkpointer: Checkpointer | None,
        from_block: int,
    ) -> None:
        self._bus = bus
        self.topics = topics
        self._name = name
        self._checkpointer = checkpointer
        self._from_block = from_block
        self._iterator: AsyncGenerator[Message, None] | None = None
        self.last: Position | None = None  # position of the last message handed out
        self._saved: Position | None = None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            await self._save()
        await self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self._iterator is None:
            self._iterator = self._messages()
        await self._save()  # asked for the next one: finished with the last
        message = await self._iterator.__anext__()
        self.last = message.position
        return message

    async def close(self) -> None:
        """Stop following the channel (closes the Events stream)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            await iterator.aclose()

    async def _save(self) -> None:
        cp, name, last = self._checkpointer, self._name, self.last
        if cp is not None and name is not None and last is not None and last != self._saved:
            await cp.save(name, last)
            self._saved = last

    async def _messages(self) -> AsyncGenerator[Message, None]:
        cp, name = self._checkpointer, self._name
        after = await cp.load(name) if cp is not None and name is not None else None
        if after is not None and min(after) < 0:
            raise _invalid(f"checkpoint {name!r} holds a negative position {tuple(after)}")
        self._saved = after
        start = after.block if after is not None else self._from_block
        wanted = [EventFilter(CONTRACT, tuple(sorted(self.topics)))]
        client = self._bus.client
        blocks = client.blocks(self._bus.channel_id, start, wanted, private_transactions=True)
        if after is not None:
            blocks = _checkpoint_block_first(blocks, after.block, client.deadline_s)
        async with aclosing(blocks):  # closing the subscription closes the Events stream
            async for block in blocks:
                for tx in block.transactions:
                    if not tx.valid:
                        continue
                    if tx.private_payload_hash:
                        message = await self._private(block.number, tx)
                        if message is not None and (after is None or message.position > after):
                            yield message
                        continue
                    for event_index, event in enumerate(tx.events):
                        position = Position(block.number, tx.index, event_index)
                        if after is not None and position <= after:
                            continue
                        if event.contract != CONTRACT or event.name not in self.topics:
                            continue
                        body = bus_pb2.BusMessage.FromString(event.payload)
                        yield Message(
                            event.name, body.payload, dict(body.headers), tx.tx_id, position
                        )

    async def _private(self, block: int, tx: Transaction) -> Message | None:
        """The message a private transaction carries, if it is a bus message of our topics and
        our organisation is one of its recipients (otherwise we see only its hash).

        A payload the node is owed (`Transaction.private_payload_owed`: a recipient that was
        down when it was sent gets it by queued delivery, possibly after the block) is waited
        for, with jittered backoff, for at most the client's `deadline_s`; then `Unavailable`
        (WAIT_TIMEOUT) — never skipped as if our organisation were not a recipient, which would
        lose the message for good once the checkpoint moves past it.

        A payload a purge removed from our node (`PayloadPurged`, also while waiting for an
        owed one) is a `Message` with `purged=True`, its position and tx id, and an empty
        topic, payload and headers: the payload named the topic and is gone, so whether it was
        a message of our topics cannot be known — every purged private transaction our node
        was a recipient of is handed out, never skipped silently, and the checkpoint moves
        past it (a purge is final: waiting would stall the subscription for ever)."""
        client, channel_id = self._bus.client, self._bus.channel_id
        position = Position(block, tx.index, 0)
        try:
            plain = await client.receive_private(channel_id, tx.private_payload_hash)
            if plain is None and tx.private_payload_owed:
                plain = await _owed_payload(client, channel_id, tx.private_payload_hash)
        except PayloadPurged:
            return Message("", b"", {}, tx.tx_id, position, private=True, purged=True)
        if plain is None:
            return None
        try:
            invocation = private_payload_pb2.PrivateInvocation.FromString(plain)
            if (
                invocation.contract != CONTRACT
                or invocation.function != "publish"
                or len(invocation.args) != 2
            ):
                return None
            topic = invocation.args[0].decode()
            body = bus_pb2.BusMessage.FromString(invocation.args[1])
        except (DecodeError, UnicodeDecodeError):
            return None  # not a bus message: another contract's private transaction
        if topic not in self.topics:
            return None
        return Message(topic, body.payload, dict(body.headers), tx.tx_id, position, private=True)


async def _owed_payload(client: Client, channel_id: str, payload_hash: bytes) -> bytes:
    """The plaintext of a payload owed to the client's node, once its delivery arrived: asked
    again with exponential jittered backoff (tenacity) for at most `client.deadline_s`."""
    retrying = AsyncRetrying(
        retry=retry_if_result(lambda plain: plain is None),
        wait=wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
        stop=stop_after_delay(client.deadline_s),
        retry_error_callback=lambda _: None,
    )
    plain: bytes | None = await retrying(client.receive_private, channel_id, payload_hash)
    if plain is None:
        raise Unavailable(
            f"private payload {payload_hash.hex()[:16]}.. is owed to this node (a recipient) but"
            f" its delivery did not arrive within {client.deadline_s} s",
            reason="WAIT_TIMEOUT",
            code="UNAVAILABLE",
            metadata={"payload_hash": payload_hash.hex()},
        )
    return plain


async def _checkpoint_block_first(
    blocks: AsyncGenerator[Block, None], block: int, deadline_s: float
) -> AsyncGenerator[Block, None]:
    """`blocks`, whose first must come within `deadline_s`: it is the checkpoint's block,
    which some peer delivered once, so only a gateway lagging that long — or a checkpoint
    beyond the channel's height (another network's, a ledger restored from an older copy) —
    keeps it away; then HEIGHT_NOT_REACHED (UNAVAILABLE), the node's reason for a height it has
    not reached in time, instead of waiting silently for ever (docs/embedding.md)."""
    async with aclosing(blocks):
        try:
            async with asyncio.timeout(deadline_s):
                first = await anext(blocks)
        except TimeoutError:
            raise Unavailable(
                f"the checkpoint's block {block} did not come within {deadline_s} s: it is "
                "beyond the channel's height at every gateway tried",
                reason="HEIGHT_NOT_REACHED",
                code="UNAVAILABLE",
                metadata={"min_block_number": str(block)},
            ) from None
        yield first
        async for later in blocks:
            yield later


def _invalid(message: str) -> InvalidRequest:
    """What a node answers for a field outside its allowed form (INVALID_FIELD)."""
    return InvalidRequest(message, reason="INVALID_FIELD", code="INVALID_ARGUMENT")


def _too_large(message: str) -> LimitExceeded:
    """What a node answers for a message over the bus contract's limits (its 413):
    MESSAGE_TOO_LARGE, RESOURCE_EXHAUSTED (`core/contract.py` `refusal_error`)."""
    return LimitExceeded(message, reason="MESSAGE_TOO_LARGE", code="RESOURCE_EXHAUSTED")


def _check_size(raw: bytes) -> None:
    if len(raw) > MESSAGE_BYTES_MAX:
        raise _too_large(f"message of {len(raw)} bytes exceeds {MESSAGE_BYTES_MAX}")


def _check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise _invalid(f"subscription name {name[:64]!r}: 1..128 of A-Z a-z 0-9 . _ -")


def _batch(topic: str, messages: Sequence[tuple[bytes, Mapping[str, str] | None]]) -> list[bytes]:
    """The checked, encoded messages of a batch (`Bus.publish_batch`): nothing is sent for a
    batch the bus contract would refuse."""
    _check_topic(topic)
    if not 1 <= len(messages) <= BATCH_MAX:
        raise _invalid(f"publish_batch takes 1..{BATCH_MAX} messages")
    raws = [
        bus_pb2.BusMessage(headers=dict(h or {}), payload=p).SerializeToString()
        for p, h in messages
    ]
    total = sum(len(r) for r in raws)
    if total > BATCH_BYTES_MAX:
        raise _too_large(f"batch of {total} bytes exceeds {BATCH_BYTES_MAX}")
    for raw in raws:
        _check_size(raw)
    return raws


def _encoded(topic: str, payload: bytes, headers: Mapping[str, str] | None) -> bytes:
    """A message's bytes for the contract, its topic and size checked first."""
    _check_topic(topic)
    raw = bus_pb2.BusMessage(headers=dict(headers or {}), payload=payload).SerializeToString()
    _check_size(raw)
    return raw


def _check_topic(topic: str) -> None:
    if not TOPIC.fullmatch(topic):
        raise _invalid(f"topic {topic[:64]!r}: 1..128 characters of A-Z a-z 0-9 . _ / -")
