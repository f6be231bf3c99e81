"""What every role of a node shares: identity, TLS, addresses, limits, clock, connections.

Connections are made by the node's `transport` (`runtime/transport.py`): grpc.aio with mutual
TLS, or the simulator's in-process network.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from dltmw.aio.tasks import TaskOwner
from dltmw.core.errors import TransientError
from dltmw.core.identity import SigningIdentity
from dltmw.ledger.retry import DEFAULT_RETRY, RetryPolicy
from dltmw.net.addressbook import AddressBook
from dltmw.rpc.channel_options import DEFAULT_KEEPALIVE, Keepalive
from dltmw.rpc.tls import TlsMaterial, link_tls
from dltmw.rpc.tracing import NO_TRACING, Tracer
from dltmw.runtime.config import Limits
from dltmw.runtime.metrics import NodeMetrics
from dltmw.runtime.transport import GRPC, Transport
from dltmw.v1 import errors_pb2

RESOLVE_TIMEOUT_S = 10.0


@dataclass
class NodeContext:
    """Shared services of one node process."""

    node_id: str
    org_id: str
    signer: SigningIdentity
    tls: TlsMaterial
    addresses: AddressBook
    limits: Limits
    keepalive: Keepalive = DEFAULT_KEEPALIVE
    tasks: TaskOwner = field(default_factory=TaskOwner)  # every long-lived task of the node
    storage_retry: RetryPolicy = DEFAULT_RETRY  # how every store retries a transient fault
    transport: Transport = GRPC  # how channels to other nodes are made
    metrics: NodeMetrics = field(default_factory=NodeMetrics)  # this node's own registry
    tracer: Tracer = NO_TRACING  # OpenTelemetry spans per transaction (`[tracing]`), off by default
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def channel_to(self, node_id: str) -> grpc.aio.Channel:
        """A cached channel to another node; UNAVAILABLE if it has no address."""
        existing = self._channels.get(node_id)
        if existing is not None:
            return existing
        # Resolve OUTSIDE the lock: waiting up to RESOLVE_TIMEOUT_S for one absent node must not
        # stall calls to other nodes, nor forget()/close() during shutdown.
        address = await self.addresses.resolve(node_id, RESOLVE_TIMEOUT_S)
        if address is None:
            raise TransientError(
                errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"node {node_id} has no address"
            )
        async with self._lock:
            existing = self._channels.get(node_id)
            if existing is not None:  # another task connected while we resolved
                return existing
            name, tls = link_tls(self.tls, self.addresses, node_id)
            channel = self.transport.channel(
                address, name, tls, self.limits.max_message_bytes, self.keepalive
            )
            self._channels[node_id] = channel
            return channel

    async def forget(self, node_id: str, failed: grpc.aio.Channel | None = None) -> None:
        """Drop a channel after a failure, so the next call re-resolves (node restarted).

        `failed`: the channel instance the failing call used. Only that one is dropped: when
        another caller already replaced it, the new channel carries other calls (a push stream,
        a collection's asks) that closing it would cancel, and it has not failed."""
        async with self._lock:
            current = self._channels.get(node_id)
            if failed is not None and current is not failed:
                return  # already replaced (or dropped): the failed one is not cached any more
            channel = self._channels.pop(node_id, None)
        if channel is not None:
            await channel.close(None)

    async def close(self) -> None:
        """Close every outbound channel."""
        async with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)
