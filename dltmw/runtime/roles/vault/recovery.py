"""Vault recovery: a node whose vault file is lost rebuilds it from its counterparties
(issue 20 item 6; docs/operations.md "Recovering a lost vault").

Whom to ask. A node that lost its vault also lost its outbox and the record of whom it dealt
with, so it asks EVERY other vault node of the signed network map (the one thing it still has,
with its identity). Each serves only the transactions in which the requester takes part
(`takes_part`: a participant of an output or a required signer — the same rule by which
RecordTransaction accepts a delivery), so asking everyone reveals nothing to anyone. Observers
are not served what they merely observed: nobody but the initiator's outbox knew it named them.

Serving (`serve_page`). The requester is authenticated like any flow message (signature,
timestamp, TLS certificate of its organisation) and must be a node of the map (NOT_AUTHORIZED
for clients and strangers). Pages are bounded twice: at most PAGE_MAX transactions and at most
SCAN_MAX stored rows read per call (a page may come back short or empty while more follow; the
cursor is the last tx_id scanned). What is served is shared with the requester, so it can fetch
the backchain with FetchTransaction as after any delivery.

Recovering (`Recovery.run`). Transactions already recorded here are skipped. Each received
transaction is verified exactly as a delivered one (`VaultRole.verify_received`: notary
signature or batch proof, backchain resolved from the serving node, contracts, every required
signature) and must be one the requester takes part in; anything else — a forged or altered
transaction, a valid one of other parties — is refused, reported with the serving node and
reason, and never stored. Transport failures make the node "unreachable" in the report (run
again later: recording is idempotent). Only once every node was asked are the verified
transactions recorded, each after those it depends on, so a state created by one counterparty's
transaction and consumed by another's ends up consumed whatever the order of the answers (and
the store's `spent` table makes a late-recorded state consumed anyway). Memory is bounded by
RECOVER_MAX transactions per run.

A standby of a vault node (runtime/standby.py) runs the same code against its active only
(`Recovery(role, active)`), every pass: it holds the active's identity, so the active serves it
every recorded transaction, observed ones too, and it records them as the active did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import Message

from dltmw.core.errors import ClientError, DltmwError, PeerError, TransientError
from dltmw.core.identity import VerifiedIdentity
from dltmw.core.utxo.model import WireTx
from dltmw.core.utxo.verify import SignedTx, read_signed
from dltmw.ledger.vault_store import VaultStore
from dltmw.net.netmap import NetworkMap
from dltmw.runtime.roles.vault.backchain import dependency_order
from dltmw.v1 import errors_pb2, vault_recovery_pb2, vault_recovery_pb2_grpc

logger = logging.getLogger(__name__)
R = errors_pb2
V = vault_recovery_pb2
PAGE_MAX = 64  # transactions per page served
SCAN_MAX = 1024  # stored rows read per page served
PAGES_MAX = 100_000  # pages read from one counterparty per run
RECOVER_MAX = 100_000  # transactions held (verified, not yet recorded) per run
RECOVERY_STUB = vault_recovery_pb2_grpc.VaultRecoveryServiceStub


def takes_part(wire: WireTx, identity: bytes) -> bool:
    """Whether `identity` is a participant of an output or a required signer of `wire`."""
    return identity in wire.required_signers() or any(
        identity in o.participants for o in wire.outputs
    )


class RecoveryRole(Protocol):
    """What recovery needs of the vault role (`runtime/roles/vault/vault.py`)."""

    @property
    def me(self) -> bytes:
        """This node's identity."""
        ...

    @property
    def netmap(self) -> NetworkMap:
        """The network map (the counterparties to ask)."""
        ...

    @property
    def store(self) -> VaultStore:
        """The vault's store."""
        ...

    def node_of_sender(self, sender: VerifiedIdentity) -> str:
        """The node of a requester (NOT_AUTHORIZED if it is none)."""
        ...

    async def share(self, to: bytes, tx_ids: list[str]) -> None:
        """Let party `to` fetch `tx_ids` and their ancestors."""

    def sign_query(self, query: V.TransactionPageQuery) -> tuple[bytes, bytes]:
        """`query` stamped with this node's identity and time, serialised and signed."""
        ...

    async def call(self, node_id: str, method: str, request: Message, service: type) -> Message:
        """`service`.`method` on another node (failures as DltmwError)."""
        ...

    async def verify_received(self, stx: SignedTx, node_id: str) -> None:
        """Verify a transaction received from `node_id` as any delivered one."""

    async def record(self, stx: SignedTx, outputs: list[int]) -> None:
        """Record a verified transaction with the states at `outputs`."""


@dataclass(frozen=True)
class Page:
    """One served page."""

    transactions: list[bytes]
    next_after: str
    done: bool


async def serve_page(role: RecoveryRole, sender: VerifiedIdentity, after: str, want: int) -> Page:
    """The transactions after `after` in which `sender`, a node, takes part (module docstring);
    every recorded one, observed ones included, when `sender` is this node itself (its standby,
    which holds its signing key)."""
    role.node_of_sender(sender)
    limit = PAGE_MAX if want <= 0 else min(want, PAGE_MAX)
    rows = await role.store.relevant(after, SCAN_MAX)
    served: list[tuple[str, bytes]] = []
    cursor, full = after, False
    itself = sender.identity_bytes == role.me
    for tx_id, raw in rows:
        cursor = tx_id
        if itself or takes_part(read_signed(raw).wire, sender.identity_bytes):
            served.append((tx_id, raw))
            if full := len(served) >= limit:
                break
    await role.share(sender.identity_bytes, [t for t, _ in served])
    return Page([raw for _, raw in served], cursor, not full and len(rows) < SCAN_MAX)


@dataclass
class Report:
    """What one recovery run did (VaultRecoveryService.RecoverVault's answer)."""

    asked: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    recorded: int = 0
    refused: list[V.RecoveryRefusal] = field(default_factory=list)

    def to_pb(self) -> V.RecoverVaultResponse:
        """The wire form."""
        return V.RecoverVaultResponse(
            asked=self.asked,
            unreachable=self.unreachable,
            recorded=self.recorded,
            refused=self.refused,
        )


class Recovery:
    """One recovery run of one vault node; with `active`, one replication pass of a standby
    from its active (same identity: observed transactions come too, recorded whole)."""

    def __init__(self, role: RecoveryRole, active: str = "") -> None:
        self._role = role
        self._active = active
        self._verified: dict[str, SignedTx] = {}
        self.report = Report()

    def counterparties(self) -> list[str]:
        """Every vault node of the map but this one, in id order (or the active)."""
        if self._active:
            return [self._active]
        me = self._role.me
        nodes = self._role.netmap.nodes.values()
        return sorted(p.node_id for p in nodes if "vault" in p.roles and p.identity != me)

    async def run(self) -> Report:
        """Ask every counterparty, verify what they serve, then record it in dependency order."""
        for node in self.counterparties():
            self.report.asked.append(node)
            try:
                await self._read_from(node)
            except TransientError as err:
                logger.warning("vault recovery: %s could not be asked (%s)", node, err)
                self.report.unreachable.append(node)
            except PeerError as err:  # it broke the paging protocol: keep what verified
                self._refuse(node, "", err)
                self.report.unreachable.append(node)
        me = self._role.me
        for stx in dependency_order(self._verified):
            mine = [i for i, o in enumerate(stx.wire.outputs) if me in o.participants]
            if not takes_part(stx.wire, me):  # observed (a standby's pass): every output
                mine = list(range(len(stx.wire.outputs)))
            await self._role.record(stx, mine)
            self.report.recorded += 1
        return self.report

    async def _read_from(self, node: str) -> None:
        after = ""
        for _ in range(PAGES_MAX):
            page = await self._page(node, after)
            ids = [_tx_id_of(raw) for raw in page.transactions]
            have = await self._role.store.relevant_among(i for i in ids if i)
            for tx_id, raw in zip(ids, page.transactions, strict=True):
                if tx_id not in have:  # recorded before (an earlier run or pass): skip
                    await self._admit(node, raw)
            if page.done:
                return
            if page.next_after <= after:
                raise PeerError(R.ERROR_REASON_INVALID_FIELD, "the page cursor did not advance")
            after = page.next_after
        raise PeerError(R.ERROR_REASON_INVALID_FIELD, f"more than {PAGES_MAX} pages")

    async def _page(self, node: str, after: str) -> Page:
        raw, sig = self._role.sign_query(V.TransactionPageQuery(after_tx_id=after))
        request = V.ListTransactionsRequest(query=raw, signature=sig)
        reply = await self._role.call(node, "ListTransactions", request, RECOVERY_STUB)
        if not isinstance(reply, V.ListTransactionsResponse):
            raise TypeError("unexpected reply")
        return Page(list(reply.signed_transactions), reply.next_after_tx_id, reply.done)

    async def _admit(self, node: str, raw: bytes) -> None:
        """Verify one served transaction and keep it for recording, or refuse it."""
        tx_id = ""
        try:
            stx = read_signed(raw)
            tx_id = stx.wire.tx_id
            if tx_id in self._verified:
                return
            if not self._active and not takes_part(stx.wire, self._role.me):
                raise PeerError(
                    R.ERROR_REASON_NOT_AUTHORIZED, "served a transaction this node takes no part in"
                )
            await self._role.verify_received(stx, node)
        except TransientError:
            raise  # the counterparty went away mid-way: unreachable, not forged
        except DltmwError as err:
            self._refuse(node, tx_id, err)
            return
        if len(self._verified) >= RECOVER_MAX:
            raise ClientError(
                R.ERROR_REASON_INVALID_FIELD, f"more than {RECOVER_MAX} transactions in one run"
            )
        self._verified[tx_id] = stx

    def _refuse(self, node: str, tx_id: str, err: DltmwError) -> None:
        logger.warning("vault recovery: refused %s from %s: %s", tx_id[:12] or "?", node, err)
        refusal = V.RecoveryRefusal(
            node_id=node, tx_id=tx_id, reason=err.reason_name, message=err.message
        )
        self.report.refused.append(refusal)


def _tx_id_of(raw: bytes) -> str:
    """The tx_id of a served transaction, "" if it does not parse (`_admit` reports it)."""
    try:
        return read_signed(raw).wire.tx_id
    except DltmwError:
        return ""
