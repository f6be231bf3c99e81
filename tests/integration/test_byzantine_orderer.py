"""One byzantine orderer of four cannot stop a BFT channel's peers (issue 10, finding 1).

bft-four (services/networks/bft-four.toml), orderer.a byzantine in two ways at once:
- as a *forwarder*: this test process holds orderer.a's key and TLS certificate and forwards
  poison over `ReplicaService.Exchange` to the three others — ~100 kinds made with orderer.a's
  own key (bad timestamps incl. the finding's nanos = 1e9, garbage, truncations, wrong channel,
  wrong tx_id, unsigned, forged signatures, unknown creators, oversized, private transactions
  with a bad hash, re-encoded duplicates, ...) and the same kinds signed by a member client
  colluding with it, plus exact copies of committed transactions;
- as *primary*: the node itself runs the TEST-ONLY hook (`DLTMW_TEST_BYZANTINE=orderer.a:poison`,
  `dltmw/runtime/roles/orderer/byzantine.py`); replica 0 is the primary of view 0, so its first
  pre-prepares carry poison, and it forwards fresh poison every second for the whole run.
Meanwhile valid transactions are submitted through both gateways. Asserted: every one commits
VALID; no poison is ever ordered (every envelope of every block passes the ordering rule, and
none of ours appears); no envelope is ordered twice; the honest orderers' chains and both peers'
chains are identical; peers stay SERVING with no ERROR or traceback in their logs; the honest
orderers logged their refusals and the hook logged proposing poison as primary. Each round runs
on a fresh network, so orderer.a is the primary in every round. Quick tier: 1 round; `make
soak`: 10 rounds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tiers import count, record

from dltmw.client import GatewayClient
from dltmw.client.files import ClientFiles
from dltmw.core.block import block_hash
from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError
from dltmw.core.genesis import read_genesis
from dltmw.core.identity import SigningIdentity
from dltmw.core.pbft import request_id
from dltmw.core.txcheck import check_orderable
from dltmw.rpc.tls import secure_channel
from dltmw.runtime.roles.orderer.byzantine import SIZE_MAX, poison_envelopes
from dltmw.runtime.roles.orderer.withhold import HOOK_ENV
from dltmw.v1 import block_pb2, replica_pb2, transaction_pb2
from integration.wire import logged_errors

from .test_pbft_ordering import TOPOLOGY as PBFT_TOPOLOGY
from .test_pbft_ordering import _blocks, _replica_stub, _signed

pytestmark = [pytest.mark.integration, pytest.mark.soak]
TOPOLOGY = PBFT_TOPOLOGY  # bft-four on the envelope path (test_pbft_ordering.TOPOLOGY)
HONEST = ["orderer.b", "orderer.c", "orderer.d"]
PEERS = ["peer0.org1", "peer0.org2"]
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
ROUNDS = count(1, 10)
TXS = 24
WAVES = 4  # poison waves per round, interleaved with the submissions


def _orderer_a(net: Path) -> SigningIdentity:
    home = net / "nodes" / "orderer.a"
    cert, key = (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    return SigningIdentity.from_pem("OrdererA", cert, key)


class Forwarder:
    """This process as orderer.a: forwards requests to the honest orderers over Exchange."""

    def __init__(self, net: Path) -> None:
        self.signer = _orderer_a(net)
        self.links = [_replica_stub(net, node, "orderer.a") for node in HONEST]
        self.sent: set[bytes] = set()  # request ids of the poison we forwarded
        self.duplicates: set[bytes] = set()  # ... and of exact copies of committed envelopes

    async def forward(self, requests: list[bytes], duplicates: list[bytes]) -> None:
        small = [r for r in requests if len(r) <= SIZE_MAX]
        chunks = [small[i : i + 100] for i in range(0, len(small), 100)]
        chunks += [[r] for r in requests if len(r) > SIZE_MAX]  # one per call: under 4 MiB
        chunks += [duplicates] if duplicates else []
        for chunk in chunks:
            message = replica_pb2.ReplicaMessage(
                forwarded=replica_pb2.ForwardedRequests(requests=chunk)
            )
            request = replica_pb2.ExchangeRequest(
                channel_id="trades", messages=[_signed(self.signer, 0, message)]
            )
            for _, stub in self.links:
                reply = await stub.Exchange(request, timeout=30)  # type: ignore[attr-defined]
                assert reply.accepted == 1
        self.sent.update(request_id(r) for r in requests)
        self.duplicates.update(request_id(r) for r in duplicates)

    async def close(self) -> None:
        for channel, _ in self.links:
            await channel.close()


def _log(net: Path, node: str) -> str:
    return (net / "run" / "logs" / f"{node}.log").read_text(errors="replace")


async def _serving(net: Path, node: str) -> bool:
    files = ClientFiles.load(net, "user1.org1")
    address = (net / "run" / "endpoints" / node).read_text().strip()
    channel = secure_channel(address, node, files.tls, 4 * 1024 * 1024)
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    finally:
        await channel.close()
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _wait(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def _hashes(blocks: list[block_pb2.Block]) -> list[bytes]:
    return [block_hash(b) for b in blocks]


def _settled(net: Path) -> bool:
    """Honest orderers and both peers at one height with one chain."""
    chains = [_hashes(_blocks(net, n)) for n in HONEST]
    chains += [_hashes(_blocks(net, p, "peer")) for p in PEERS]
    return all(c == chains[0] for c in chains)


async def _round(net: Path, number: int) -> dict[str, int]:
    genesis = block_pb2.Block.FromString((net / "channels" / "trades.block").read_bytes())
    views = {"trades": read_genesis(genesis)}
    member = ClientFiles.load(net, "user1.org1").signer
    forwarder = Forwarder(net)
    clients = [await GatewayClient.connect(net, c) for c in ("user1.org1", "user1.org2")]
    results: list[int] = []
    kinds: set[str] = set()
    try:
        for wave in range(WAVES):
            template = _committed_envelope(net)
            poison = poison_envelopes("trades", forwarder.signer, number * 100 + wave, template)
            poison += poison_envelopes("trades", member, number * 100 + wave, template)
            kinds.update(p.kind for p in poison)
            duplicates = [template] if template is not None else []
            await forwarder.forward([p.envelope for p in poison], duplicates)
            batch = range(wave * TXS // WAVES, (wave + 1) * TXS // WAVES)
            done = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        clients[i % 2].submit_transaction(
                            "trades", "kv", "put", f"r{number}k{i}", "v"
                        )
                        for i in batch
                    )
                ),
                120,
            )
            results += [d.status.result for d in done]
    finally:
        for client in clients:
            await client.close()
        await forwarder.close()
    assert results == [VALID] * TXS, f"valid transactions did not all commit: {results}"
    await _wait(lambda: _settled(net), 60, "honest orderers and peers to hold one chain")
    checked = _check_chain(net, views, forwarder.sent, forwarder.duplicates)
    return checked | {"kinds": len(kinds), "committed": TXS}


def _committed_envelope(net: Path) -> bytes | None:
    """A transaction already in a block (a template for mutations and an exact duplicate)."""
    for block in _blocks(net, "orderer.b")[1:]:
        if block.data.envelopes:
            return block.data.envelopes[0]
    return None


def _check_chain(
    net: Path, views: dict[str, ChannelView], poison: set[bytes], duplicates: set[bytes]
) -> dict[str, int]:
    chain = _blocks(net, "orderer.b")
    envelopes = [env for block in chain[1:] for env in block.data.envelopes]
    inadmissible = 0
    for env in envelopes:
        try:
            check_orderable(env, views)
        except ClientError:
            inadmissible += 1
    ids = [request_id(env) for env in envelopes]
    assert inadmissible == 0, f"{inadmissible} inadmissible envelope(s) were ordered"
    assert not poison & set(ids), "poison forwarded by this test was ordered"
    assert len(set(ids)) == len(ids), "an envelope was ordered twice"
    assert duplicates <= set(ids), "a committed envelope went missing"
    return {"poison_ordered": inadmissible, "blocks": len(chain)}


async def _check_nodes(net: Path) -> None:
    for peer in PEERS:
        assert await _serving(net, peer), f"{peer} is not SERVING"
        log = _log(net, peer)
        assert "Traceback" not in log and not logged_errors(log), f"{peer} logged an error:\n{log}"
    for node in HONEST:
        assert "refused inadmissible requests to order" in _log(net, node), node
    assert "as primary of view 0" in _log(net, "orderer.a"), "the hook never proposed poison"


async def test_one_byzantine_orderer_cannot_stop_the_peers(
    network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOOK_ENV, "orderer.a:poison")
    started = time.monotonic()
    totals = {"kinds": 0, "committed": 0, "poison_ordered": 0}
    for number in range(ROUNDS):
        net, sup = network(TOPOLOGY)
        outcome = await _round(net, number)
        await _check_nodes(net)
        codes = sup.stop_all()
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"
        totals["kinds"] = max(totals["kinds"], outcome["kinds"])
        totals["committed"] += outcome["committed"]
        totals["poison_ordered"] += outcome["poison_ordered"]
    record(
        "byzantine_orderer",
        kinds=totals["kinds"],
        rounds=ROUNDS,
        committed=totals["committed"],
        poison_ordered=totals["poison_ordered"],
        ok=True,
        seconds=round(time.monotonic() - started, 1),
    )
