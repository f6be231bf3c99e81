"""Installing contract packages on peers, and listing them (`dltmw contract install|list`).

Each call is signed by an admin of the node's organisation (by default `clients/admin.<org>` of
the network directory, as `dltmw audit` does); the node checks the package completely before it
stores anything (AdminService.InstallContract).
"""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dltmw.aio.clock import utc_now
from dltmw.client.audit import node_orgs
from dltmw.client.files import ClientFiles
from dltmw.rpc.tls import link_tls, secure_channel
from dltmw.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    standby_pb2,
    standby_pb2_grpc,
    vault_recovery_pb2,
    vault_recovery_pb2_grpc,
)

A = admin_service_pb2
CALL_TIMEOUT_S = 60.0
RECOVER_TIMEOUT_S = 600.0  # a recovery pages through every counterparty's vault
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class NodeAdmin:
    """Admin calls to one node of a network directory.

    An async context manager like every other client type (`async with NodeAdmin(...) as
    admin:`); it holds no connection between calls — each call opens its own and closes it —
    so `close()` has nothing to release and the block ends with nothing left open."""

    def __init__(self, network_dir: Path, node_id: str, client_id: str | None = None) -> None:
        orgs = node_orgs(network_dir)
        if node_id not in orgs:
            raise KeyError(f"the network has no node {node_id!r}")
        self.node_id = node_id
        self.files = ClientFiles.load(network_dir, client_id or f"admin.{orgs[node_id].lower()}")

    async def __aenter__(self) -> NodeAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release: every call closes the connection it opened."""

    def _signed(
        self,
        message: A.InstallContractCommand
        | A.NodeStatusQuery
        | A.JoinChannelCommand
        | standby_pb2.PromoteCommand
        | vault_recovery_pb2.RecoverVaultCommand,
    ) -> tuple[bytes, bytes]:
        message.requester = self.files.signer.identity_bytes
        message.timestamp.FromDatetime(utc_now())
        data = message.SerializeToString()
        return data, self.files.signer.sign(data)

    def _channel(self) -> grpc.aio.Channel:
        address = self.files.addresses.lookup(self.node_id)
        if address is None:
            raise ConnectionError(f"{self.node_id} has no published address (is it running?)")
        name, tls = link_tls(self.files.tls, self.files.addresses, self.node_id)
        return secure_channel(address, name, tls, MAX_MESSAGE_BYTES)

    async def install(self, package: bytes) -> A.InstallContractResponse:
        """Install package bytes on the node."""
        data, sig = self._signed(A.InstallContractCommand(package=package))
        async with self._channel() as channel:
            stub = admin_service_pb2_grpc.AdminServiceStub(channel)
            request = A.InstallContractRequest(command=data, signature=sig)
            return await stub.InstallContract(request, timeout=CALL_TIMEOUT_S)

    async def join(self, config_block: bytes) -> str:
        """Make the node serve the channel of `config_block` (block 0); returns its id."""
        data, sig = self._signed(A.JoinChannelCommand(config_block=config_block))
        async with self._channel() as channel:
            stub = admin_service_pb2_grpc.AdminServiceStub(channel)
            request = A.JoinChannelRequest(command=data, signature=sig)
            reply = await stub.JoinChannel(request, timeout=CALL_TIMEOUT_S)
            return reply.channel_id

    async def status(self) -> A.NodeStatusResponse:
        """The node's roles and per-channel heights."""
        data, sig = self._signed(A.NodeStatusQuery())
        async with self._channel() as channel:
            stub = admin_service_pb2_grpc.AdminServiceStub(channel)
            request = A.NodeStatusRequest(query=data, signature=sig)
            reply: A.NodeStatusResponse = await stub.NodeStatus(request, timeout=CALL_TIMEOUT_S)
            return reply

    async def health(self) -> int:
        """The node's overall health (grpc.health.v1, the empty service name): SERVING once
        every channel is open and its roles run, NOT_SERVING when a task failed or it stops."""
        async with self._channel() as channel:
            request = health_pb2.HealthCheckRequest(service="")
            reply = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=CALL_TIMEOUT_S)
            return int(reply.status)

    async def installed(self) -> list[A.InstalledContract]:
        """The packages installed on the node."""
        data, sig = self._signed(A.NodeStatusQuery())
        async with self._channel() as channel:
            stub = admin_service_pb2_grpc.AdminServiceStub(channel)
            request = A.ListInstalledContractsRequest(query=data, signature=sig)
            reply = await stub.ListInstalledContracts(request, timeout=CALL_TIMEOUT_S)
            return list(reply.contracts)

    async def promote(self, active_node_id: str) -> standby_pb2.PromoteResponse:
        """Promote this standby node to serve as `active_node_id` (StandbyService.Promote)."""
        data, sig = self._signed(standby_pb2.PromoteCommand(active_node_id=active_node_id))
        async with self._channel() as channel:
            stub = standby_pb2_grpc.StandbyServiceStub(channel)
            request = standby_pb2.PromoteRequest(command=data, signature=sig)
            reply: standby_pb2.PromoteResponse = await stub.Promote(request, timeout=CALL_TIMEOUT_S)
            return reply

    async def recover_vault(self) -> vault_recovery_pb2.RecoverVaultResponse:
        """Make this vault node rebuild its vault from its counterparties
        (VaultRecoveryService.RecoverVault)."""
        data, sig = self._signed(vault_recovery_pb2.RecoverVaultCommand())
        async with self._channel() as channel:
            stub = vault_recovery_pb2_grpc.VaultRecoveryServiceStub(channel)
            request = vault_recovery_pb2.RecoverVaultRequest(command=data, signature=sig)
            reply: vault_recovery_pb2.RecoverVaultResponse = await stub.RecoverVault(
                request, timeout=RECOVER_TIMEOUT_S
            )
            return reply
