"""Drivers: the one place where the benchmark submits an operation and awaits its commit status.

The SDK may grow a batched or pipelined submit API; switching to it is an edit of
`GatewayDriver.execute` only. The other flows' drivers, and `make_driver` that picks one by
kind, are in `flow_drivers.py`. Every outcome is classified here, once: committed with a
validation code, or failed before commit with a reason (the gRPC ErrorInfo reason when the
server gave one, else the status code name), so the report's counts always add up.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from dltmw.bench.params import Op
from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of


@dataclass(frozen=True)
class Outcome:
    """What happened to one operation; `code` is None when it failed before commit."""

    tx_id: str
    code: int | None
    failure: str | None
    started: float
    finished: float
    block: int = -1
    detail: str = ""  # the server's message for a failure (the report keeps one per reason)
    index: int = -1  # tx_index within `block` (the order peers validated in)

    @property
    def latency_s(self) -> float:
        """Submit-to-commit-status time."""
        return self.finished - self.started


class Driver(Protocol):
    """Executes operations; safe to call from many concurrent tasks."""

    async def execute(self, op: Op) -> Outcome:
        """Submit `op`, await its commit status, never raise for a per-transaction failure."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def classify(exc: BaseException) -> str:
    """A short, stable failure label for an exception raised while submitting."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return reason_of(exc) or exc.code().name
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "CLIENT_TIMEOUT"
    return type(exc).__name__


def describe(exc: BaseException) -> str:
    """The human-readable message of a failure, bounded."""
    text = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
    return (text or type(exc).__name__)[:300]


class GatewayDriver:
    """Endorse, submit and await the commit status through Gateway clients (round-robin)."""

    def __init__(self, clients: Sequence[GatewayClient]) -> None:
        if not clients:
            raise ValueError("GatewayDriver needs at least one client")
        self.clients = list(clients)
        self._next = itertools.cycle(self.clients)

    @staticmethod
    async def connect(network_dir: Path, client_ids: Sequence[str]) -> GatewayDriver:
        """Connect one GatewayClient per client id (each to its organisation's gateway)."""
        clients: list[GatewayClient] = []
        try:
            for cid in client_ids:
                clients.append(await GatewayClient.connect(network_dir, cid))
        except BaseException:
            for c in clients:
                await c.close()
            raise
        return GatewayDriver(clients)

    async def execute(self, op: Op) -> Outcome:
        """One transaction through the SDK's submit_transaction."""
        client = next(self._next)
        started = time.perf_counter()
        try:
            done = await client.submit_transaction(op.channel, op.contract, op.function, *op.args)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            return Outcome(
                "", None, classify(exc), started, time.perf_counter(), detail=describe(exc)
            )
        return Outcome(
            done.tx_id,
            int(done.status.result),
            None,
            started,
            time.perf_counter(),
            int(done.status.block_number),
            index=int(done.status.tx_index),
        )

    async def close(self) -> None:
        """Close every client."""
        for c in self.clients:
            await c.close()
