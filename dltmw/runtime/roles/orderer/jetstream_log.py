"""The channel's replicated log: one NATS JetStream stream, reached with nats-py.

A thin adapter, no decisions: `append` publishes envelopes and returns once JetStream
acknowledged each (the stream has `replicas` copies: the acknowledgement comes after a majority
of the nats-servers stored it, so an acknowledged envelope survives the loss of a minority);
`mark` publishes a time-to-cut marker without waiting (a lost marker is asked for again by the
core after another timeout); `entries(after)` yields the stream from sequence `after + 1` in
stream order, as the core's entries.

Why an ordered consumer and not a durable one: where an orderer has read to is stored in its
chain (the position of its last block, written in the block's own sqlite transaction,
`jetstream.py`), so a restart knows exactly where to resume. A durable consumer's
acknowledgement state would be a second record of the same fact, kept on another machine and
not atomic with the block. The ordered consumer is recreated by the client from the last
sequence it delivered when a server goes away (gap detection and heartbeats in nats-py).

The envelopes of one Broadcast batch are published as ONE stream message (a `BlockData` on the
`.batch` subject, split only to stay under the server's maximum payload): the publish, its
replicated acknowledgement and every orderer's consumption then cost per batch, not per
envelope — what kept this ordering below solo's throughput. A lone envelope goes on the `.env`
subject as itself. Messages carry the `Nats-Msg-Id` header set to the SHA-256 of their bytes,
so the stream drops a resubmission of the same message within its duplicate window (a client
that retries after a lost acknowledgement); later duplicates, and an envelope retried in
another batch, are found by every peer's duplicate tx_id check at commit, as with any orderer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from dltmw.aio.throttle import LogThrottle
from dltmw.core.errors import DltmwError, TransientError
from dltmw.core.handlers.jetstream import Entry, StreamBatch, StreamEnvelope, TimeToCut
from dltmw.net.keyfile import passphrase
from dltmw.runtime.config_file import JetStreamTable
from dltmw.runtime.roles.orderer.nats_transport import bounded_close_client
from dltmw.v1 import block_pb2, errors_pb2

logger = logging.getLogger(__name__)
READY_S = 30.0  # creating the stream waits this long for the cluster to elect its leaders
DUPLICATE_WINDOW_S = 120.0
PENDING_MSGS_MAX = 20_000  # entries buffered by the client before the consumer is slowed
# the server's heartbeat to an idle consumer: two missed make the client recreate the consumer
# from its last sequence (a stream leader lost), so cutting resumes within ~2 heartbeats
HEARTBEAT_S = 1.0
# a server that has not answered this many pings is left (`[jetstream] ping_interval_ms`)
PING_MAX = 2
PAYLOAD_HEADROOM_BYTES = 4096  # a batch message stays this far under the server's max payload


def client_tls(settings: JetStreamTable, cert: Path, key: Path) -> ssl.SSLContext | None:
    """The TLS context of an orderer's connection (`[jetstream] ca_file`; the node's own TLS
    certificate and key, a passphrase-encrypted key too), or None for plain TCP."""
    if not settings.ca_file:
        return None
    context = ssl.create_default_context(cafile=settings.ca_file)
    context.load_cert_chain(cert, key, password=passphrase())
    return context


def unavailable(detail: str) -> TransientError:
    """The refusal of an envelope the log did not acknowledge."""
    return TransientError(
        errors_pb2.ERROR_REASON_ORDERING_UNAVAILABLE,
        f"the channel's replicated log did not acknowledge the envelope: {detail}",
    )


class StreamLog:
    """One channel's stream (see the module docstring)."""

    def __init__(
        self,
        channel_id: str,
        settings: JetStreamTable,
        client_name: str,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        token = channel_id.encode().hex()  # channel ids may hold '.', a subject separator
        self.stream = f"DLTMW_{token}"
        self._envelopes = f"dltmw.{token}.env"
        self._batches = f"dltmw.{token}.batch"
        self._markers = f"dltmw.{token}.ttc"
        self._settings = settings
        self._name = client_name
        self._tls = tls
        self._timeout_s = settings.publish_timeout_ms / 1000
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._throttle = LogThrottle()
        self._closing = False
        self._last_error: Exception | None = None

    async def open(self) -> None:
        """Connect (any reachable server; once connected, reconnects forever) and make sure the
        stream exists, waiting up to READY_S for the cluster to answer. The first connection is
        bounded by READY_S too: with reconnects unbounded, nats-py would retry a cluster that
        refuses us (e.g. an orderer whose TLS subject no member lets in) for ever, and `channel
        join` hung instead of saying why."""
        nc = self._nc = bounded_close_client()
        try:
            async with asyncio.timeout(READY_S):
                await nc.connect(
                    servers=list(self._settings.servers),
                    name=self._name,
                    connect_timeout=2,
                    tls=self._tls,
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]  # seconds, a float works
                    max_reconnect_attempts=-1,
                    ping_interval=self._settings.ping_interval_ms / 1000,  # type: ignore[arg-type]
                    max_outstanding_pings=PING_MAX,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                )
        except TimeoutError:
            await self.close()
            raise unavailable(
                f"no nats-server of {list(self._settings.servers)} let this orderer in within"
                f" {READY_S:.0f}s (last error: {self._last_error!r}); is its TLS subject in the"
                " members' nats.conf? (docs/ordering.md)"
            ) from None
        self._js = self._nc.jetstream(timeout=self._timeout_s)
        config = StreamConfig(
            name=self.stream,
            subjects=[self._envelopes, self._batches, self._markers],
            num_replicas=self._settings.replicas,
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        deadline = time.monotonic() + READY_S
        while True:
            try:
                await self._js.add_stream(config)
                return
            except BadRequestError:
                # made before batches had a subject of their own: add it; any other
                # difference is an operator's mistake, said as is. NotFound here is another
                # orderer's add still being replicated (seen at start-up): retried below.
                try:
                    await self._js.update_stream(config)
                    return
                except NotFoundError as exc:
                    if time.monotonic() > deadline:
                        raise unavailable(f"stream {self.stream} not created: {exc!r}") from exc
                    await asyncio.sleep(0.2)
            except Exception as exc:  # the cluster is still electing its leaders
                if time.monotonic() > deadline:
                    raise unavailable(f"stream {self.stream} not created: {exc!r}") from exc
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        self._closing = True
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def append(self, envelopes: Sequence[bytes]) -> list[DltmwError | None]:
        """Publish the envelopes (one message per batch that fits the server's payload limit);
        None for each acknowledged envelope, else its refusal."""
        js, nc = self._js, self._nc
        if js is None or nc is None:
            return [unavailable("not connected") for _ in envelopes]
        chunks = _chunks(envelopes, nc.max_payload - PAYLOAD_HEADROOM_BYTES)
        answers = await asyncio.gather(
            *(self._publish(js, chunk) for chunk in chunks), return_exceptions=True
        )
        out: list[DltmwError | None] = []
        for chunk, answer in zip(chunks, answers, strict=True):
            if isinstance(answer, asyncio.CancelledError):
                raise answer
            if isinstance(answer, BaseException):
                self._warn("publish", "publish failed: %r", answer)
                out.extend(unavailable(type(answer).__name__) for _ in chunk)
            else:
                out.extend(None for _ in chunk)
        return out

    async def _publish(self, js: JetStreamContext, chunk: Sequence[bytes]) -> None:
        if len(chunk) == 1:
            subject, data = self._envelopes, chunk[0]
        else:
            subject = self._batches
            data = block_pb2.BlockData(envelopes=chunk).SerializeToString()
        msg_id = hashlib.sha256(data).hexdigest()
        await js.publish(subject, data, timeout=self._timeout_s, headers={"Nats-Msg-Id": msg_id})

    async def mark(self, block_numbers: Sequence[int]) -> None:
        """Publish time-to-cut markers without waiting for acknowledgements."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return  # asked again after another timeout
        for number in block_numbers:
            await nc.publish(self._markers, str(number).encode())

    async def entries(self, after: int) -> AsyncIterator[Entry]:
        """The stream from sequence `after + 1`, in order, as the core's entries."""
        js = self._js
        if js is None:
            raise unavailable("not connected")
        sub = await js.subscribe(
            f"dltmw.{self.stream.removeprefix('DLTMW_')}.*",
            ordered_consumer=True,
            config=ConsumerConfig(opt_start_seq=after + 1),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            pending_msgs_limit=PENDING_MSGS_MAX,
            idle_heartbeat=HEARTBEAT_S,
        )
        try:
            async for msg in sub.messages:
                seq = msg.metadata.sequence.stream
                if msg.subject == self._markers:
                    yield TimeToCut(seq, _marker_number(msg.data))
                elif msg.subject == self._batches:
                    yield StreamBatch(seq, _batch_envelopes(msg.data))
                else:
                    yield StreamEnvelope(seq, msg.data)
        finally:
            await sub.unsubscribe()

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        self._warn("client", "nats client: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self._warn("disconnected", "disconnected from nats; reconnecting")

    def _warn(self, key: str, message: str, *args: object) -> None:
        suppressed = self._throttle.admit(key)
        if suppressed is not None:
            logger.warning(
                "stream %s: " + message + " (%d more suppressed)", self.stream, *args, suppressed
            )


def _marker_number(data: bytes) -> int:
    """The block number a marker names (-1, never pending, for a malformed one)."""
    try:
        return int(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return -1


def _chunks(envelopes: Sequence[bytes], limit_bytes: int) -> list[Sequence[bytes]]:
    """The envelopes in order, in runs whose framed size stays under `limit_bytes` (an
    envelope larger than that alone is a run of its own: the server refuses it, as before)."""
    out: list[Sequence[bytes]] = []
    start, size = 0, 0
    for i, envelope in enumerate(envelopes):
        framed = len(envelope) + 8  # tag + length prefix, generously
        if i > start and size + framed > limit_bytes:
            out.append(envelopes[start:i])
            start, size = i, 0
        size += framed
    if start < len(envelopes):
        out.append(envelopes[start:])
    return out


def _batch_envelopes(data: bytes) -> tuple[bytes, ...]:
    """The envelopes of a batch message. Only orderers publish to the stream, so a message
    that does not parse is a broken invariant of the stream, not a client's bad input: every
    orderer reads it the same way (as no envelopes) and stays in agreement."""
    try:
        return tuple(block_pb2.BlockData.FromString(data).envelopes)
    except DecodeError:
        logger.error("a batch message on the stream does not parse: ignored by every orderer")
        return ()
