"""JetStream ordering on real processes (services/networks/jetstream-three.toml): three
nats-servers replicate the channel's stream, two orderers cut blocks from it, two peers.

One network for the module (the tests run in order and each leaves it whole again):
- kill -9 of one orderer under a small load: no acknowledged transaction lost or committed
  twice, the peers' chains equal the surviving orderer's, and the restarted orderer cuts the
  same chain again from the stream (resuming after the position stored with its last block);
- kill -9 of the nats-server leading the stream under a small load: the same guarantees, another
  server leads, and the killed one rejoins;
- losing a majority of the nats-servers: Submit fails with UNAVAILABLE / ORDERING_UNAVAILABLE,
  and succeeds again once one of them is back;
- an orderer added later (`org add-node`, let into the cluster without a hand edit, voted in,
  joined) cuts the same chain and orders alone while the first two are down.
"""

from __future__ import annotations

import asyncio
import sqlite3
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import nats as nats_client
import pytest

from dltmw.client import GatewayClient
from dltmw.core.block import block_hash
from dltmw.core.identity import reference_bytes
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.ca import IssuedCert, issue_cert
from dltmw.pki.nats_tls import subject_of
from dltmw.pki.network import init_network
from dltmw.rpc.status import reason_of
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.config_file import JetStreamTable
from dltmw.runtime.roles.orderer.jetstream_log import StreamLog, client_tls
from dltmw.v1 import block_pb2, transaction_pb2

from .cli import dltmw
from .ns_jetstream_load import put
from .test_pbft_ordering import _cli_add_orderer, _orderer_identity

pytestmark = pytest.mark.integration
TOPOLOGY = (Path(__file__).parents[2] / "services/networks/jetstream-three.toml").read_text()
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
ORDERERS = ["orderer0", "orderer1"]
PEERS = ["peer0.org1", "peer0.org2"]
TXS = 60


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Supervisor]]:
    tmp = tmp_path_factory.mktemp("jetstream")
    (tmp / "topology.toml").write_text(TOPOLOGY)
    init_network(tmp / "topology.toml", tmp / "net")
    sup = Supervisor(tmp / "net")
    try:
        sup.up(timeout_s=90)
        yield tmp / "net", sup
    finally:
        codes = sup.stop_all()
        nats = sup.nats
        assert nats is not None
        assert all(nats.pid(i) is None for i in range(3)), "a nats-server outlived the network"
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"


def _blocks(net: Path, node: str, role: str) -> list[block_pb2.Block]:
    path = net / "nodes" / node / "data" / f"trades.{role}.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT data FROM blocks ORDER BY number").fetchall()
    finally:
        db.close()
    return [block_pb2.Block.FromString(data) for (data,) in rows]


def _valid_tx_ids(net: Path, peer: str) -> list[str]:
    db = sqlite3.connect(f"file:{net}/nodes/{peer}/data/trades.peer.sqlite?mode=ro", uri=True)
    try:
        return [t for (t,) in db.execute("SELECT tx_id FROM txs WHERE code=?", (VALID,))]
    finally:
        db.close()


def _hashes(net: Path, node: str, role: str) -> list[bytes]:
    return [block_hash(b) for b in _blocks(net, node, role)]


async def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _load_with(net: Path, prefix: str, fault: Callable[[], None]) -> list[str]:
    """Submit TXS puts (8 at a time); after a third committed, run `fault`. A submission
    refused as UNAVAILABLE is resubmitted (the same envelope, as a client retries) for up to
    60 s. Returns the tx ids whose submission was acknowledged and that committed valid."""
    client = await GatewayClient.connect(net, "user1.org1")
    committed: list[str] = []
    lost: list[str] = []  # acknowledged, never committed
    sem = asyncio.Semaphore(8)

    async def put_one(i: int) -> None:
        async with sem:
            tx_id, refused = await put(client, f"{prefix}{i}")
            if refused:
                return  # not acknowledged: it may or may not be ordered, never twice
            try:
                status = await client.commit_status("trades", tx_id)
            except grpc.aio.AioRpcError as exc:  # e.g. WAIT_TIMEOUT: never committed
                lost.append(f"{tx_id[:12]}: {reason_of(exc)}")
                return
            if status.result == VALID:
                committed.append(tx_id)

    try:
        load = asyncio.gather(*(put_one(i) for i in range(TXS)))
        await _wait(lambda: len(committed) >= TXS // 3 or load.done(), 60, "progress")
        assert len(committed) >= TXS // 3, "no progress before the fault"
        before = len(committed)
        await asyncio.to_thread(fault)
        try:
            await asyncio.wait_for(load, 120)
        except TimeoutError:
            pytest.fail(f"load did not finish after the fault: {len(committed)}/{TXS}")
        assert not lost, f"acknowledged but never committed: {lost[:3]}"
        assert len(committed) > before, "commits did not resume after the fault"
        assert len(committed) == TXS, f"only {len(committed)}/{TXS} submissions acknowledged"
        return committed
    finally:
        await client.close()


async def _check_chains(net: Path, orderers: list[str], committed: list[str]) -> None:
    """Every live orderer and every peer holds the same chain; nothing acknowledged is lost or
    committed twice."""
    await _wait(
        lambda: len({tuple(_hashes(net, o, "orderer")) for o in orderers}) == 1,
        60,
        "the orderers to agree",
    )
    chain = _hashes(net, orderers[0], "orderer")
    for peer in PEERS:
        await _wait(lambda p=peer: len(_hashes(net, p, "peer")) >= len(chain), 60, peer)
        assert _hashes(net, peer, "peer")[: len(chain)] == chain, f"{peer} diverged"
        valid = _valid_tx_ids(net, peer)
        assert len(valid) == len(set(valid)), "a transaction was committed twice"
        assert set(committed) <= set(valid), "an acknowledged transaction was lost"


async def test_kill9_one_orderer_under_load(net: tuple[Path, Supervisor]) -> None:
    path, sup = net
    committed = await _load_with(path, "o", lambda: sup.kill("orderer0"))
    await _check_chains(path, ["orderer1"], committed)
    # blocks signed by the survivor alone were accepted by the peers
    signers = {
        s.signer for b in _blocks(path, "peer0.org1", "peer")[1:] for s in b.metadata.signatures
    }
    assert len(signers) >= 1
    sup.start("orderer0")
    await asyncio.to_thread(sup.wait_ready, "orderer0", 60)
    await _check_chains(path, ORDERERS, committed)


def _tls_of(net: Path, node: str) -> ssl.SSLContext | None:
    """A client TLS context with `node`'s TLS certificate, as its orderer connects."""
    settings = NodeConfig.load(net / "nodes" / "orderer0" / "node.toml").jetstream
    assert settings is not None and settings.ca_file, "the cluster runs without TLS"
    home = net / "nodes" / node
    return client_tls(settings, home / "tls.pem", home / "tls.key")


async def _stream_leader(net: Path, urls: list[str], not_: str = "") -> str:
    """The name of the nats-server leading the channel's stream (the one worth killing), once
    there is one other than `not_` (waited for, bounded: a new leader is being elected)."""
    tls = _tls_of(net, "orderer0")
    nc = await nats_client.connect(servers=urls, max_reconnect_attempts=-1, tls=tls)
    stream = StreamLog("trades", JetStreamTable(), "").stream
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                info = await nc.jetstream(timeout=1).stream_info(stream)
                leader = info.cluster.leader if info.cluster is not None else None
                if leader and leader != not_:
                    return leader
            except nats_client.errors.Error:
                pass
            assert time.monotonic() < deadline, "the stream has no leader"
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def test_kill9_the_stream_leader_nats_server_under_load(
    net: tuple[Path, Supervisor],
) -> None:
    path, sup = net
    nats = sup.nats
    assert nats is not None
    leader = await _stream_leader(path, nats.urls)
    index = [m.name for m in nats.plan.members].index(leader)
    committed = await _load_with(path, "n", lambda: nats.kill(index))
    await _check_chains(path, ORDERERS, committed)
    await _stream_leader(path, nats.urls, not_=leader)  # another server leads now
    await asyncio.to_thread(nats.start_one, index)


async def test_only_the_orderers_may_connect_to_the_cluster(
    net: tuple[Path, Supervisor], tmp_path: Path
) -> None:
    """Mutual TLS with the orderers' certificate subjects as the only users: a peer of another
    organisation (a valid TLS certificate of the network), a certificate of the orderers' own
    organisation that names no orderer of the cluster, and a client without a certificate
    cannot connect, so nobody but the orderers can append to the stream."""
    path, sup = net
    nats = sup.nats
    assert nats is not None and all(u.startswith("tls://") for u in nats.urls)

    async def connect(tls: ssl.SSLContext | None) -> None:
        nc = await nats_client.connect(
            servers=nats.urls,
            tls=tls,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=2,
        )
        await nc.close()

    await connect(_tls_of(path, "orderer1"))
    with pytest.raises(OSError):  # its CA is not the cluster's: an alert, or a reset
        await connect(_tls_of(path, "peer0.org1"))
    org = path / "orgs" / "OrdererOrg"
    ca = IssuedCert((org / "ca.pem").read_bytes(), (org / "ca.key").read_bytes())
    intruder = issue_cert(ca, "OrdererOrg", "intruder", "orderer", tls=True, hosts=["localhost"])
    (tmp_path / "tls.pem").write_bytes(intruder.cert_pem)
    (tmp_path / "tls.key").write_bytes(intruder.key_pem)
    settings = NodeConfig.load(path / "nodes" / "orderer0" / "node.toml").jetstream
    assert settings is not None
    with pytest.raises(nats_client.errors.Error, match="Authorization Violation"):
        await connect(client_tls(settings, tmp_path / "tls.pem", tmp_path / "tls.key"))
    plain = ssl.create_default_context(cafile=str(path / "jetstream" / "ca.pem"))
    with pytest.raises((nats_client.errors.Error, OSError)):  # no certificate: no handshake
        await connect(plain)


async def test_majority_loss_is_unavailable_then_recovers(net: tuple[Path, Supervisor]) -> None:
    path, sup = net
    nats = sup.nats
    assert nats is not None
    client = await GatewayClient.connect(path, "user1.org1")

    async def submit(key: str) -> None:
        signed, _ = client.proposal("trades", "kv", "put", (key, "v"))
        endorsed = await client.endorse(signed)
        await client.submit(client.envelope(endorsed.prepared_payload))

    try:
        await submit("before")
        nats.kill(1)
        nats.kill(2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await submit("during")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert reason_of(refused.value) == "ORDERING_UNAVAILABLE"
        await asyncio.to_thread(nats.start_one, 1)
        deadline = time.monotonic() + 60
        while True:  # the stream elects a leader again; bounded
            try:
                await submit("after")
                break
            except grpc.aio.AioRpcError as exc:
                assert reason_of(exc) == "ORDERING_UNAVAILABLE", exc
                assert time.monotonic() < deadline, "ordering did not resume"
                await asyncio.sleep(0.2)
        await asyncio.to_thread(nats.start_one, 2)
    finally:
        await client.close()
    await _check_chains(path, ORDERERS, [])


async def test_an_orderer_added_later_is_let_into_the_cluster_and_orders_alone(
    net: tuple[Path, Supervisor], tmp_path: Path
) -> None:
    """`dltmw org add-node --role orderer` on a network with a JetStream cluster writes the new
    orderer's `[jetstream]` table and lets its TLS subject into every member's `nats.conf`,
    reloading the running members (no hand edit). Started, added to the channel by its admins
    and then joined, orderer2 consumes the stream from the start and cuts the very chain the others
    cut; with orderer0 and orderer1 stopped, it alone orders (the gateway moves on to it, the
    peers fetch from it). Without the admission it could not connect at all (the previous
    test's intruder shows the cluster refuses an unknown subject)."""
    path, sup = net
    said = await asyncio.to_thread(
        dltmw, "org", "add-node", str(path), "orderer2", "--role", "orderer", "--org", "OrdererOrg"
    )
    assert "orderer2 let into the JetStream cluster" in said and "3 running" in said, said
    subject = subject_of((path / "nodes" / "orderer2" / "tls.pem").read_bytes())
    for member in ("n0", "n1", "n2"):
        assert subject in (path / "jetstream" / member / "nats.conf").read_text(), member
    settings = NodeConfig.load(path / "nodes" / "orderer2" / "node.toml").jetstream
    assert settings is not None and settings.servers == sup.nats.urls  # type: ignore[union-attr]
    sup.start("orderer2")
    sup.wait_ready("orderer2", timeout_s=60)
    await _cli_add_orderer(path, tmp_path, "orderer2")  # a JetStream orderer joins once named
    joined = await asyncio.to_thread(dltmw, "channel", "join", str(path), "trades", "orderer2")
    assert "joined trades" in joined
    three = [*ORDERERS, "orderer2"]
    client = await GatewayClient.connect(path, "user1.org1", pipelined=False)
    try:

        async def put(key: str) -> int:
            done = await client.submit_transaction("trades", "kv", "put", key, "v")
            return done.status.result

        assert await put("added") == VALID
        await _wait(
            lambda: len({tuple(_hashes(path, o, "orderer")) for o in three}) == 1,
            60,
            "orderer2 to cut the same chain",
        )
        alone_from = len(_blocks(path, "peer0.org1", "peer"))
        for orderer in ORDERERS:
            sup.stop(orderer)
        try:
            assert [await put(f"alone{i}") for i in range(3)] == [VALID] * 3
        finally:
            for orderer in ORDERERS:
                sup.start(orderer)
            for orderer in ORDERERS:
                sup.wait_ready(orderer, timeout_s=60)
    finally:
        await client.close()
    # The blocks the peers took while orderer0 and orderer1 were down are orderer2's (named by
    # its reference: the channel takes identity references, `light_client.block_signer`).
    mine = reference_bytes(_orderer_identity(path, "orderer2", "OrdererOrg"))
    alone = _blocks(path, "peer0.org1", "peer")[alone_from:]
    assert alone and all(b.metadata.signatures[0].signer == mine for b in alone)
    await _check_chains(path, three, [])
