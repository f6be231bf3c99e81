"""When the privacy manager drops its cached channel to another node, and which one.

The channel to a node (`NodeContext.channel_to`) is shared: the Push stream of every private
channel to that node, the collections' AgreeBatch calls, PrivateStateHash and Resend all ride
on it, and closing it cancels every call in flight on it. So a failed call drops it only when
the connection itself is in doubt — UNAVAILABLE, or a failure below gRPC (no address, a refused
or reset connection): the node stopped or restarted at another address — and only the channel
instance that call used (`NodeContext.forget(node_id, failed)`), never a newer one another
caller already dialled.

Not on a BLAME_PEER answer (UNKNOWN, INTERNAL, DATA_LOSS; `aio/rpc_errors.py`): that status came
back over the connection, so the connection works; dropping it cancelled the concurrent pushes
to that node, which then degraded to queued delivery with ERROR lines (review of priv14). The
answer itself is the caller's to judge (a refusal of that item, a failed collection).
"""

from __future__ import annotations

import grpc

from dltmw.aio.rpc_errors import Verdict, classify, reconnects
from dltmw.runtime.context import NodeContext


def connection_lost(exc: BaseException) -> bool:
    """Does `exc` say the connection to the node is bad (not merely its answer)?"""
    return reconnects(exc) and classify(exc) is not Verdict.BLAME_PEER


async def forget_if_gone(
    ctx: NodeContext, node_id: str, failed: grpc.aio.Channel | None, exc: BaseException
) -> None:
    """Drop the channel `failed` to `node_id` when `exc` says its connection is bad (module
    docstring); the next call re-resolves the node's address."""
    if failed is not None and connection_lost(exc):
        await ctx.forget(node_id, failed)
