"""Vault recovery on real stores and keys, counterparties in process (runtime/roles/vault/
recovery.py): the rebuilt vault equals the original whatever the order of the answers; forged
or foreign transactions from a lying counterparty are refused and never stored; a counterparty
serves a node only what it takes part in, page by page, and nothing to a non-node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from utxo_parties import NOW, make_parties, tx

from dltmw.core.errors import ClientError, TransientError
from dltmw.core.identity import SigningIdentity, VerifiedIdentity
from dltmw.core.utxo.build import cash_output, sign_transaction
from dltmw.core.utxo.model import Command, Ref
from dltmw.core.utxo.verify import SignedTx, read_signed
from dltmw.ledger.vault_store import VaultStore
from dltmw.net.netmap import NetworkMap, Party
from dltmw.runtime.roles.vault import recovery as recovery_mod
from dltmw.runtime.roles.vault.recovery import Page
from dltmw.runtime.roles.vault.vault import VaultRole
from dltmw.v1 import errors_pb2, flow_service_pb2, utxo_pb2
from dltmw.v1 import vault_recovery_pb2 as V

P = make_parties()
SIGNERS = {"alice": P.alice, "bank": P.bank, "bob": P.bob}
VAULTS = {n: Party(n, s.org_id, frozenset({"vault"}), s.identity_bytes) for n, s in SIGNERS.items()}
NOTARY = Party("notary0", "Exchange", frozenset({"notary"}), P.notary.identity_bytes)
NETMAP = NetworkMap(roots={}, nodes={**VAULTS, "notary0": NOTARY}, validating={"notary0": False})
BANK, ALICE, BOB = (s.identity_bytes for s in (P.bank, P.alice, P.bob))
Lister = Callable[[VerifiedIdentity, str, int], Any]


def notarised(
    outputs: list[Any], commands: list[Command], signers: list[SigningIdentity], **kw: Any
) -> SignedTx:
    """A transaction signed by `signers` and notarised by notary0 (or by kw["notary_key"])."""
    notary = kw.pop("notary_key", P.notary)
    raw, wire = tx(outputs=outputs, commands=commands, **kw)
    msg = sign_transaction(raw, wire.tx_id, signers)
    msg.notary_signature.signer = P.notary.identity_bytes
    msg.notary_signature.signature = notary.sign(wire.tx_id.encode())
    return read_signed(msg.SerializeToString())


# bank issues 100 to bob; bob pays alice 30 (change 70); alice pays bob 10 (change 20)
T1 = notarised([cash_output(BANK, BOB, "JPY", 100)], [Command("cash", "issue", (BANK,))], [P.bank])
T2 = notarised(
    [cash_output(BANK, ALICE, "JPY", 30), cash_output(BANK, BOB, "JPY", 70)],
    [Command("cash", "move", (BOB,))],
    [P.bob],
    inputs=[Ref(T1.wire.tx_id, 0)],
)
T3 = notarised(
    [cash_output(BANK, BOB, "JPY", 10), cash_output(BANK, ALICE, "JPY", 20)],
    [Command("cash", "move", (ALICE,))],
    [P.alice],
    inputs=[Ref(T2.wire.tx_id, 0)],
)


@dataclass
class Ctx:
    signer: SigningIdentity


class Net:
    """Vault roles of one process; `call` stands in for the network between them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.roles: dict[str, VaultRole] = {}
        self.down: set[str] = set()
        self.lists: dict[str, Lister] = {}  # a lying counterparty's ListTransactions
        self.opened: list[VaultRole] = []

    async def role(self, node: str, file: str = "", serves: bool = True) -> VaultRole:
        store = VaultStore(self.tmp / f"{file or node}.sqlite")
        await store.open()
        role = VaultRole(Ctx(SIGNERS[node]), store, NETMAP, P.membership)  # type: ignore[arg-type]
        role.call = lambda n, m, r, s=None: self.call(n, m, r)  # type: ignore[method-assign]
        if serves:
            self.roles[node] = role
        self.opened.append(role)
        return role

    async def call(self, node: str, method: str, request: Any) -> Any:
        if node in self.down:
            raise TransientError(errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, f"{node} is down")
        target = self.roles[node]
        if method == "ListTransactions":
            q = V.TransactionPageQuery.FromString(request.query)
            who = P.membership.identify(q.requester, NOW)
            page = await self.lists.get(node, target.on_list)(who, q.after_tx_id, q.page_max)
            return V.ListTransactionsResponse(
                signed_transactions=page.transactions,
                next_after_tx_id=page.next_after,
                done=page.done,
            )
        assert method == "FetchTransaction", method
        msg = flow_service_pb2.FlowMessage.FromString(request.message)
        who = P.membership.identify(msg.requester, NOW)
        return flow_service_pb2.FetchTransactionResponse(
            signed_transaction=await target.on_fetch(who, msg.tx_id)
        )

    async def history(self) -> None:
        """What each node recorded when T1..T3 happened (the flows' own record calls)."""
        bank, alice, bob = [await self.role(n) for n in ("bank", "alice", "bob")]
        await bank.record(T1, [])
        await bob.record(T1, [0])
        await alice.store.store_dependencies([T1])
        await alice.record(T2, [0])
        await bob.record(T2, [1])
        await alice.record(T3, [1])
        await bob.record(T3, [0])

    async def close(self) -> None:
        for role in self.opened:
            await role.store.close()


def rows(found: list[Any]) -> list[tuple[Ref, bytes, str]]:
    return sorted((r.ref, r.output_bytes, r.consumed_by) for r in found)


@pytest.fixture
async def net(tmp_path: Path) -> Any:
    n = Net(tmp_path)
    await n.history()
    yield n
    await n.close()


async def test_the_rebuilt_vault_equals_the_original(net: Net) -> None:
    original = rows(await net.roles["bob"].store.query(include_consumed=True))
    assert [c for _, _, c in original].count("") == 2  # 70 and 10 unconsumed, 100 consumed
    bob = await net.role("bob", "bob-rebuilt")
    report = await bob.recover()
    assert (report.asked, report.unreachable, report.refused) == (["alice", "bank"], [], [])
    assert report.recorded == 3
    # alice (asked first) served T2 and T3 before bank served T1, which they consume: recorded
    # in dependency order, T1's output ends up consumed all the same
    assert rows(await bob.store.query(include_consumed=True)) == original
    assert (await bob.recover()).recorded == 0  # idempotent: nothing new
    assert rows(await bob.store.query(include_consumed=True)) == original


async def test_forged_and_foreign_transactions_are_refused_and_not_stored(net: Net) -> None:
    outsider_notarised = notarised(
        [cash_output(BANK, BOB, "JPY", 1_000)],
        [Command("cash", "issue", (BANK,))],
        [P.bank],
        notary_key=P.alice,  # a notary signature that is not notary0's
    )
    altered = utxo_pb2.SignedUtxoTransaction.FromString(T3.raw)  # bob's 10 became 10,000
    body = utxo_pb2.UtxoTransaction.FromString(altered.transaction)
    output = utxo_pb2.UtxoOutput.FromString(body.outputs[0])
    cash = utxo_pb2.CashState.FromString(output.data)
    cash.amount = 10_000
    output.data = cash.SerializeToString()
    body.outputs[0] = output.SerializeToString()
    altered.transaction = body.SerializeToString()
    foreign = notarised(  # genuine, but bob takes no part in it
        [cash_output(BANK, ALICE, "JPY", 5)], [Command("cash", "issue", (BANK,))], [P.bank]
    )
    unsigned = utxo_pb2.SignedUtxoTransaction.FromString(T2.raw)
    del unsigned.signatures[:]  # bob's required signature stripped
    served = [outsider_notarised.raw, altered.SerializeToString(), foreign.raw]
    served += [unsigned.SerializeToString(), b"\xff\xff"]

    async def lie(who: VerifiedIdentity, after: str, want: int) -> Page:
        await net.roles["alice"].share(who.identity_bytes, [T2.wire.tx_id])  # T1 fetchable
        return Page(served, "", True)

    net.lists["alice"] = lie
    bob = await net.role("bob", "bob-rebuilt")
    report = await bob.recover()
    reasons = sorted(r.reason for r in report.refused)
    assert reasons == sorted(
        ["BAD_SIGNATURE", "BAD_SIGNATURE", "NOT_AUTHORIZED", "BAD_SIGNATURE", "MALFORMED"]
    ), report.refused
    stripped = [r for r in report.refused if r.tx_id == T2.wire.tx_id]
    assert "missing signatures of ['BrokerB']" in stripped[0].message
    assert {r.node_id for r in report.refused} == {"alice"}
    bad_ids = {r.tx_id for r in report.refused} - {""}
    assert not await bob.store.transactions(bad_ids | {foreign.wire.tx_id, T2.wire.tx_id})
    # only what the honest bank served (and verified) is there: T1, unconsumed
    assert [(r.ref, r.consumed_by) for r in await bob.store.query(include_consumed=True)] == [
        (Ref(T1.wire.tx_id, 0), "")
    ]


async def test_a_counterparty_serves_only_what_the_requester_takes_part_in(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = net.roles["alice"]

    async def listed(requester: SigningIdentity) -> list[str]:
        who = P.membership.identify(requester.identity_bytes, NOW)
        out: list[str] = []
        after = ""
        for _ in range(10):
            page = await alice.on_list(who, after, 0)
            out += [read_signed(raw).wire.tx_id for raw in page.transactions]
            if page.done:
                return out
            after = page.next_after
        raise AssertionError("no last page")

    # bob took part in T2 and T3; bank signed T1, which alice holds only as backchain
    assert sorted(await listed(P.bob)) == sorted([T2.wire.tx_id, T3.wire.tx_id])
    assert await listed(P.bank) == []
    monkeypatch.setattr(recovery_mod, "PAGE_MAX", 1)
    monkeypatch.setattr(recovery_mod, "SCAN_MAX", 1)
    assert sorted(await listed(P.bob)) == sorted([T2.wire.tx_id, T3.wire.tx_id])
    # an identity of no node (a member org's other identity) is refused outright
    with pytest.raises(ClientError) as err:
        await alice.on_list(P.membership.identify(P.depository.identity_bytes, NOW), "", 0)
    assert err.value.reason == errors_pb2.ERROR_REASON_NOT_AUTHORIZED


async def test_an_unreachable_counterparty_is_reported(net: Net) -> None:
    net.down.add("bank")
    bob = await net.role("bob", "bob-rebuilt")
    report = await bob.recover()
    assert (report.unreachable, report.refused) == (["bank"], [])
    # T2 and T3 verified (T1 fetched from alice as backchain), T1 itself not recorded as bob's
    assert report.recorded == 2


async def test_a_state_recorded_after_the_transaction_consuming_it_is_born_consumed(
    tmp_path: Path,
) -> None:
    store = VaultStore(tmp_path / "v.sqlite")
    await store.open()
    try:
        await store.record(T2, [1])  # T2 consumes T1's output 0, not recorded yet
        await store.record(T1, [0])
        found = {r.ref: r.consumed_by for r in await store.query(include_consumed=True)}
        assert found == {Ref(T1.wire.tx_id, 0): T2.wire.tx_id, Ref(T2.wire.tx_id, 1): ""}
    finally:
        await store.close()


async def test_a_standby_pass_copies_everything_its_active_recorded(net: Net) -> None:
    alice = net.roles["alice"]
    observed = notarised(  # alice named as an observer: she records every output
        [cash_output(BANK, BANK, "JPY", 9)], [Command("cash", "issue", (BANK,))], [P.bank]
    )
    await alice.record(observed, [0])
    standby = await net.role("alice", "alice-standby", serves=False)  # alice's identity
    assert await standby.replicate_from("alice") == 3  # T2, T3 and the observed issue
    want = rows(await alice.store.query(include_consumed=True))
    assert rows(await standby.store.query(include_consumed=True)) == want
    assert await standby.replicate_from("alice") == 0  # a later pass: nothing new
    # another node is not served what alice merely observed
    who = P.membership.identify(BOB, NOW)
    page = await alice.on_list(who, "", 0)
    served = {read_signed(raw).wire.tx_id for raw in page.transactions}
    assert served == {T2.wire.tx_id, T3.wire.tx_id}
    net.down.add("alice")
    with pytest.raises(TransientError):
        await standby.replicate_from("alice")
