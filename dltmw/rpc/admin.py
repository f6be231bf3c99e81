"""AdminService servicer: joining channels, node status, audit views, installing contracts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from google.protobuf.message import DecodeError

from dltmw.core.contract_package import PackageError
from dltmw.core.errors import ClientError
from dltmw.core.identity import Membership
from dltmw.core.txcheck import parse
from dltmw.rpc.guard import Ctx, admit_query, require, unary
from dltmw.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    block_pb2,
    errors_pb2,
    identity_pb2,
)

R = errors_pb2
A = admin_service_pb2


class AuditSource(Protocol):
    """What Audit needs from the node (runtime/audit.py `Auditor`)."""

    def membership(self, channel_id: str) -> Membership | None:
        """The channel's member organisations, or None if not served."""
        ...

    async def report(self, query: A.AuditQuery) -> A.AuditResponse:
        """The node's audit view of the queried channel."""
        ...


class ContractInstaller(Protocol):
    """What InstallContract and ListInstalledContracts need (runtime/contract_store.py);
    blocking file I/O, so the servicer calls it on a worker thread."""

    def install_package(self, data: bytes) -> tuple[A.InstalledContract, bool]:
        """Check and store package bytes: (its description, whether it was there already);
        PackageError if refused (nothing stored)."""
        ...

    def installed(self) -> list[A.InstalledContract]:
        """Every installed package."""
        ...


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """Admin operations, authorised against the node's own organisation."""

    def __init__(
        self,
        own_org: Membership,
        window_s: float,
        join: Callable[[block_pb2.Block], Awaitable[str]],
        status: Callable[[], A.NodeStatusResponse],
        audit: AuditSource | None = None,
        contracts: ContractInstaller | None = None,
    ) -> None:
        self._own_org = own_org
        self._contracts = contracts
        self._window_s = window_s
        self._join = join
        self._status = status
        self._audit = audit

    @unary
    async def JoinChannel(
        self, request: A.JoinChannelRequest, context: Ctx
    ) -> A.JoinChannelResponse:
        """Join the channel of a config block (admins of the node's organisation only)."""
        require(bool(request.command), "command")
        command = parse(A.JoinChannelCommand, request.command, "command")
        who = admit_query(
            context, command, request.command, request.signature, self._own_org, self._window_s
        )
        if "admin" not in who.roles:
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "JoinChannel needs an admin identity")
        require(bool(command.config_block), "command.config_block")
        block = parse(block_pb2.Block, command.config_block, "config_block")
        return A.JoinChannelResponse(channel_id=await self._join(block))

    @unary
    async def NodeStatus(self, request: A.NodeStatusRequest, context: Ctx) -> A.NodeStatusResponse:
        """Report roles and per-channel heights (identities of the node's organisation)."""
        require(bool(request.query), "query")
        query = parse(A.NodeStatusQuery, request.query, "query")
        admit_query(context, query, request.query, request.signature, self._own_org, self._window_s)
        return self._status()

    @unary
    async def Audit(self, request: A.AuditRequest, context: Ctx) -> A.AuditResponse:
        """The node's audit view of a channel (admins of its org or of a channel member org)."""
        require(bool(request.query), "query")
        query = parse(A.AuditQuery, request.query, "query")
        require(bool(query.channel_id), "query.channel_id")
        members = None if self._audit is None else self._audit.membership(query.channel_id)
        if self._audit is None or members is None:
            raise ClientError(
                R.ERROR_REASON_CHANNEL_NOT_FOUND, f"channel {query.channel_id!r} is not served"
            )
        org = _claimed_org(query.requester)
        membership = members if org in members.org_ids else self._own_org
        who = admit_query(
            context, query, request.query, request.signature, membership, self._window_s
        )
        if "admin" not in who.roles:
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "Audit needs an admin identity")
        return await self._audit.report(query)

    @unary
    async def InstallContract(
        self, request: A.InstallContractRequest, context: Ctx
    ) -> A.InstallContractResponse:
        """Check and store a contract package (admins of the node's organisation only)."""
        require(bool(request.command), "command")
        command = parse(A.InstallContractCommand, request.command, "command")
        who = admit_query(
            context, command, request.command, request.signature, self._own_org, self._window_s
        )
        if "admin" not in who.roles:
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "InstallContract needs an admin")
        store = self._store()
        require(bool(command.package), "command.package")
        try:
            described, before = await asyncio.to_thread(store.install_package, command.package)
        except PackageError as exc:
            raise ClientError(
                R.ERROR_REASON_PACKAGE_INVALID, exc.message, {"check": exc.reason}
            ) from None
        return A.InstallContractResponse(contract=described, already_installed=before)

    @unary
    async def ListInstalledContracts(
        self, request: A.ListInstalledContractsRequest, context: Ctx
    ) -> A.ListInstalledContractsResponse:
        """The installed packages (identities of the node's organisation)."""
        require(bool(request.query), "query")
        query = parse(A.NodeStatusQuery, request.query, "query")
        admit_query(context, query, request.query, request.signature, self._own_org, self._window_s)
        store = self._store()
        return A.ListInstalledContractsResponse(contracts=await asyncio.to_thread(store.installed))

    def _store(self) -> ContractInstaller:
        if self._contracts is None:
            raise ClientError(
                R.ERROR_REASON_ROLE_NOT_HOSTED,
                "contracts are installed on peers, vaults and notaries",
            )
        return self._contracts


def _claimed_org(requester: bytes) -> str:
    """The organisation a serialised Identity names (unverified: only to pick the roots that
    then verify it; "" when it does not parse, and verification then refuses it)."""
    try:
        return identity_pb2.Identity.FromString(requester).org_id
    except DecodeError:
        return ""
