"""kill -9 cycles across every flow, under load: nothing acknowledged is lost or duplicated.

Five flows, each on its own network of real node processes: endorse-order-validate with a solo
orderer and with PBFT-lite ordering (four orderers), a single notary, a notary cluster (four
members), and private payloads. In each cycle a running load waits for progress, one node is
killed with SIGKILL (rotating over the flow's roles: orderer, peer, primary, notary, member,
sender, recipient, bystander), restarted, and waited for until it has caught up (so the next
kill never takes down a second replica of a quorum). `count(4, 20)` cycles per flow: 20 in
`make test`, 100 in `make soak`.

The load's clients record every acknowledgement: a transaction with the validation code its
client saw, a notarisation with the inputs it consumed, a private send with its payload hash.
Afterwards, once every node has caught up:
* every acknowledged transaction is committed exactly once on every peer (other occurrences are
  only ever flagged DUPLICATE_TXID), with the code the client saw;
* each peer's state equals a replay of its blocks: the state hash of the replay == the stored
  one == the one recomputed from its state table, the same on every peer; orderers and peers
  hold the same chain;
* every acknowledged notarisation is in the spent-set of the notary (every member) with its
  inputs, and no input was consumed by two acknowledged notarisations;
* recipients executed every acknowledged private transaction with the same outcome hash, their
  private states are equal and equal to their stored private-state hashes; the bystander holds
  hashes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from tiers import count, record

from dltmw.client import GatewayClient
from dltmw.client.notary_cluster import ClusterNotaryClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.utxo import NotaryClient, PartyFiles
from dltmw.core.utxo.model import Ref
from dltmw.ops.supervisor import Supervisor
from dltmw.v1 import privacy_manager_service_pb2 as P

from .conftest import TWO_ORG
from .ledgers import (
    DUPLICATE_TXID,
    blocks,
    height,
    ledger_path,
    read_only,
    replay_state,
    state_hash_of,
    state_hashes,
    table_state,
    tx_codes,
    wait_until,
)
from .test_notary import NOTARY_NET, make_tx, notarised_rows, request_for, spent_rows
from .test_notary_cluster import CLUSTER, MEMBERS, stop_one_by_one, tx
from .test_notary_cluster import NET as CLUSTER_NET
from .test_notary_cluster import request as cluster_request
from .test_notary_cluster import spent as member_spent
from .test_pbft_ordering import TOPOLOGY as PBFT_TOPOLOGY
from .test_privacy import TOPOLOGY as PRIVACY_NET

pytestmark = [pytest.mark.integration, pytest.mark.soak]
CYCLES = count(4, 20)  # per flow; five flows
STEP = 8  # acknowledgements between two kills
WORKERS = 6
OP_TIMEOUT_S = 30.0
BFT_NET = PBFT_TOPOLOGY  # bft-four on the envelope path (test_pbft_ordering.TOPOLOGY)
Start = Callable[..., tuple[Path, Supervisor]]
REFUSED = {grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION}


class Load:
    """`WORKERS` tasks calling `op(client, i)` until stopped; a failure (the crash window) closes
    the worker's client and reconnects after a pause. Bounded in operations and time."""

    def __init__(
        self,
        connect: Callable[[int], Awaitable[Any]],
        op: Callable[[Any, int], Awaitable[None]],
        acked: Callable[[], int],
    ) -> None:
        self._connect, self._op, self.acked = connect, op, acked
        self._stop = asyncio.Event()
        self.failures = 0
        self._tasks = [asyncio.create_task(self._worker(k)) for k in range(WORKERS)]

    async def _worker(self, k: int) -> None:
        client: Any = None
        deadline = time.monotonic() + 900
        for i in range(k, 1_000_000, WORKERS):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            try:
                client = client or await asyncio.wait_for(self._connect(k), OP_TIMEOUT_S)
                await asyncio.wait_for(self._op(client, i), OP_TIMEOUT_S)
            except Exception:  # expected while a node is down; counted
                self.failures += 1
                await _close(client)
                client = None
                await asyncio.sleep(0.2)
        await _close(client)

    async def progress(self, step: int, what: str) -> None:
        base = self.acked()
        await wait_until(lambda: self.acked() >= base + step, 120, what)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), OP_TIMEOUT_S + 30)


async def _close(client: Any) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            await client.close()


async def run_cycles(
    sup: Supervisor,
    load: Load,
    victims: list[str],
    caught_up: Callable[[str], Awaitable[None]],
) -> None:
    """kill -9 / restart / catch up, CYCLES times, rotating over `victims`, under `load`."""
    for i in range(CYCLES):
        victim = victims[i % len(victims)]
        await load.progress(STEP, f"progress before kill {i} ({victim})")
        sup.kill(victim)
        sup.start(victim)
        await asyncio.to_thread(sup.wait_ready, victim, 60)
        await caught_up(victim)
    await load.progress(STEP, "progress after the last restart")
    await load.stop()


def _behind(net: Path, node: str, others: list[str], role: str) -> Callable[[], Awaitable[None]]:
    """Waiter: `node`'s ledger (its peer ledger if it is not one of `others`' role) reaches the
    height the `others`' `role` ledgers have now."""
    target = max(height(ledger_path(net, o, role=role)) for o in others)
    path = ledger_path(net, node, role=role)
    if not path.exists():
        path = ledger_path(net, node)

    async def wait() -> None:
        await wait_until(lambda: height(path) >= target, 90, f"{node} to catch up to {target}")

    return wait


# --- endorse-order-validate ---------------------------------------------------------------


def eov_load(net: Path, acked: dict[str, int], clients: list[str]) -> Load:
    async def connect(k: int) -> GatewayClient:
        return await GatewayClient.connect(net, clients[k % len(clients)])

    async def op(client: GatewayClient, i: int) -> None:
        done = await client.submit_transaction("trades", "kv", "put", f"k{i % 64}", f"v{i}")
        acked[done.tx_id] = done.status.result

    return Load(connect, op, lambda: len(acked))


async def check_eov(
    net: Path, peers: list[str], orderers: list[str], acked: dict[str, int]
) -> tuple[int, int]:
    """(lost, duplicated) over every peer, after asserting state == replay and one chain."""
    top = max(height(ledger_path(net, o, role="orderer")) for o in orderers)
    paths = {n: ledger_path(net, n, role="orderer") for n in orderers}
    paths |= {n: ledger_path(net, n) for n in peers}
    for node, path in paths.items():
        await wait_until(lambda p=path: height(p) >= top, 90, f"{node} to reach {top}")
    chains = {n: blocks(path) for n, path in paths.items()}
    headers = {n: [b.header.SerializeToString() for b in c[:top]] for n, c in chains.items()}
    differ = [n for n, h in headers.items() if h != headers[orderers[0]]]
    assert not differ, f"chains of {differ} differ from {orderers[0]}'s"
    lost: set[str] = set()
    duplicated: set[str] = set()
    stored_hashes = set()
    for node in peers:
        codes = tx_codes(chains[node])
        for tx_id, code in acked.items():
            seen = [c for c in codes.get(tx_id, []) if c != DUPLICATE_TXID]
            if not seen:
                lost.add(tx_id)
            elif len(seen) > 1:
                duplicated.add(tx_id)
            else:
                assert seen[0] == code, f"{node}: {tx_id} committed as {seen[0]}, client saw {code}"
        path = ledger_path(net, node)
        assert table_state(path) == replay_state(chains[node]), f"{node}: state != replay"
        replayed, stored, recomputed = state_hashes(path)
        assert replayed == stored == recomputed, f"{node}: state hashes differ"
        stored_hashes.add(stored)
    assert len(stored_hashes) == 1, "peers store different state hashes at the same height"
    return len(lost), len(duplicated)


async def test_kill9_cycles_endorse_order_validate_solo(network: Start) -> None:
    net, sup = network(TWO_ORG, batch_ms=50)
    peers, orderers = ["peer0.org1", "peer0.org2"], ["orderer0"]
    acked: dict[str, int] = {}
    load = eov_load(net, acked, ["user1.org1", "user1.org2"])

    async def caught_up(node: str) -> None:
        if node in peers:  # the solo orderer is the reference itself
            await _behind(net, node, orderers, "orderer")()

    await run_cycles(sup, load, ["orderer0", "peer0.org2", "peer0.org1", "orderer0"], caught_up)
    lost, duplicated = await check_eov(net, peers, orderers, acked)
    _report("eov-solo", acked, lost, duplicated, load)


async def test_kill9_cycles_endorse_order_validate_pbft(network: Start) -> None:
    net, sup = network(BFT_NET)
    peers = ["peer0.org1", "peer0.org2"]
    orderers = ["orderer.a", "orderer.b", "orderer.c", "orderer.d"]
    acked: dict[str, int] = {}
    load = eov_load(net, acked, ["user1.org1", "user1.org2"])

    async def caught_up(node: str) -> None:
        # a restarted orderer must rejoin before the next kill, or two of four would be out
        await _behind(net, node, [o for o in orderers if o != node], "orderer")()

    victims = ["orderer.a", "peer0.org2", "orderer.b", "orderer.c", "peer0.org1", "orderer.d"]
    await run_cycles(sup, load, victims, caught_up)
    lost, duplicated = await check_eov(net, peers, orderers, acked)
    _report("eov-pbft", acked, lost, duplicated, load)


def _report(flow: str, acked: dict[str, Any], lost: int, duplicated: int, load: Load) -> None:
    ok = lost == 0 and duplicated == 0 and len(acked) >= STEP * (CYCLES + 1)
    record(
        "kill9",
        flow=flow,
        cycles=CYCLES,
        acked=len(acked),
        lost=lost,
        duplicated=duplicated,
        failures=load.failures,
        ok=ok,
    )
    assert lost == 0, f"{flow}: {lost} acknowledged lost"
    assert duplicated == 0, f"{flow}: {duplicated} acknowledged duplicated"
    assert ok, f"{flow}: only {len(acked)} acknowledged"


# --- notaries -------------------------------------------------------------------------------


def _pair_op(
    notarise: Callable[[Any, Any], Awaitable[bool]],
    build: Callable[[Any, Ref], Any],
    acked: dict[str, list[bytes]],
) -> Callable[[Any, int], Awaitable[None]]:
    """Two transactions competing for one fresh input, sent at once; each signed one is acked."""

    async def op(client: Any, _i: int) -> None:
        ref = Ref(secrets.token_hex(32), 0)
        wires = [build(client, ref), build(client, ref)]
        got = await asyncio.gather(*(notarise(client, w) for w in wires), return_exceptions=True)
        for wire, signed in zip(wires, got, strict=True):
            if signed is True:
                acked[wire.tx_id] = [ref.key]
        failed = [g for g in got if isinstance(g, BaseException)]
        if failed:
            raise failed[0]

    return op


def _double_spends(acked: dict[str, list[bytes]]) -> int:
    consumers: dict[bytes, int] = {}
    for refs in acked.values():
        for ref in refs:
            consumers[ref] = consumers.get(ref, 0) + 1
    return sum(1 for n in consumers.values() if n > 1)


async def test_kill9_cycles_single_notary(network: Start) -> None:
    net, sup = network(NOTARY_NET)
    party = PartyFiles.load(net, "c1.org1")
    acked: dict[str, list[bytes]] = {}

    async def notarise(client: NotaryClient, wire: Any) -> bool:
        try:
            await client.notarise(request_for(wire, party.signer))
        except grpc.aio.AioRpcError as exc:
            if exc.code() in REFUSED:
                return False
            raise
        return True

    def build(_client: NotaryClient, ref: Ref) -> Any:
        return make_tx(party.signer, [ref])[1]

    load = Load(
        lambda _k: NotaryClient.connect(party, "notary0"),
        _pair_op(notarise, build, acked),
        lambda: len(acked),
    )

    async def caught_up(_node: str) -> None:
        return None

    await run_cycles(sup, load, ["notary0"], caught_up)
    notarised = notarised_rows(net)
    spent = dict(spent_rows(net))
    lost = sum(
        1
        for tx_id, refs in acked.items()
        if tx_id not in notarised or any(spent.get(r) != tx_id for r in refs)
    )
    _report("single-notary", acked, lost, _double_spends(acked), load)


async def test_kill9_cycles_notary_cluster(network: Start) -> None:
    net, sup = network(CLUSTER_NET)
    party = PartyFiles.load(net, "c1.org1")
    acked: dict[str, list[bytes]] = {}

    async def notarise(client: ClusterNotaryClient, wire: Any) -> bool:
        verdict = await client.notarise(cluster_request(wire, party.signer))
        return bool(verdict.signed)

    load = Load(
        lambda _k: _cluster_client(party),
        _pair_op(notarise, lambda _c, ref: tx(party.signer, [ref]), acked),
        lambda: len(acked),
    )

    async def caught_up(node: str) -> None:
        others = [m for m in MEMBERS if m != node]
        target = min(len(member_spent(net, m)) for m in others)
        await wait_until(lambda: len(member_spent(net, node)) >= target, 90, f"{node} to catch up")

    try:
        await run_cycles(sup, load, MEMBERS, caught_up)
        wanted = {r: t for t, refs in acked.items() for r in refs}
        await wait_until(
            lambda: all(set(wanted) <= set(member_spent(net, m)) for m in MEMBERS),
            90,
            "every member to hold every acknowledged notarisation",
        )
        lost = 0
        for member in MEMBERS:
            rows = member_spent(net, member)
            lost += sum(1 for r, t in wanted.items() if rows.get(r) != t)
        _report("notary-cluster", acked, lost, _double_spends(acked), load)
    finally:
        stop_one_by_one(sup)


async def _cluster_client(party: PartyFiles) -> ClusterNotaryClient:
    return ClusterNotaryClient(party, CLUSTER)


# --- private payloads -----------------------------------------------------------------------

RECIPIENTS = ["peer0.org1", "peer0.org2", "peer0.regulator"]  # sender, recipient, auditor


def _private(net: Path, node: str) -> tuple[int, dict[bytes, tuple[int, bytes]], bytes | None]:
    """(executor cursor, payload hash -> (status, outcome hash), last stored private hash)."""
    db = read_only(ledger_path(net, node, role="private"))
    try:
        row = db.execute("SELECT value FROM meta WHERE name='cursor'").fetchone()
        ptxs = {
            bytes(h): (int(s), bytes(d))
            for h, s, d in db.execute("SELECT payload_hash, status, state_hash FROM ptxs")
        }
        last = db.execute(
            "SELECT state_hash FROM pstate_hashes ORDER BY block_number DESC LIMIT 1"
        ).fetchone()
    finally:
        db.close()
    return (0 if row is None else int(row[0])), ptxs, (None if last is None else bytes(last[0]))


async def test_kill9_cycles_private_payloads(network: Start) -> None:
    net, sup = network(PRIVACY_NET)
    peers = [*RECIPIENTS, "peer0.org3"]
    acked: dict[str, int] = {}
    hashes: dict[str, bytes] = {}
    written: dict[str, tuple[str, bytes]] = {}

    async def connect(_k: int) -> PrivacyClient:
        return PrivacyClient(await GatewayClient.connect(net, "user1.org1"))

    async def op(client: PrivacyClient, i: int) -> None:
        # one key per send: each acknowledged send's effect is checkable in the private state
        done = await client.submit_private("trades", ["Org2"], "kv", "put", f"p{i}", f"s{i}")
        acked[done.tx_id], hashes[done.tx_id] = done.status.result, done.payload_hash
        written[done.tx_id] = (f"p{i}", f"s{i}".encode())

    load = Load(connect, op, lambda: len(acked))

    async def caught_up(node: str) -> None:
        if node != "orderer0":
            await _behind(net, node, ["orderer0"], "orderer")()

    victims = ["peer0.org2", "orderer0", "peer0.org1", "peer0.org3", "peer0.regulator"]
    await run_cycles(sup, load, victims, caught_up)
    lost, duplicated = await check_eov(net, peers, ["orderer0"], acked)
    top = height(ledger_path(net, "orderer0", role="orderer"))
    for node in peers:
        await wait_until(lambda n=node: _private(net, n)[0] >= top, 90, f"{node} to execute")
    seen = {n: _private(net, n) for n in peers}
    states = {n: table_state(ledger_path(net, n, role="private"), "pstate") for n in RECIPIENTS}
    lost += sum(  # acknowledged private sends whose effect some recipient lacks
        1
        for key, value in written.values()
        if any(states[n].get(("kv", key), (b"",))[0] != value for n in RECIPIENTS)
    )
    _report("private", acked, lost, duplicated, load)
    for tx_id, digest in hashes.items():
        outcomes = {seen[n][1].get(digest) for n in RECIPIENTS}
        assert len(outcomes) == 1, f"recipients differ on {tx_id}: {outcomes}"
        assert next(iter(outcomes))[0] == P.PRIVATE_TX_STATUS_EXECUTED  # type: ignore[index]
        assert seen["peer0.org3"][1][digest][0] == P.PRIVATE_TX_STATUS_NOT_HELD
    assert all(s == states[RECIPIENTS[0]] for s in states.values()), "private states differ"
    # each recipient's stored private-state hash is the hash of its (common) private state
    assert {seen[n][2] for n in RECIPIENTS} == {state_hash_of(states[RECIPIENTS[0]])}
