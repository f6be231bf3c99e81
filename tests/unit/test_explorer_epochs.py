"""The config in force at a block, as the explorer finds it (`runtime/explorer/epochs.py`): the
config applied by the last config block below the block (block 0's for the first ones), found
without scanning the chain per request — a block after the current config's block reads no
block at all, an older one replays the chain once, each block read once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crosschain_parties import config_update_block, make_world

from dltmw.core.config_update import CONFIG_KEY, CONFIG_NAMESPACE
from dltmw.core.rwset import Version
from dltmw.runtime.explorer.epochs import ConfigEpochs
from dltmw.v1 import block_pb2, config_pb2

TIMEOUTS = {0: 100, 100: 150, 200: 175}  # config block -> the batch timeout its config sets


class Chain:
    """A ledger's reads over an in-memory chain; counts every block read."""

    def __init__(self, blocks: list[block_pb2.Block], config: bytes, applied: int) -> None:
        self._blocks = blocks
        self._entry = (config, Version(applied, 0))
        self.read: list[int] = []

    async def block(self, number: int) -> block_pb2.Block | None:
        return self._blocks[number] if number < len(self._blocks) else None

    async def blocks(self, start: int, stop: int) -> list[block_pb2.Block]:
        found = self._blocks[start:stop]
        self.read += [b.header.number for b in found]
        return found

    async def read_snapshot(self, fn: Callable[[Any], Any]) -> Any:
        entry = self._entry

        class Reader:
            def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
                return entry if (namespace, key) == (CONFIG_NAMESPACE, CONFIG_KEY) else None

        return fn(Reader())


def _chain() -> Chain:
    """Blocks 0..249 of a channel whose blocks 100 and 200 are config updates."""
    world, chan, _ = make_world()
    assert chan.config.batch.timeout_ms == TIMEOUTS[0]
    orderer = chan.orderers[0]
    while len(chan.blocks) < 250:
        number = len(chan.blocks)
        if number in TIMEOUTS:
            new = config_pb2.ChannelConfig()
            new.CopyFrom(chan.config)
            new.sequence += 1
            new.batch.timeout_ms = TIMEOUTS[number]
            config_update_block(world, chan, new, [orderer])
            chan.config = new
        else:
            chan.cut([f"envelope {number}".encode()], [orderer])
    return Chain(chan.blocks, chan.config.SerializeToString(), 200)


async def test_each_block_is_governed_by_the_config_before_it_and_read_once() -> None:
    chain = _chain()
    epochs = ConfigEpochs(chain)

    async def timeout_at(number: int) -> int:
        return (await epochs.view_at(number)).config.batch.timeout_ms

    assert await timeout_at(240) == 175  # after the current config's block: nothing replayed
    assert chain.read == []
    assert await timeout_at(150) == 150  # blocks 1..149 replayed: block 100's config
    assert chain.read == list(range(1, 150))
    # below the replayed height: no block read again (red if the chain is scanned per request)
    for number, timeout in ((0, 100), (1, 100), (99, 100), (100, 100), (101, 150), (149, 150)):
        assert await timeout_at(number) == timeout, number  # a config block: the config before
    assert chain.read == list(range(1, 150))
    assert await timeout_at(200) == 150  # the current config's own block: the one before it
    assert chain.read == list(range(1, 200))
    assert await timeout_at(201) == 175
    assert chain.read == list(range(1, 200))
