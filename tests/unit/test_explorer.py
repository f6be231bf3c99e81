"""The explorer's JSON API on a ledger of 10,000 blocks built through the store (no network).

Speed is asserted the only way that does not depend on the machine: every page is one indexed
query (`EXPLAIN QUERY PLAN` names the primary key, never a scan), and the pages are correct
(walking them all visits each block once, newest first). Bad requests are 4xx JSON, never 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest
from utxo_parties import make_parties

from dltmw.aio.tasks import TaskOwner
from dltmw.core.block import make_block
from dltmw.core.handlers.notary import Ask, Decide, SingleNotary
from dltmw.core.hashing import ZERO_HASH
from dltmw.core.notary import NotarisationAsk
from dltmw.core.utxo.model import Ref, Window
from dltmw.ledger.notary_store import NotaryStore
from dltmw.ledger.sqlite import BLOCKS_BEFORE_SQL, ChannelLedger
from dltmw.runtime.config_file import OperationsSettings
from dltmw.runtime.explorer.api import Explorer
from dltmw.runtime.explorer.view import block_detail, transaction
from dltmw.runtime.metrics import NodeMetrics
from dltmw.runtime.operations import OperationsServer, Probe
from dltmw.v1 import (
    common_pb2,
    identity_pb2,
    proposal_pb2,
    transaction_pb2,
)

BLOCKS = 10_000
CHANNEL = "trades"
H = common_pb2


def tx_id(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def endorser_envelope(n: int) -> bytes:
    creator = identity_pb2.Identity(org_id="Org1").SerializeToString()
    header = H.Header(
        type=H.HEADER_TYPE_ENDORSER_TRANSACTION, channel_id=CHANNEL, tx_id=tx_id(n), creator=creator
    )
    call = proposal_pb2.ContractInvocation(contract="kv", function="put", args=[b"k", b"v%d" % n])
    proposal = proposal_pb2.Proposal(
        header=header.SerializeToString(), payload=call.SerializeToString()
    )
    response = proposal_pb2.ProposalResponsePayload(
        events=[proposal_pb2.ContractEvent(contract="kv", name="put", payload=b"k")]
    )
    tx = transaction_pb2.Transaction(
        proposal_bytes=proposal.SerializeToString(),
        response_payload=response.SerializeToString(),
    )
    payload = H.Payload(header=header.SerializeToString(), data=tx.SerializeToString())
    return H.Envelope(payload=payload.SerializeToString()).SerializeToString()


def private_envelope(n: int, digest: bytes) -> bytes:
    header = H.Header(type=H.HEADER_TYPE_PRIVATE_TRANSACTION, channel_id=CHANNEL, tx_id=tx_id(n))
    data = transaction_pb2.PrivateTransaction(payload_hash=digest).SerializeToString()
    payload = H.Payload(header=header.SerializeToString(), data=data)
    return H.Envelope(payload=payload.SerializeToString()).SerializeToString()


async def build(path: Path) -> None:
    ledger = await ChannelLedger.open(path, synchronous="NORMAL")
    previous = ZERO_HASH
    try:
        for n in range(BLOCKS):
            env = private_envelope(n, hashlib.sha256(b"secret").digest()) if n == 7 else None
            block = make_block(CHANNEL, n, previous, [env or endorser_envelope(n)])
            code = transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT if n % 3 == 2 else 1
            block.metadata.validation_codes.append(code)
            await ledger.commit_block(block, [tx_id(n)])
            previous = ledger.last_hash
    finally:
        await ledger.close()


@pytest.fixture(scope="module")
def ledger_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("explorer") / f"{CHANNEL}.peer.sqlite"
    asyncio.run(build(path))
    return path


class Holder:
    def __init__(self, ledger: ChannelLedger) -> None:
        self.ledger = ledger


@pytest.fixture
async def explorer(ledger_file: Path) -> AsyncIterator[Explorer]:
    ledger = await ChannelLedger.open(ledger_file)
    try:
        yield Explorer("peer0.org1", "Org1", {CHANNEL: Holder(ledger)}, {}, {})
    finally:
        await ledger.close()


async def get(explorer: Explorer, path: str) -> tuple[int, object]:
    target = path.partition("?")
    query = {k: [v] for k, _, v in (p.partition("=") for p in target[2].split("&") if p)}
    status, body, kind = await explorer.answer("GET", target[0], query)
    return status, (json.loads(body) if kind == "application/json" else body)


def plan(path: Path, sql: str, args: tuple[object, ...]) -> str:
    db = sqlite3.connect(path)
    try:
        return " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args))
    finally:
        db.close()


def test_every_page_query_is_an_indexed_search(ledger_file: Path) -> None:
    blocks = plan(ledger_file, BLOCKS_BEFORE_SQL, (5000, 100))
    assert blocks == "SEARCH blocks USING INTEGER PRIMARY KEY (rowid<?)", blocks
    one = plan(ledger_file, "SELECT data FROM blocks WHERE number>=? AND number<?", (5, 6))
    assert "USING INTEGER PRIMARY KEY" in one, one
    tx = plan(ledger_file, "SELECT block_number, tx_index, code FROM txs WHERE tx_id=?", ("x",))
    assert tx == "SEARCH txs USING PRIMARY KEY (tx_id=?)", tx


async def test_pages_walk_every_block_newest_first(explorer: Explorer) -> None:
    seen: list[int] = []
    before = ""
    for _ in range(BLOCKS // 100 + 1):  # bounded: one more page than needed
        status, page = await get(explorer, f"/api/channels/{CHANNEL}/blocks?limit=100{before}")
        assert status == 200
        assert isinstance(page, dict)
        assert page["height"] == BLOCKS
        seen += [b["number"] for b in page["blocks"]]
        if page["next_before"] is None:
            break
        before = f"&before={page['next_before']}"
    assert seen == list(range(BLOCKS - 1, -1, -1))
    status, page = await get(explorer, f"/api/channels/{CHANNEL}/blocks?before=3&limit=5")
    assert isinstance(page, dict)
    assert [b["number"] for b in page["blocks"]] == [2, 1, 0]
    assert page["blocks"][0]["codes"] == {"MVCC_READ_CONFLICT": 1}
    _, default = await get(explorer, f"/api/channels/{CHANNEL}/blocks")
    assert isinstance(default, dict)
    assert [b["number"] for b in default["blocks"]] == list(range(9999, 9979, -1))


async def test_block_and_transaction_show_codes_events_and_private_hashes(
    explorer: Explorer,
) -> None:
    status, block = await get(explorer, f"/api/channels/{CHANNEL}/blocks/5")
    assert status == 200
    assert isinstance(block, dict)
    (tx,) = block["txs"]
    assert (tx["tx_id"], tx["code"], tx["contract"], tx["function"]) == (
        tx_id(5),
        "MVCC_READ_CONFLICT",
        "kv",
        "put",
    )
    assert tx["args"] == ["k", "v5"]
    assert tx["events"] == [{"contract": "kv", "name": "put", "payload": "k"}]
    assert tx["creator"]["org"] == "Org1"
    status, found = await get(explorer, f"/api/channels/{CHANNEL}/txs/{tx_id(9000)}")
    assert status == 200
    assert isinstance(found, dict)
    assert (found["block_number"], found["tx_index"], found["code"]) == (9000, 0, "VALID")
    _, private = await get(explorer, f"/api/channels/{CHANNEL}/txs/{tx_id(7)}")
    assert isinstance(private, dict)
    assert private["kind"] == "private_transaction"
    assert private["private_payload_hash"] == hashlib.sha256(b"secret").hexdigest()
    assert "secret" not in json.dumps(private)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/channels/trades/blocks?limit=0", 400),
        ("/api/channels/trades/blocks?limit=101", 400),
        ("/api/channels/trades/blocks?limit=ten", 400),
        ("/api/channels/trades/blocks?before=-1", 400),
        ("/api/channels/trades/blocks?before=99999999999999999999999", 400),
        ("/api/channels/trades/blocks/10000", 404),
        ("/api/channels/trades/blocks/x1", 400),
        ("/api/channels/other/blocks", 404),
        ("/api/channels/trades/txs/" + "0" * 64, 404),
        ("/api/channels/trades/txs/NOT-AN-ID", 400),
        ("/api/nothing", 404),
        ("/explorer/../../etc/passwd", 404),
    ],
)
async def test_bad_requests_are_4xx_json(explorer: Explorer, path: str, status: int) -> None:
    got, body = await get(explorer, path)
    assert got == status
    assert isinstance(body, dict)
    assert body["error"]


async def test_the_page_is_served_and_only_to_loopback_by_default(explorer: Explorer) -> None:
    status, body = await get(explorer, "/explorer/")
    assert status == 200
    assert isinstance(body, bytes)
    assert b"app.js" in body
    assert (await get(explorer, "/explorer/app.js"))[0] == 200
    assert (await explorer.answer("POST", "/api/node", {}))[0] == 405

    def server(mode: str) -> OperationsServer:
        settings = OperationsSettings(explorer=mode)  # type: ignore[arg-type]
        probe = Probe(lambda: (True, ""), list)
        return OperationsServer(settings, NodeMetrics(), probe, TaskOwner(), None, explorer)

    def request(target: str) -> h11.Request:
        return h11.Request(method="GET", target=target, headers=[("host", "x")])

    node = request("/api/node")
    assert (await server("loopback").answer(node, b"", True)).status == 200
    assert (await server("loopback").answer(node, b"", False)).status == 403
    assert (await server("any").answer(node, b"", False)).status == 200
    assert (await server("off").answer(node, b"", True)).status == 404
    moved = await server("loopback").answer(request("/explorer"), b"", True)
    assert (moved.status, moved.location) == (308, "/explorer/")


def test_unparsable_envelopes_are_shown_not_raised() -> None:
    assert transaction(b"\xff\xff")["kind"] == "unparsable"
    header = H.Header(type=H.HEADER_TYPE_ENDORSER_TRANSACTION, tx_id="ab").SerializeToString()
    payload = H.Payload(header=header, data=b"\xff\x00junk").SerializeToString()
    shown = transaction(H.Envelope(payload=payload).SerializeToString())
    assert (shown["tx_id"], shown["kind"]) == ("ab", "unparsable")


def test_a_forged_envelope_is_shown_with_its_tx_id_as_a_claim() -> None:
    """A block whose committing peer found envelope 1 invalid before its signature verified
    (`metadata.unauthenticated`): its tx id is only claimed, the others' are theirs."""
    envs = [
        H.Envelope(
            payload=H.Payload(
                header=H.Header(
                    type=H.HEADER_TYPE_ENDORSER_TRANSACTION, tx_id=tx_id
                ).SerializeToString()
            ).SerializeToString()
        ).SerializeToString()
        for tx_id in ("aa", "bb")
    ]
    block = make_block(CHANNEL, 1, ZERO_HASH, envs)
    block.metadata.validation_codes.extend([0, 0])
    block.metadata.unauthenticated.append(1)
    first, second = block_detail(block)["txs"]
    assert (first["tx_id"], "claimed_tx_id" in first) == ("aa", False)
    assert (second["tx_id"], second["claimed_tx_id"], second["unauthenticated"]) == ("", "bb", True)


class NotaryHolder:
    def __init__(self, store: NotaryStore) -> None:
        self.store = store


async def test_a_notary_node_shows_its_decision_on_a_signed_transaction(tmp_path: Path) -> None:
    parties = make_parties()
    store = NotaryStore(tmp_path / "notary.sqlite", parties.notary.sign)
    store.open()
    try:
        signed, refused = tx_id(1), tx_id(2)
        spend = Ref("01" * 32, 0)

        def step() -> None:
            core = SingleNotary(parties.notary.sign)
            asks = [
                Ask(NotarisationAsk(t, (spend,), (), Window(), b""), 0, t)
                for t in (signed, refused)
            ]
            core.step(Decide(tuple(asks), store.rows_for([a.ask for a in asks])))
            for spent in core.ready().decided:
                store.record(spent)

        store.run(step)
        notaries = {"notary": NotaryHolder(store)}
        explorer = Explorer("notary0", "NotaryOrg", {}, {}, {}, lambda: notaries)
        assert (await get(explorer, "/api/node"))[1] == {
            "node": "notary0",
            "org": "NotaryOrg",
            "channels": [],
            "notaries": ["notary"],
        }
        status, found = await get(explorer, f"/api/notaries/notary/txs/{signed}")
        assert status == 200
        assert isinstance(found, dict)
        assert (found["tx_id"], found["inputs_consumed"]) == (signed, 1)
        assert found["signature"] and found["batch_proof"]["leaf_count"] >= 1
        assert (await get(explorer, f"/api/notaries/notary/txs/{refused}"))[0] == 404
        assert (await get(explorer, f"/api/notaries/other/txs/{signed}"))[0] == 404
        assert (await get(explorer, "/api/notaries/notary/txs/zz"))[0] == 400
    finally:
        store.close()
