"""The ordering role of one channel with ordering "jetstream" (crash-tolerant, Kafka-style).

Broadcast: admitted envelopes are appended to the channel's replicated stream
(`jetstream_log.StreamLog`) and each submitter is answered once JetStream acknowledged its
envelope (stored by a majority of the nats-servers). The orderer keeps no queue of its own: the
stream is the queue. Losing the majority of the nats-servers makes Broadcast refuse with
UNAVAILABLE (ORDERING_UNAVAILABLE); it accepts again once they are back.

Cutting: a supervised feeder consumes the stream from the position after this orderer's last
block and `put`s every entry into the ONE driver, which steps the pure `JetStreamCutter`
(`core/handlers/jetstream.py`). Every orderer of the channel cuts the same blocks from the same
stream. Executing the effects (`JetStreamExecutor`): each decided block is signed by this
orderer and committed with its stream position in one sqlite transaction (the position is a
world-state entry of the orderer's own ledger, `_jetstream/position`), then Deliver streams are
woken; markers the core asks for are published to the stream. Peers accept a block signed by
any configured orderer of the channel (`peer/committer.check_orderer_signatures`: one valid
signature of a configured orderer), so they may follow any orderer.

Restart: the core starts from the ledger's height, last hash and stored position, with nothing
pending; the feeder resumes right after the position, so the entries not yet in a block are
consumed again and cut into the same blocks every other orderer cut (or will cut).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence

from dltmw.aio.tasks import cancel_and_wait
from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView, CurrentConfig
from dltmw.core.config_update import config_write
from dltmw.core.errors import DltmwError
from dltmw.core.handlers.jetstream import CutBlock, Entry, JetStreamCutter
from dltmw.core.identity import SigningIdentity
from dltmw.core.light_client import block_signer
from dltmw.core.rwset import StateWrite, Version
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.runtime.blockfeed import BlockSignal
from dltmw.runtime.config_file import JetStreamTable
from dltmw.runtime.context import NodeContext
from dltmw.runtime.driver import STOP_GRACE_S, Driver
from dltmw.runtime.executor import Executing
from dltmw.runtime.roles.orderer.jetstream_log import StreamLog, unavailable
from dltmw.runtime.roles.orderer.solo import TICK_S, OrdererChannel, cutter_for, stopped

logger = logging.getLogger(__name__)
POSITION_NAMESPACE = "_jetstream"
POSITION_KEY = "position"

JetStreamDriver = Driver[Entry, Entry, None, CutBlock, int, None]


def position_write(position: int, taken: int, block_number: int) -> StateWrite:
    """The world-state write that records where in the stream a block ends: the last entry it
    consumed whole (8 bytes) and, when it ended inside the next entry (a batch), how many of
    that entry's envelopes it took (4 more bytes; absent when 0, as before batches existed)."""
    value = position.to_bytes(8, "big") + (taken.to_bytes(4, "big") if taken else b"")
    return StateWrite(POSITION_NAMESPACE, POSITION_KEY, value, Version(block_number, 0))


async def stored_position(ledger: ChannelLedger) -> tuple[int, int]:
    """(position, taken) of the ledger's last block ((0, 0): none cut from the stream yet)."""
    entry = await ledger.read_snapshot(lambda r: r.get(POSITION_NAMESPACE, POSITION_KEY))
    if entry is None:
        return 0, 0
    value = bytes(entry[0])
    return int.from_bytes(value[:8], "big"), int.from_bytes(value[8:12], "big")


class JetStreamExecutor(Executing[Entry, None, CutBlock, int, None]):
    """Sign and commit each block with its stream position; publish the markers asked for."""

    def __init__(
        self,
        ledger: ChannelLedger,
        signer: SigningIdentity,
        new_block: BlockSignal,
        config: CurrentConfig,
        log: StreamLog,
    ) -> None:
        self._ledger = ledger
        self._signer = signer
        self._config = config
        self._log = log
        self.new_block = new_block

    async def apply(self, decided: Sequence[CutBlock]) -> None:
        for item in decided:
            block = item.block
            block.metadata.signatures.add(
                signer=block_signer(self._config.view, self._signer.identity_bytes),
                signature=self._signer.sign(block_hash(block)),
            )
            number = block.header.number
            writes = [position_write(item.position, item.taken, number)]
            if item.config is not None:
                writes.append(config_write(item.config, number))
            await self._ledger.commit_block(block, (), writes)
            if item.config is not None:  # admission checks against it from now on
                self._config.replace(item.config)
        self.new_block.committed()

    async def send(self, messages: Sequence[tuple[int, int]]) -> None:
        await self._log.mark([number for _, number in messages])


class JetStreamOrdererChannel(OrdererChannel):
    """Orders one channel on the replicated stream; Deliver is inherited from the solo role."""

    def __init__(
        self,
        ctx: NodeContext,
        view: ChannelView,
        ledger: ChannelLedger,
        settings: JetStreamTable,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(ctx, view, ledger)
        self.log = StreamLog(view.channel_id, settings, f"{ctx.node_id}/{view.channel_id}", tls)
        self.core: JetStreamCutter | None = None
        self.driver: JetStreamDriver | None = None
        self._fed = 0  # the last stream sequence put into the driver
        self._feeder: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect to the stream, restore the cutter from the ledger, start driver and feeder."""
        await self.log.open()
        position, taken = await stored_position(self.ledger)
        self.core = JetStreamCutter(
            self.view.channel_id,
            self.ledger.height,
            self.ledger.last_hash,
            position,
            cutter_for(self.view.config.batch),
            view=self.view,
            cutter_for=cutter_for,
            taken=taken,
        )
        executor = JetStreamExecutor(
            self.ledger, self.ctx.signer, self.new_block, self.channel_config, self.log
        )
        self.driver = Driver(
            f"jetstream-{self.view.channel_id}",
            self.core,
            executor,
            self.ctx.tasks,
            inbox_max=self.ctx.limits.queue_max,
            tick_s=TICK_S,
            metrics=self.ctx.metrics,
            downstream_idle=self.downstream_idle,
        )
        await self.driver.start()
        self._fed = self.core.position
        name = f"jetstream-feed-{self.view.channel_id}"
        self._feeder = self.ctx.tasks.forever(name, self._feed)

    async def _feed(self) -> None:
        """Consume the stream after the last entry fed (restarted by the task owner on a
        transient failure, from where it stopped) into the driver."""
        driver = self.driver
        if driver is None:
            raise RuntimeError("jetstream feeder started before its driver")
        try:
            async for entry in self.log.entries(self._fed):
                if entry.seq > self._fed + 1:  # resubscribe from where we are: no gaps
                    raise unavailable(f"stream entry {entry.seq} arrived after {self._fed}")
                if entry.seq == self._fed + 1:
                    await driver.put(entry)
                    self._fed = entry.seq
        except (DltmwError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the client's own errors: the log is unreachable for now
            raise unavailable(f"consuming the stream failed: {exc!r}") from exc
        raise unavailable("the subscription ended")  # the connection closed

    async def stop(self) -> None:
        """Stop the feeder, the driver (its step in progress finishes), then the connection."""
        feeder, self._feeder = self._feeder, None
        if feeder is not None:
            await cancel_and_wait(feeder, STOP_GRACE_S)
        if self.driver is not None:
            await self.driver.stop()
        await self.log.close()

    async def submit_many(self, envelopes: Sequence[bytes]) -> list[DltmwError | None]:
        """Append admitted envelopes to the stream; returns once each is acknowledged by
        JetStream (None) or refused (ORDERING_UNAVAILABLE)."""
        if self.driver is None:
            raise stopped()
        return await self.log.append(envelopes)

    def _nudge(self) -> None:
        if self.driver is not None:
            self.driver.nudge()
