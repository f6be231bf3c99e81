"""VaultRecoveryService servicer: other vault nodes list the transactions they take part in;
an admin of the node's organisation starts a recovery (runtime/roles/vault/recovery.py).

Admission is the one of every flow message (`guard.admit_query`: timestamp window, signature
over exactly the carried bytes, TLS certificate of the requester's organisation); who may see
what is decided by the role (ListTransactions: a node of the network map, served only what it
takes part in) and here (RecoverVault: an admin of the node's own organisation).
"""

from __future__ import annotations

from typing import Protocol

from dltmw.core.errors import ClientError
from dltmw.core.identity import Membership, VerifiedIdentity
from dltmw.core.txcheck import parse
from dltmw.rpc.guard import Ctx, admit_query, require, unary
from dltmw.v1 import errors_pb2, vault_recovery_pb2, vault_recovery_pb2_grpc

R = errors_pb2
V = vault_recovery_pb2


class ServedPage(Protocol):
    """One page, as the role serves it (`recovery.Page`)."""

    @property
    def transactions(self) -> list[bytes]:
        """Serialised SignedUtxoTransactions."""
        ...

    @property
    def next_after(self) -> str:
        """The cursor for the next page."""
        ...

    @property
    def done(self) -> bool:
        """No more pages."""
        ...


class RecoveryReport(Protocol):
    """A recovery run's outcome (`recovery.Report`)."""

    def to_pb(self) -> V.RecoverVaultResponse:
        """The wire form."""
        ...


class Recoverable(Protocol):
    """What the service needs of the vault role (`runtime/roles/vault/vault.py`)."""

    @property
    def membership(self) -> Membership:
        """The network's organisations and CAs."""
        ...

    async def on_list(self, sender: VerifiedIdentity, after: str, want: int) -> ServedPage:
        """A page of the transactions `sender` takes part in."""
        ...

    async def recover(self) -> RecoveryReport:
        """Rebuild the vault from the counterparties."""
        ...


class VaultRecoveryServicer(vault_recovery_pb2_grpc.VaultRecoveryServiceServicer):
    """Serves other vault nodes (ListTransactions) and the node's own admins (RecoverVault)."""

    def __init__(self, vault: Recoverable, org_id: str, window_s: float) -> None:
        self._vault = vault
        self._org_id = org_id
        self._window_s = window_s

    @unary
    async def ListTransactions(
        self, request: V.ListTransactionsRequest, context: Ctx
    ) -> V.ListTransactionsResponse:
        """One page of the transactions the requesting node takes part in."""
        require(bool(request.query) and bool(request.signature), "query/signature")
        query = parse(V.TransactionPageQuery, request.query, "query")
        who = admit_query(
            context, query, request.query, request.signature, self._vault.membership, self._window_s
        )
        page = await self._vault.on_list(who, query.after_tx_id, query.page_max)
        return V.ListTransactionsResponse(
            signed_transactions=page.transactions, next_after_tx_id=page.next_after, done=page.done
        )

    @unary
    async def RecoverVault(
        self, request: V.RecoverVaultRequest, context: Ctx
    ) -> V.RecoverVaultResponse:
        """Rebuild this node's vault from its counterparties."""
        require(bool(request.command) and bool(request.signature), "command/signature")
        command = parse(V.RecoverVaultCommand, request.command, "command")
        who = admit_query(
            context,
            command,
            request.command,
            request.signature,
            self._vault.membership,
            self._window_s,
        )
        if who.org_id != self._org_id or "admin" not in who.roles:
            raise ClientError(
                R.ERROR_REASON_NOT_AUTHORIZED, "RecoverVault needs an admin of the node's org"
            )
        report = await self._vault.recover()
        return report.to_pb()
