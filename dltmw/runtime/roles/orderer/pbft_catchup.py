"""Block-level catch-up of a PBFT orderer replica that fell behind what its peers retain.

State transfer (`core.pbft.checkpoints`) only works while a peer still holds the decided
batches and commit certificates from our next sequence; peers keep `decided_retain` of them.
Beyond that, a replica fetches the committed blocks themselves from another replica's ledger
with the orderer's existing `Deliver` stream (orderer organisations may read blocks; no new RPC
or message is needed and the blocks carry their own proof), verifies each one — the hash chain
from our ledger head, and 2f+1 valid signatures of distinct configured orderers over its hash,
the check peers make — and hands the verified prefix to the orderer's core as an input, which
commits it and moves the replica with `Replica.jump` (see `dltmw.core.pbft.jump` for why that
is safe). A signer named by reference (a channel with `identity_references`) is resolved
through the config in force at our head (`Membership.resolved`) to the orderer it names and
counted as that orderer, once; one the config does not list, or whose signature is not that
orderer's, counts for nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc

from dltmw.aio.clock import utc_now
from dltmw.aio.rpc_errors import reconnects
from dltmw.core.block import block_hash, chain_error
from dltmw.core.config_update import is_config_update
from dltmw.core.handlers.pbft_orderer import FetchedBlocks
from dltmw.runtime.context import NodeContext
from dltmw.v1 import block_pb2, orderer_service_pb2, orderer_service_pb2_grpc

logger = logging.getLogger(__name__)

FETCH_BLOCKS_MAX = 512
# A fetch also stops once it holds this many bytes of blocks (it keeps them all in memory until
# they are verified and committed): 512 full blocks are up to 512 MiB at the 1 MiB block
# bound, ~70 MB at 100 kv transactions a block — a lagging replica's RSS spiked by that much.
# The core asks again at once when a fetch stopped here (`FetchedBlocks.more`).
FETCH_BYTES_MAX = 4 * 1024 * 1024
IDLE_S = 1.0
CALL_TIMEOUT_S = 30.0
Verify = Callable[[int, bytes, bytes], bool]
Resolve = Callable[[bytes], bytes]


def _unresolved(signer: bytes) -> bytes:
    return signer


async def fetch_blocks(
    ctx: NodeContext, channel_id: str, node_id: str, start: int
) -> tuple[list[block_pb2.Block], bool]:
    """Up to FETCH_BLOCKS_MAX committed blocks from `start` held by replica `node_id`, and
    whether it stopped at FETCH_BYTES_MAX (the peer may hold more); stops at the first IDLE_S
    without a block (the peer holds no more). Raises on an RPC failure."""
    seek = orderer_service_pb2.SeekInfo(
        channel_id=channel_id,
        start_block=start,
        stop_block=start + FETCH_BLOCKS_MAX - 1,
        follow=False,
        requester=ctx.signer.identity_bytes,
    )
    seek.timestamp.FromDatetime(utc_now())
    seek_bytes = seek.SerializeToString()
    request = orderer_service_pb2.DeliverRequest(
        seek_info=seek_bytes, signature=ctx.signer.sign(seek_bytes)
    )
    stub = orderer_service_pb2_grpc.OrdererServiceStub(await ctx.channel_to(node_id))
    call = stub.Deliver(request, timeout=CALL_TIMEOUT_S)
    blocks: list[block_pb2.Block] = []
    held = 0
    responses = aiter(call)
    try:
        for _ in range(FETCH_BLOCKS_MAX):
            response = await asyncio.wait_for(anext(responses), IDLE_S)
            blocks.append(response.block)
            held += response.block.ByteSize()
            if held >= FETCH_BYTES_MAX:
                return blocks, True
    except (TimeoutError, StopAsyncIteration):
        pass
    finally:
        call.cancel()
    return blocks, False


def verified_prefix(
    blocks: Sequence[block_pb2.Block],
    channel_id: str,
    height: int,
    last_hash: bytes,
    identities: Sequence[bytes],
    quorum: int,
    verify: Verify,
    resolve: Resolve = _unresolved,
) -> list[block_pb2.Block]:
    """The longest prefix of `blocks` that continues our chain, each block carrying `quorum`
    valid signatures of distinct configured orderers over its hash, up to and including the
    first config block: a config block may change the replica set (or turn identity references
    on), and the orderer core learns the config that holds for the next blocks only when it has
    committed it (docs/governance.md), so a fetch never verifies a block against a config no
    longer in force. `resolve`: the orderer identity a signer names by reference under that
    config (`Membership.resolved`; the bytes themselves otherwise)."""
    index = {identity: i for i, identity in enumerate(identities)}
    out: list[block_pb2.Block] = []
    for block in blocks:
        if block.header.number < height and not out:
            continue
        if chain_error(block, channel_id, height, last_hash) is not None:
            break
        digest = block_hash(block)
        signers: set[int] = set()
        for s in block.metadata.signatures:
            i = index.get(s.signer)
            if i is None:
                i = index.get(resolve(s.signer))
            if i is not None and i not in signers and verify(i, digest, s.signature):
                signers.add(i)
        if len(signers) < quorum:
            logger.warning("block %d from a peer lacks %d signatures", height, quorum)
            break
        out.append(block)
        height, last_hash = height + 1, digest
        if len(block.data.envelopes) == 1 and is_config_update(block.data.envelopes[0]):
            break  # the blocks after it may be signed by another replica set: fetch them anew
    return out


async def fetch_verified(
    ctx: NodeContext,
    channel_id: str,
    node_id: str,
    height: int,
    last_hash: bytes,
    identities: Sequence[bytes],
    quorum: int,
    verify: Verify,
    resolve: Resolve = _unresolved,
) -> FetchedBlocks:
    """Fetch from `node_id` and keep the verified prefix (empty when it has nothing newer);
    `resolve`: as for `verified_prefix`, under the config in force at `height`."""
    try:
        blocks, more = await fetch_blocks(ctx, channel_id, node_id, height)
    except grpc.aio.AioRpcError as exc:
        logger.info("block fetch from %s failed: %s", node_id, exc.details())
        if reconnects(exc):
            await ctx.forget(node_id)
        return FetchedBlocks(node_id, ())
    good = verified_prefix(
        blocks, channel_id, height, last_hash, identities, quorum, verify, resolve
    )
    return FetchedBlocks(node_id, tuple(good), more and len(good) == len(blocks))
