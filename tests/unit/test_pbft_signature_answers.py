"""A PBFT orderer answers a replica still collecting signatures of a block it committed
(`SignatureOf`) from memory for recent blocks: it read the whole block back from the ledger for
each answer (1.4-1.7 answers per block per replica at n = 4). The ledger below the executor is
a stand-in that counts reads; what is sent is checked field by field."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from dltmw.core.block import block_hash
from dltmw.core.handlers.pbft_orderer import CommittedBlock
from dltmw.runtime.blockfeed import BlockSignal
from dltmw.runtime.roles.orderer.pbft import SIGNED_KEPT, PbftOrdererExecutor
from dltmw.v1 import block_pb2, identity_pb2, replica_pb2

ME, MINE = 1, b"identity-of-replica-1"


def block(number: int) -> block_pb2.Block:
    out = block_pb2.Block()
    out.header.channel_id = "ch"
    out.header.number = number
    out.header.previous_hash = bytes(32)
    out.header.data_hash = bytes([number % 256]) * 32
    for signer, signature in ((b"identity-of-replica-0", b"theirs"), (MINE, b"mine-%d" % number)):
        out.metadata.signatures.append(identity_pb2.Signature(signer=signer, signature=signature))
    return out


class Ledger:
    def __init__(self) -> None:
        self.blocks: dict[int, block_pb2.Block] = {}
        self.reads = 0

    async def commit_block(self, b: block_pb2.Block, _private: object, _writes: object) -> None:
        self.blocks[b.header.number] = b

    async def block(self, number: int) -> block_pb2.Block | None:
        self.reads += 1
        return self.blocks.get(number)


class Link:
    def __init__(self) -> None:
        self.sent: list[replica_pb2.BlockSignature] = []

    def send(self, message: replica_pb2.BlockSignature) -> None:
        self.sent.append(message)


def executor(ledger: Ledger) -> PbftOrdererExecutor:
    """The executor over the few channel parts `apply` and the answers use (in a loop)."""
    channel: Any = SimpleNamespace(
        ledger=ledger,
        me=ME,
        identities={0: b"identity-of-replica-0", ME: MINE},
        new_block=BlockSignal(),
    )
    return PbftOrdererExecutor(channel)


def expected(number: int) -> replica_pb2.BlockSignature:
    return replica_pb2.BlockSignature(
        number=number,
        block_hash=block_hash(block(number)),
        replica=ME,
        signature=b"mine-%d" % number,
    )


def test_a_recent_block_is_answered_from_memory_an_old_one_from_the_ledger() -> None:
    ledger, link = Ledger(), Link()

    async def run() -> PbftOrdererExecutor:
        ex = executor(ledger)
        for number in range(1, SIGNED_KEPT + 11):
            await ex.apply([CommittedBlock(block(number))])
        newest = SIGNED_KEPT + 10
        await ex._send_signature_of(link, newest)
        assert link.sent == [expected(newest)]
        assert ledger.reads == 0  # from memory
        await ex._send_signature_of(link, 1)  # fell out of the kept window
        assert link.sent[-1] == expected(1)
        assert ledger.reads == 1
        await ex._send_signature_of(link, 10_000)  # never committed here: nothing to answer
        assert len(link.sent) == 2
        return ex

    assert len(asyncio.run(run())._signed) == SIGNED_KEPT  # bounded


def test_the_kept_signatures_stay_bounded_across_a_gap_in_block_numbers() -> None:
    """Blocks jumped over (fetched, not committed here) leave a gap in the numbers: what was
    kept before it still leaves as newer blocks commit."""

    async def run() -> int:
        ex = executor(Ledger())
        for number in [*range(1, 11), *range(1000, 1000 + SIGNED_KEPT)]:
            await ex.apply([CommittedBlock(block(number))])
        return len(ex._signed)

    assert asyncio.run(run()) == SIGNED_KEPT
