"""The server half of the simulated transport: a grpc.aio server serving `sim/wire.py` calls.

`SimServer` takes handlers the way `rpc/boundary.add_service` registers them
(`add_generic_rpc_handlers`, `add_registered_method_handlers`) and runs each call's handler in a
task of the server's incarnation, exactly as grpc.aio calls it: request bytes through the
handler's deserializer, responses through its serializer, a `SimServicerContext` whose
`auth_context()` carries the caller's TLS certificate (so `check_tls_org` sees what mTLS would
show), `peer()` names the caller's connection, and `abort` / `abort_with_status` end the call
with that status on the client side. A handler that raises anything else answers UNKNOWN, as
grpc does, and is recorded in `SimNetwork.unexpected` (a bug in node code). Envelopes a
Broadcast answer accepts are noted in `SimNetwork.acknowledged` as the handler answers (whether
or not the answer then reaches the caller), for the checkers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

import grpc

from dltmw.rpc.inproc import Status
from dltmw.rpc.inproc_server import Handler, HandlerTable, Refused, ServicerContextBase, identity
from dltmw.sim.vloop import OWNER, Owner
from dltmw.sim.wire import Exchange, SimNetwork
from dltmw.v1 import orderer_service_pb2

logger = logging.getLogger(__name__)


class SimServicerContext(ServicerContextBase):
    """The servicer context of one simulated call (the parts servicers use; the rest is the
    in-process transport's, `rpc/inproc_server.ServicerContextBase`)."""

    _exchange: Exchange

    def auth_context(self) -> dict[str, list[bytes]]:
        """What mutual TLS proves about the caller."""
        return {
            "transport_security_type": [b"ssl"],
            "x509_pem_cert": [self._exchange.client.cert_pem],
        }

    def peer(self) -> str:
        """The caller's connection."""
        return self._exchange.client.connection

    async def write(self, message: Any) -> None:
        """A response message (handlers that write instead of yielding, e.g. health)."""
        self._exchange.respond(self._serialize(message))

    def time_remaining(self) -> float | None:
        """No deadline is propagated to servers here."""
        return None


class SimServer(HandlerTable):
    """The server of one node incarnation on the simulated network."""

    def __init__(self, net: SimNetwork, owner: Owner, node_id: str, max_message_bytes: int) -> None:
        super().__init__(max_message_bytes)
        self._net = net
        self.owner = owner
        self.node_id = node_id
        self._context = contextvars.copy_context()
        self._context.run(OWNER.set, owner)  # handler tasks belong to the incarnation
        self._serving = False

    # --- what rpc/boundary.add_service and Node use --------------------------------------

    def add_secure_port(self, address: str, _credentials: object = None) -> int:
        """The simulated network routes by node id: the port is only a label."""
        return 1

    async def start(self) -> None:
        """Answer for the node from now on."""
        self._serving = True
        self._net.register(self)

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls, let running ones finish within `grace`, then cancel them."""
        self._serving = False
        self._net.unregister(self)
        mine = sorted((e for e in self._net.open_calls if e.server is self), key=lambda e: e.serial)
        tasks = [e.server_task for e in mine if e.server_task is not None]
        if tasks and grace:
            await asyncio.wait(tasks, timeout=grace)
        for exchange in mine:
            exchange.break_(Status(grpc.StatusCode.UNAVAILABLE, "server shutting down"))

    # --- serving -------------------------------------------------------------------------

    def serve(self, exchange: Exchange) -> bool:
        """Start the handler of `exchange` in a task of this incarnation."""
        handler = self.handler(exchange.path)
        if handler is None or not self._serving:
            return False
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(exchange, handler), context=self._context.copy())
        exchange.server_task = task
        return True

    async def _run(self, exchange: Exchange, handler: Handler) -> None:
        serialize = handler.response_serializer or identity
        context = SimServicerContext(exchange, serialize)
        try:
            async for response in self._responses(exchange, handler, context):
                if isinstance(response, orderer_service_pb2.BroadcastResponse):
                    self._net.acknowledged.extend(
                        (self.node_id, r.tx_id) for r in response.results if r.accepted
                    )
                exchange.respond(serialize(response))
        except grpc.aio.AbortError:
            exchange.finish(context.aborted or Status(grpc.StatusCode.UNKNOWN, "aborted"))
            return
        except Refused as refused:
            exchange.finish(refused.status)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            what = f"{self.node_id} {exchange.path}: {exc!r}"
            if self.owner.alive:
                self._net.unexpected.append(what)
                logger.error("servicer raised (a bug): %s", what, exc_info=exc)
            exchange.finish(Status(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}"))
            return
        exchange.finish(context.final_status())

    async def _next_request(self, exchange: Exchange) -> Any:
        return await exchange.requests.queue.get()
