"""SDK hygiene (finding F5): `GatewayClient.close()` cancels everything the client started, and a
stream that fails leaves no "Future exception was never retrieved" and no "Task was destroyed
but it is pending" behind — checked with the event loop's exception handler and the garbage
collector against a real network.

On the old main, close() left the Transact stream's queue getter task pending (one per client),
and when the Transact stream failed, the commit-status futures of the submissions it carried were
failed and dropped unread.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import gateway_service_pb2 as G
from integration.test_input_bounds import TWO_ORG
from integration.wire import edit_node_toml, started_network

pytestmark = pytest.mark.integration
ITEMS_MAX = 4  # the gateway's items_per_request_max here: a bigger Transact batch breaks the stream
LEAK_WORDS = ("never retrieved", "destroyed but it is pending", "was never awaited")


async def test_close_cancels_everything_and_failed_streams_leave_nothing(tmp_path) -> None:
    def configure(net: Path) -> None:
        edit_node_toml(net, "peer0.org1", {"limits": {"items_per_request_max": ITEMS_MAX}})

    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    before = asyncio.all_tasks()
    try:
        with started_network(tmp_path, TWO_ORG, configure) as (net, _):
            c = await GatewayClient.connect(net, "user1.org1")
            assert (await c.submit_transaction("trades", "kv", "put", "a", "1")).status.result == 1
            # Envelopes endorsed one by one, then submitted at once over the Transact stream:
            # one request of more than ITEMS_MAX items, so the gateway ends the stream.
            envelopes = []
            for i in range(3 * ITEMS_MAX):
                signed, _ = c.proposal("trades", "kv", "put", [f"k{i}", "v"])
                envelopes.append(c.envelope((await c.endorse(signed)).prepared_payload))
            assert c.pipeline is not None
            outcomes = await asyncio.gather(
                *(c.pipeline.submit_committed(G.SubmitRequest(envelope=e), 30) for e in envelopes),
                return_exceptions=True,
            )
            failed = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
            assert failed, outcomes
            assert {reason_of(f) for f in failed} == {"LIMIT_EXCEEDED"}
            # An events stream the caller abandons, then the client works on and closes.
            async for _ in c.events("trades"):
                break
            assert (await c.submit_transaction("trades", "kv", "put", "b", "2")).status.result == 1
            await c.close()
            for _ in range(100):  # grpc ends the closed channel's calls within a few loop turns
                left = asyncio.all_tasks() - before - {asyncio.current_task()}
                if not left:
                    break
                await asyncio.sleep(0.02)
            assert not left, f"tasks left after close(): {left}"
            del outcomes, failed
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    leaks = [str(r) for r in reported if any(w in str(r) for w in LEAK_WORDS)]
    assert not leaks, leaks
