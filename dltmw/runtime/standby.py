"""A standby peer or vault node: the active's identity on its own data, address and TLS certificate,
idle until promoted (issue 20 item 6, docs/operations.md "Standby and failover").

Theory of operation. A standby's node.toml names its active (`[node] standby_of`). It holds the
active's identity certificate and signing key, so its roles act as the active (`NodeConfig.
identity_id`): its peer joins the same channels and pulls every block by Deliver from the
orderers like any peer, so its ledger and world state stay current. Everything else the active
does for others — endorsing, the gateway, events, private pushes — is refused at the request
boundary (`gate`, FAILED_PRECONDITION / STANDBY_NOT_PROMOTED) until it is promoted; only health,
reflection, AdminService (status, audit) and StandbyService answer. Two nodes serving one
identity at once would sign conflicting answers, so promotion is fenced: `promote` first asks
the active's published address for a health check, and any answer within HEALTH_TIMEOUT_S
refuses the promotion (ACTIVE_STILL_ALIVE) with nothing changed. Only a connection failure or a
timeout counts as "not alive".

On promotion it writes a marker file durably (a restart stays promoted), opens the gate, and
publishes its own address under the active's node id in the local address book, so every node
and client that reconnects to the active's id reaches it (`NodeContext.channel_to` re-resolves
after `forget`). Rules a reader must keep: the marker is written before the gate opens and
before anyone hears of the promotion; a standby never publishes under the active's id unless
promoted.

Fencing a revived active. Before the promoted standby publishes under the active's id it writes
a durable fence record (`AddressBook.supersede`: `<node id>.superseded`, naming the standby). A
node that starts and finds itself superseded neither publishes its address nor serves: its gate
(`superseded_gate`) refuses everything but health and reflection with ACTIVE_SUPERSEDED, so a
restarted old active cannot take its identity back, endorse, sign or answer clients. The fence
lives in the local address book (one host); across hosts the operator retires the old active.

Replication (`follow`). Until promoted, the standby pulls its active's private payloads every
FOLLOW_S: the privacy manager's Resend, asked by this node — which holds the active's identity
and privacy key, so the active serves it exactly what it holds for itself — each payload checked
as a recovered one (`PrivacyManager.replicate_from`). With the ledger it follows by Deliver, its
private executor then derives the same private state. Asynchronous: a payload the active
acknowledged less than one pass before it died is not on the standby (the other recipients hold
it: `Recover` on the promoted standby fetches it). A failed pass (the active down, or refusing)
is logged and retried; the loop ends at promotion. A standby of a vault node pulls its
active's vault the same way (`VaultRole.replicate_from`: ListTransactions as the active's own
identity, each new transaction verified as a delivery, runtime/roles/vault/recovery.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dltmw.aio.files import write_durably
from dltmw.core.errors import ClientError, DltmwError
from dltmw.runtime.context import NodeContext
from dltmw.runtime.faults import is_transient
from dltmw.v1 import errors_pb2

logger = logging.getLogger(__name__)
R = errors_pb2
PROMOTED_FILE = "promoted"  # in the data dir: this standby was promoted
HEALTH_TIMEOUT_S = 2.0  # an active that does not answer within this is taken as dead
# What an unpromoted standby answers: its health, reflection, its status and audit, promotion.
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    "/dltmw.v1.AdminService/",
    "/dltmw.v1.StandbyService/",
)
# Codes that mean the active did not answer (its process is gone or hung), so promotion may go on.
SILENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
FOLLOW_S = 0.5  # pause between two replication passes
T = TypeVar("T")


class Replicating(Protocol):
    """What `follow` needs of the privacy manager (`runtime/roles/privacy/manager.py`)."""

    @property
    def channels(self) -> Mapping[str, object]:
        """The private channels, by id."""
        ...

    async def replicate_from(
        self, channel_id: str, node_id: str, recheck: Sequence[bytes] = ()
    ) -> list[bytes]:
        """One replication pass of a channel from `node_id`; the payload hashes stored."""
        ...


class VaultReplicating(Protocol):
    """What `follow` needs of the vault role (`runtime/roles/vault/vault.py`)."""

    async def replicate_from(self, active: str) -> int:
        """One replication pass of the vault from `active`; transactions recorded."""
        ...


def superseded_gate(node_id: str, by: str) -> Callable[[str], None]:
    """The request gate of a revived active whose standby `by` was promoted: everything but
    health and reflection is refused (ACTIVE_SUPERSEDED), so one identity never serves twice."""

    def gate(path: str) -> None:
        if path.startswith(OPEN_PREFIXES[:2]):  # health, reflection
            return
        raise ClientError(
            R.ERROR_REASON_ACTIVE_SUPERSEDED,
            f"{path}: {by} was promoted and serves as {node_id}; this old active refuses"
            " everything (retire it, or make it the new standby)",
            {"standby": by},
        )

    return gate


class Standby:
    """The standby state of one node: whether it was promoted, the gate, and promotion."""

    def __init__(
        self, ctx: NodeContext, active_id: str, data_dir: Path, own_id: str = "standby"
    ) -> None:
        self.ctx = ctx
        self.active_id = active_id
        self.own_id = own_id  # its own node id (its roles act as `active_id`)
        self._marker = data_dir / PROMOTED_FILE
        self.promoted = self._marker.exists()
        self.address = ""  # its own serving address, set by the node once it serves
        self._lock = asyncio.Lock()

    def gate(self, path: str) -> None:
        """Refuse RPC `path` while not promoted (the request boundary calls this first)."""
        if self.promoted or path.startswith(OPEN_PREFIXES):
            return
        raise ClientError(
            R.ERROR_REASON_STANDBY_NOT_PROMOTED,
            f"{path}: this node is a standby of {self.active_id} and is not promoted"
            " (ask the active, or run `dltmw failover` if it is down)",
            {"active": self.active_id},
        )

    def publish(self) -> None:
        """Publish the serving address under the active's id, if promoted (start, promotion),
        after the fence that keeps a revived active out (`superseded_gate`)."""
        if self.promoted and self.address:
            book = self.ctx.addresses
            if book.superseded_by(self.active_id) != self.own_id:
                book.supersede(self.active_id, self.own_id)
            book.publish(self.active_id, self.address)

    def withdraw(self) -> None:
        """Remove the active-id record at stop, if it still names this node."""
        if self.promoted and self.address:
            self.ctx.addresses.withdraw(self.active_id, self.address)

    async def promote(self) -> bool:
        """Promote unless the active answers; returns whether it was promoted already.
        ACTIVE_STILL_ALIVE (nothing changed) when the active answers a health check."""
        async with self._lock:
            if self.promoted:
                return True
            if await self.active_answers():
                raise ClientError(
                    R.ERROR_REASON_ACTIVE_STILL_ALIVE,
                    f"the active {self.active_id} still answers: stop it before promoting",
                    {"active": self.active_id},
                )
            await asyncio.to_thread(write_durably, self._marker, "promoted\n")
            self.promoted = True
            self.publish()
            logger.warning("standby promoted: now serving as %s", self.active_id)
            return False

    async def follow(self, privacy: Replicating | None, vault: VaultReplicating | None) -> None:
        """Until promoted, pull the active's private payloads and vault every FOLLOW_S (module
        docstring). A failed pass is logged, the active re-resolved, and the next pass tries
        again: a standby must outlive its active."""
        recheck: dict[str, list[bytes]] = {}
        while not self.promoted:
            for channel_id in sorted(privacy.channels) if privacy is not None else []:
                step = privacy.replicate_from(  # type: ignore[union-attr]
                    channel_id, self.active_id, recheck.get(channel_id, [])
                )
                stored = await self._pass(channel_id, step)
                if stored is not None:
                    recheck[channel_id] = stored
            if vault is not None:
                await self._pass("the vault", vault.replicate_from(self.active_id))
            await asyncio.sleep(FOLLOW_S)

    async def _pass(self, what: str, step: Awaitable[T]) -> T | None:
        """One replication step's result, or None after logging its failure (never raises)."""
        try:
            return await step
        except (DltmwError, grpc.aio.AioRpcError) as exc:
            level = logging.INFO if is_transient(exc) else logging.WARNING
            logger.log(level, "replication of %s from the active: %s", what, exc)
            await self.ctx.forget(self.active_id)  # re-resolve at the next pass
            return None

    async def active_answers(self) -> bool:
        """Whether the active's published address answers a health check in time."""
        address = self.ctx.addresses.lookup(self.active_id)
        if not address or address == self.address:
            return False  # never published, or this node's own record
        try:
            channel = await self.ctx.channel_to(self.active_id)
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            return exc.code() not in SILENT_CODES  # any other answer came from a live process
        except DltmwError:
            return False  # no address to reach
        finally:
            await self.ctx.forget(self.active_id)
        return True
