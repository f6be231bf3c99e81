"""StandbyService servicer: promoting a standby (admins of the node's organisation only).

The fencing and the promotion itself live in the node's standby state (`runtime/standby.py`,
behind the `Promoter` protocol): this servicer authenticates the admin and checks that the
command names this standby's active."""

from __future__ import annotations

from typing import Protocol

from dltmw.core.errors import ClientError
from dltmw.core.identity import Membership
from dltmw.core.txcheck import parse
from dltmw.rpc.guard import Ctx, admit_query, require, unary
from dltmw.v1 import errors_pb2, standby_pb2, standby_pb2_grpc

R = errors_pb2
S = standby_pb2


class Promoter(Protocol):
    """What Promote needs from the node (runtime/standby.py `Standby`)."""

    active_id: str
    address: str

    async def promote(self) -> bool:
        """Promote (fenced); returns whether it was promoted already."""
        ...


class StandbyServicer(standby_pb2_grpc.StandbyServiceServicer):
    """Promote, authorised against the node's own organisation's admins."""

    def __init__(self, own_org: Membership, window_s: float, standby: Promoter) -> None:
        self._own_org = own_org
        self._window_s = window_s
        self._standby = standby

    @unary
    async def Promote(self, request: S.PromoteRequest, context: Ctx) -> S.PromoteResponse:
        """Promote this standby once its active is not alive (see standby.proto)."""
        require(bool(request.command), "command")
        command = parse(S.PromoteCommand, request.command, "command")
        who = admit_query(
            context, command, request.command, request.signature, self._own_org, self._window_s
        )
        if "admin" not in who.roles:
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "Promote needs an admin identity")
        active = self._standby.active_id
        if command.active_node_id != active:
            raise ClientError(
                R.ERROR_REASON_INVALID_FIELD,
                f"command.active_node_id: this node is the standby of {active!r},"
                f" not of {command.active_node_id!r}",
            )
        before = await self._standby.promote()
        return S.PromoteResponse(
            active_node_id=active, address=self._standby.address, already_promoted=before
        )
