"""The config in force at each block of one channel: what the explorer names identities by
reference through (`view.py`).

A block is governed by the config the last config block below it applied (block 0 by its
own): its orderer signatures, creators and endorsers were checked against that config, which
names the nodes that sign by reference then. The current config may no longer name them — a
peer taken out, a certificate rotated (`channel update --remove-peer | --rotate-peer`) — so
resolving an older block's references through it showed a bare reference's hex.

Cost, per request: one point read of the ledger's config entry (`config_update.config_write`:
the current config and the block that applied it). A block after that block — the usual page,
the newest blocks — is governed by the current config: nothing more. An older one needs the
configs before it: they are found by replaying the chain from block 1 up to that block
(`core/config_replay.next_view`, as every peer applied them at commit), once per process and
channel: each block is read once, `SCAN_CHUNK` at a time, and the configs found are kept
(one per config block, a short list), so a later request below the scanned height is a
bisection.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from typing import Protocol, TypeVar

from dltmw.core.channel import ChannelView
from dltmw.core.config_replay import next_view
from dltmw.core.config_update import CONFIG_KEY, CONFIG_NAMESPACE, restored_view
from dltmw.core.genesis import read_genesis
from dltmw.ledger.backend import StateReader
from dltmw.v1 import block_pb2

SCAN_CHUNK = 100  # blocks per read while replaying (the peer's `proofs.SCAN_CHUNK`)
T = TypeVar("T")


class ChainReads(Protocol):
    """The reads made of a channel ledger here (`ledger/sqlite.ChannelLedger`)."""

    async def block(self, number: int) -> block_pb2.Block | None:
        """One block, or None."""
        ...

    async def blocks(self, start: int, stop: int) -> list[block_pb2.Block]:
        """Blocks `start` to `stop - 1` held, in order."""
        ...

    async def read_snapshot(self, fn: Callable[[StateReader], T]) -> T:
        """`fn` on one snapshot of committed state."""
        ...


class ConfigEpochs:
    """One channel's configs by the block that applied them (see the module docstring)."""

    def __init__(self, ledger: ChainReads) -> None:
        self.ledger = ledger
        self._applied: list[int] = []  # config blocks found by the replay, ascending; [0] = 0
        self._views: list[ChannelView] = []  # the config each applied
        self._replayed_to = 1  # blocks below it are replayed
        self._current: tuple[int, bytes, ChannelView] | None = None  # the config entry's
        self._lock = asyncio.Lock()  # one replay at a time

    async def view_at(self, number: int) -> ChannelView:
        """The config that governed block `number` (a block this ledger holds)."""
        async with self._lock:
            if not self._views:
                genesis = await self.ledger.block(0)
                if genesis is None:
                    raise LookupError("the ledger holds no block 0")
                self._applied, self._views = [0], [read_genesis(genesis)]
            applied, current = await self._current_config()
            if number > applied:
                return current
            await self._replay(number)
            return self._views[max(0, bisect.bisect_left(self._applied, number) - 1)]

    async def _current_config(self) -> tuple[int, ChannelView]:
        """(the block that applied the current config, that config), from the ledger's entry
        (none: block 0's). The view is built again only when the entry changed."""
        entry = await self.ledger.read_snapshot(lambda r: r.get(CONFIG_NAMESPACE, CONFIG_KEY))
        if entry is None:
            return 0, self._views[0]
        value, version = entry
        if self._current is None or self._current[:2] != (version.block_number, value):
            view = restored_view(value, self._views[0])
            self._current = (version.block_number, value, view)
        return self._current[0], self._current[2]

    async def _replay(self, number: int) -> None:
        """Replay blocks up to `number - 1` (the configs that may govern `number`)."""
        while self._replayed_to < number:
            stop = min(number, self._replayed_to + SCAN_CHUNK)
            chunk = await self.ledger.blocks(self._replayed_to, stop)
            if not chunk:
                return
            for block in chunk:
                view = next_view(self._views[-1], block)
                if view is not self._views[-1]:
                    self._applied.append(block.header.number)
                    self._views.append(view)
            self._replayed_to = chunk[-1].header.number + 1
