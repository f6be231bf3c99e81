"""Backchain resolution: before a node signs or records a transaction, it makes sure every
transaction that created its inputs and references is known and valid, fetching the missing
ones from the node that sent it (and, transitively, their own dependencies).

Each fetched transaction is checked to have the id it was asked for, to be notarised by a notary
of the network map, to carry every required signature, and to satisfy its contracts over its
own (already verified) inputs — in dependency order, so nothing is trusted before what it rests
on. Verified dependencies are kept in the vault's transaction table (not as states), so the node
can verify later transactions quickly and serve the chain onwards when it spends its states.
The walk is bounded (MAX_BACKCHAIN transactions per resolution).

Validating notary: a transaction notarised by a validating notary was verified by that notary
(contracts, signatures, and that its inputs came from transactions it had notarised itself), so
its own dependencies are not fetched: receivers check its notary's and parties' signatures only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from dltmw.core.errors import ClientError, PeerError
from dltmw.core.identity import Membership
from dltmw.core.utxo.constraints import BUILTIN_CODE, ContractCode
from dltmw.core.utxo.contracts import LedgerTx
from dltmw.core.utxo.model import Output, Ref, WireTx
from dltmw.core.utxo.verify import (
    SignedTx,
    check_cluster_notarised,
    check_notarised,
    check_signatures,
    read_signed,
    resolve,
    verify_ledger_tx,
)
from dltmw.ledger.vault_store import VaultStore
from dltmw.net.netmap import NetworkMap
from dltmw.v1 import errors_pb2

R = errors_pb2
MAX_BACKCHAIN = 10_000
Fetch = Callable[[str], Awaitable[bytes]]


def lookup_in(txs: Mapping[str, SignedTx]) -> Callable[[Ref], Output | None]:
    """Output lookup over known transactions."""

    def lookup(ref: Ref) -> Output | None:
        stx = txs.get(ref.tx_id)
        if stx is None or ref.index >= len(stx.wire.outputs):
            return None
        return stx.wire.outputs[ref.index]

    return lookup


def dependencies(wire: WireTx) -> set[str]:
    """tx_ids that created the inputs and references of `wire`."""
    return {r.tx_id for r in (*wire.inputs, *wire.references)}


def check_notary(stx: SignedTx, netmap: NetworkMap, membership: Membership, now: datetime) -> None:
    """The transaction names a notary (or notary cluster) of the network map, and that notary
    signed it (for a cluster: f+1 distinct members, identities from the map)."""
    members = netmap.clusters.get(stx.wire.notary)
    if members is not None:
        identities = [netmap.identity_of(m) for m in members]
        check_cluster_notarised(stx, identities, membership, now)
        return
    if stx.wire.notary not in netmap.validating:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"{stx.wire.notary!r} is not a notary")
    check_notarised(stx, netmap.identity_of(stx.wire.notary), membership, now)


def verify_full(
    stx: SignedTx,
    known: Mapping[str, SignedTx],
    membership: Membership,
    now: datetime,
    allowed_missing: frozenset[bytes] = frozenset(),
    code: ContractCode = BUILTIN_CODE,
) -> LedgerTx:
    """Resolve against `known`, run the contract packages it names (approved in `code`: the
    network map's), check signatures; returns the LedgerTx."""
    ltx = resolve(stx.wire, lookup_in(known))
    verify_ledger_tx(ltx, code)
    check_signatures(stx, membership, now, allowed_missing)
    return ltx


class Backchain:
    """Resolves and verifies the dependencies of transactions for one vault."""

    def __init__(self, store: VaultStore, netmap: NetworkMap, membership: Membership) -> None:
        self._store = store
        self._netmap = netmap
        self._membership = membership

    async def resolve(self, wire: WireTx, fetch: Fetch, now: datetime) -> dict[str, SignedTx]:
        """Every transaction `wire` depends on, verified; fetches what is missing."""
        return await self.resolve_ids(dependencies(wire), fetch, now)

    async def resolve_ids(
        self, needed: set[str], fetch: Fetch, now: datetime
    ) -> dict[str, SignedTx]:
        """The transactions `needed` and their backchains, verified; fetches what is missing."""
        known = {t: read_signed(raw) for t, raw in (await self._store.transactions(needed)).items()}
        fetched: dict[str, SignedTx] = {}
        todo = sorted(needed - set(known))
        while todo:
            tx_id = todo.pop()
            if tx_id in fetched or tx_id in known:
                continue
            stored = await self._store.transactions([tx_id])
            if stored:
                known[tx_id] = read_signed(stored[tx_id])
                continue
            if len(fetched) >= MAX_BACKCHAIN:
                raise ClientError(R.ERROR_REASON_INVALID_FIELD, "backchain is too long")
            stx = read_signed(await fetch(tx_id))
            if stx.wire.tx_id != tx_id:
                raise PeerError(R.ERROR_REASON_TX_ID_MISMATCH, f"asked for {tx_id}, got another")
            fetched[tx_id] = stx
            if not self.vouched(stx):
                todo.extend(sorted(dependencies(stx.wire) - set(fetched) - set(known)))
        order = dependency_order(fetched)
        verified = dict(known)
        for stx in order:
            check_notary(stx, self._netmap, self._membership, now)
            if self.vouched(stx):
                check_signatures(stx, self._membership, now)
            else:
                verify_full(stx, verified, self._membership, now, code=self._netmap.contract_code)
            verified[stx.wire.tx_id] = stx
        await self._store.store_dependencies(order)
        return verified

    def vouched(self, stx: SignedTx) -> bool:
        """True if a validating notary verified this transaction (contracts and backchain) when
        it notarised it; its own dependencies then need not be fetched. The caller checks that
        notary's signature."""
        return self._netmap.validating.get(stx.wire.notary, False)


def dependency_order(txs: Mapping[str, SignedTx]) -> list[SignedTx]:
    """`txs`, each after every one of them it depends on (Kahn's algorithm, linear: a recovery
    orders a whole vault); PeerError on a cycle (impossible with honest ids: a sender lied)."""
    waiting = {t: dependencies(s.wire) & set(txs) for t, s in txs.items()}
    dependents: dict[str, list[str]] = {}
    for tx_id, deps in waiting.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(tx_id)
    order: list[SignedTx] = []
    ready = sorted(t for t, deps in waiting.items() if not deps)
    while ready:
        tx_id = ready.pop()
        order.append(txs[tx_id])
        for other in dependents.get(tx_id, ()):
            waiting[other].discard(tx_id)
            if not waiting[other]:
                ready.append(other)
    if len(order) != len(txs):
        raise PeerError(R.ERROR_REASON_NOT_FOUND, "backchain has a cycle or a missing link")
    return order
