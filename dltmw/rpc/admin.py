"""AdminService servicer: joining channels and node status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dltmw.core.errors import ClientError
from dltmw.core.identity import Membership
from dltmw.core.txcheck import parse
from dltmw.rpc.guard import Ctx, admit_query, require, unary
from dltmw.v1 import admin_service_pb2, admin_service_pb2_grpc, block_pb2, errors_pb2

R = errors_pb2
A = admin_service_pb2


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    """Admin operations, authorised against the node's own organisation."""

    def __init__(
        self,
        own_org: Membership,
        window_s: float,
        join: Callable[[block_pb2.Block], Awaitable[str]],
        status: Callable[[], A.NodeStatusResponse],
    ) -> None:
        self._own_org = own_org
        self._window_s = window_s
        self._join = join
        self._status = status

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
