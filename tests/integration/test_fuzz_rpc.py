"""Malformed-input fuzzer for every RPC of every service a node serves.

Two real networks: a ledger network (solo orderer, two peers that are also vault nodes, a single
notary) serving Gateway, Endorser, Orderer, PrivacyManager, Flow, Vault, Notary, Admin, Health
and Reflection; and a four-member notary cluster serving Notary and Replica (PBFT-lite), Admin,
Health and Reflection. The methods come from the services each node lists through reflection,
so a new RPC is fuzzed automatically — and the test fails if it has no request generator
(`fuzz_requests.GENERATORS`).

Per method, `count(1000, 10000)` calls, each made by one of six strategies (random bytes, byte
mutations of a valid request, mutated request fields, mutated signed-body fields signed anew,
out-of-range timestamps signed anew, the valid request) as one of four parties (a member, a
signer of another organisation, a forged signer, a certificate from an unknown CA), over reused
connections with bounded concurrency. No call may end UNKNOWN or INTERNAL (an unexpected
exception or a crash inside the node). Afterwards every node is SERVING, a valid transaction
still commits (a notarisation still succeeds), and every node's RSS is within +50 MB of its
baseline. `record("fuzz", ...)` reports the statuses per method for `make soak`.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tiers import count, record

from dltmw.client import GatewayClient
from dltmw.client.files import ClientFiles
from dltmw.client.notary_cluster import ClusterNotaryClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.utxo import PartyFiles, VaultClient
from dltmw.core.utxo.build import (
    TxSpec,
    build_transaction,
    cash_output,
    notarisation_payload,
    sign_request,
)
from dltmw.core.utxo.model import Command, read_transaction
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.rpc.tls import TlsMaterial
from integration.fuzz_requests import (
    GENERATORS,
    STRATEGIES,
    Party,
    World,
    fuzzed,
    load_push_keys,
    parties,
)
from integration.wire import channel_to, client_tls, listed_services, rss_mb

pytestmark = [pytest.mark.integration, pytest.mark.soak]
# DLTMW_FUZZ_PER_METHOD overrides the count (e.g. to reproduce); DLTMW_FUZZ_ONLY=<substring>
# fuzzes only the methods whose path contains it (e.g. one service at soak counts).
PER_METHOD = int(os.environ.get("DLTMW_FUZZ_PER_METHOD", count(1000, 10_000)))
ONLY = os.environ.get("DLTMW_FUZZ_ONLY", "")
CONCURRENCY = 24
CALL_TIMEOUT_S = 5.0
STREAM_READS_MAX = 3  # responses read from a server stream before the client cancels it
RSS_GROWTH_MAX_MB = 50.0
FORBIDDEN = {"UNKNOWN", "INTERNAL"}
LEDGER = """
name = "fuzz-ledger"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "OrdererOrg"
[[orgs]]
id = "NotaryOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway", "vault"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway", "vault"]
[[nodes]]
id = "notary0"
org = "NotaryOrg"
roles = ["notary"]
[[clients]]
id = "user1.org1"
org = "Org1"
[[clients]]
id = "user1.org2"
org = "Org2"
[[channels]]
id = "trades"
members = ["Org1", "Org2"]
orderers = ["orderer0"]
endorsement_policy = "AND(Org1.peer, Org2.peer)"
contracts = [{ name = "bank" }, { name = "kv", endorsement_policy = "OR(Org1.peer, Org2.peer)" }]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = 50 }
"""
CLUSTER_ID = "notaries"
MEMBERS = [f"notary{i}" for i in range(4)]
CLUSTER = (
    'name = "fuzz-cluster"\n'
    + "".join(f'[[orgs]]\nid = "{o}"\n' for o in ["Org1", "Org2", "N0", "N1", "N2", "N3"])
    + "".join(f'[[nodes]]\nid = "notary{i}"\norg = "N{i}"\nroles = ["notary"]\n' for i in range(4))
    + '[[clients]]\nid = "user1.org1"\norg = "Org1"\n[[clients]]\nid = "user1.org2"\norg = "Org2"\n'
    + f'[[notary_clusters]]\nid = "{CLUSTER_ID}"\nmembers = {MEMBERS!r}\n'.replace("'", '"')
)
NODE_TO_NODE = {
    "/dltmw.v1.PrivacyManagerService/Push",
    "/dltmw.v1.PrivacyManagerService/Resend",
    "/dltmw.v1.PrivacyManagerService/PrivateStateHash",
    "/dltmw.v1.PrivacyManagerService/Agree",
    "/dltmw.v1.FlowService/ProposeTransaction",
    "/dltmw.v1.FlowService/OfferInputs",
    "/dltmw.v1.FlowService/FetchTransaction",
    "/dltmw.v1.FlowService/RecordTransaction",
    "/dltmw.v1.ReplicaService/Exchange",
    "/dltmw.v1.ReplicaService/ExchangeStream",
}
# Server streams that follow (never end): the first response shows the call was served.
SERVER_STREAM_READS = {
    "/grpc.health.v1.Health/Watch": 1,
    "/dltmw.v1.GatewayService/Events": 1,
}
# Calls that wait for something a mutated request may name but never comes (a block far ahead,
# a transaction never submitted): a short deadline keeps the run short.
WAITING_TIMEOUT_S = {
    "/dltmw.v1.GatewayService/Events": 2.0,
    "/dltmw.v1.GatewayService/CommitStatus": 2.0,
}


@dataclass(frozen=True)
class Method:
    """A served method and the nodes serving it."""

    path: str
    client_streaming: bool
    server_streaming: bool
    nodes: tuple[str, ...]


async def served_methods(net: Path, nodes: Sequence[str]) -> dict[str, Method]:
    """Every method each node lists through reflection, with the nodes that serve it."""
    tls = client_tls(net, "user1.org1")
    pool = descriptor_pool.Default()
    serving: dict[str, list[str]] = collections.defaultdict(list)
    shape: dict[str, tuple[bool, bool]] = {}
    for node in nodes:
        channel = channel_to(net, node, tls)
        try:
            names = await listed_services(channel)
        finally:
            await channel.close()
        for name in sorted(names):
            for m in pool.FindServiceByName(name).methods:
                path = f"/{name}/{m.name}"
                serving[path].append(node)
                shape[path] = (m.client_streaming, m.server_streaming)
    return {p: Method(p, *shape[p], tuple(n)) for p, n in serving.items()}


async def call_raw(
    channel: grpc.aio.Channel, method: Method, messages: list[bytes]
) -> tuple[str, str]:
    """Send serialised messages to `method`; (the status code name the call ended with, its
    details). OK when the client stopped reading a server stream itself."""
    reads = SERVER_STREAM_READS.get(method.path, STREAM_READS_MAX)
    timeout = WAITING_TIMEOUT_S.get(method.path, CALL_TIMEOUT_S)
    try:
        if not method.server_streaming:
            unary = channel.unary_unary(method.path)
            await unary(messages[0], timeout=timeout)
            return "OK", ""
        if method.client_streaming:
            call = channel.stream_stream(method.path)(iter(messages), timeout=timeout)
        else:
            call = channel.unary_stream(method.path)(messages[0], timeout=timeout)
        got = 0
        async for _ in call:
            got += 1
            if got >= reads:
                call.cancel()
                break
        return "OK", ""
    except grpc.aio.AioRpcError as exc:
        if _send_race(exc):
            return "CLIENT_SEND_RACE", exc.details() or ""
        return exc.code().name, exc.details() or ""


def _send_race(exc: grpc.aio.AioRpcError) -> bool:
    """grpc-python's client marks a stream INTERNAL itself when it still sends a message after
    the server already ended the call (e.g. refused the previous message): the failed send batch
    is named in the client-side debug string, which a status from the server never carries."""
    return exc.code() == grpc.StatusCode.INTERNAL and 'Failed "execute_batch"' in (
        exc.debug_error_string() or ""
    )


class Fuzzer:
    """Sends fuzzed requests to one network over cached connections."""

    def __init__(
        self, net: Path, world: World, party_of: Callable[[str, str], list[Party]], seed: int
    ) -> None:
        self.net = net
        self.world = world
        self.party_of = party_of
        self.rng = random.Random(seed)
        self._channels: dict[tuple[str, bytes], grpc.aio.Channel] = {}

    def channel(self, node: str, tls: TlsMaterial) -> grpc.aio.Channel:
        key = (node, tls.cert_pem)
        if key not in self._channels:
            self._channels[key] = channel_to(self.net, node, tls)
        return self._channels[key]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def fuzz(self, method: Method, n: int) -> collections.Counter[str]:
        statuses: collections.Counter[str] = collections.Counter()
        examples: dict[str, str] = {}
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            # every (strategy, party) pair in turn, then the next node
            strategy = STRATEGIES[i % len(STRATEGIES)]
            node = method.nodes[(i // (len(STRATEGIES) * 4)) % len(method.nodes)]
            candidates = self.party_of(method.path, node)
            party = candidates[(i // len(STRATEGIES)) % len(candidates)]
            async with slots:
                request = fuzzed(method.path, party, self.world, self.rng, strategy)
                channel = self.channel(node, party.tls)
                status, details = await call_raw(channel, method, request.messages)
            statuses[status] += 1
            examples.setdefault(status, f"{strategy} as {party.name} to {node}: {details}")

        await asyncio.gather(*(one(i) for i in range(n)))
        bad = {s: examples[s] for s in statuses if s in FORBIDDEN}
        assert not bad, f"{method.path}: {dict(statuses)}; first of each: {bad}"
        return statuses


async def fuzz_network(
    net: Path,
    sup: Supervisor,
    world: World,
    party_of: Callable[[str, str], list[Party]],
    only: Callable[[Method], tuple[str, ...]],
    label: str,
) -> None:
    """Fuzz every served method of a started network; assert the node-level properties."""
    nodes = list(sup.nodes)
    methods = await served_methods(net, nodes)
    missing = sorted(set(methods) - set(GENERATORS))
    assert not missing, f"served methods without a request generator: {missing}"
    baseline = {n: rss_mb(sup, n) for n in nodes}
    fuzzer = Fuzzer(net, world, party_of, seed=len(label))
    started = time.monotonic()
    try:
        for path in sorted(p for p in methods if ONLY in p):
            method = methods[path]
            method = Method(path, method.client_streaming, method.server_streaming, only(method))
            t0 = time.monotonic()
            statuses = await fuzzer.fuzz(method, PER_METHOD)
            seconds = round(time.monotonic() - t0, 1)
            record(
                "fuzz",
                network=label,
                method=path,
                sent=PER_METHOD,
                statuses=dict(statuses),
                seconds=seconds,
            )
    finally:
        await fuzzer.close()
    await _all_serving(net, nodes)
    after = {n: rss_mb(sup, n) for n in nodes}
    record(
        "fuzz-rss",
        network=label,
        seconds=round(time.monotonic() - started, 1),
        baseline_mb={n: round(v, 1) for n, v in baseline.items()},
        after_mb={n: round(v, 1) for n, v in after.items()},
    )
    grown = {n: round(after[n] - baseline[n], 1) for n in nodes}
    assert all(g <= RSS_GROWTH_MAX_MB for g in grown.values()), f"RSS growth MB: {grown}"


async def _all_serving(net: Path, nodes: Sequence[str]) -> None:
    tls = client_tls(net, "user1.org1")
    for node in nodes:
        channel = channel_to(net, node, tls)
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, node
        finally:
            await channel.close()


async def _unknown_ca_tls_is_refused(net: Path, node: str) -> None:
    """A TLS client certificate from a CA outside the network never gets to a handler."""
    rogue_ca = make_ca("Org1")
    rogue = issue_cert(rogue_ca, "Org1", "rogue", "client", tls=True)
    tls = TlsMaterial(rogue.cert_pem, rogue.key_pem, (net / "tls-roots.pem").read_bytes())
    channel = channel_to(net, node, tls)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


# --- the ledger network ------------------------------------------------------------------------


async def _ledger_world(net: Path) -> World:
    world = World(genesis=(net / "channels" / "trades.block").read_bytes())
    c = await GatewayClient.connect(net, "user1.org1")
    try:
        world.tx_id = (await c.submit_transaction("trades", "kv", "put", "k", "v")).tx_id
        signed, _ = c.proposal("trades", "kv", "put", ["fz", "v"])
        world.prepared_payload = (await c.endorse(signed)).prepared_payload
        privacy = PrivacyClient(c)
        world.payload_hash = (await privacy.send("trades", b"secret", ["Org2"])).payload_hash
    finally:
        await c.close()
    vault = await VaultClient.connect(PartyFiles.load(net, "user1.org1"), "peer0.org1")
    try:
        world.owner = vault.identity_of("peer0.org1")
        issued = await vault.issue("cash", vault.identity_of("peer0.org2"), "JPY", 10)
        world.utxo_tx_id, world.signed_utxo_tx = issued.tx_id, issued.signed_transaction
    finally:
        await vault.close()
    world.push_sender, world.push_recipient = load_push_keys(net, "peer0.org2", "peer0.org1")
    return world


def _ledger_parties(net: Path) -> Callable[[str, str], list[Party]]:
    org2 = ClientFiles.load(net, "user1.org2").signer
    clients = parties(net, "user1.org1", org2)
    node = parties(net, "peer0.org2", ClientFiles.load(net, "user1.org1").signer, is_node=True)
    org_of = {
        "peer0.org1": "Org1",
        "peer0.org2": "Org2",
        "orderer0": "OrdererOrg",
        "notary0": "NotaryOrg",
    }
    admins = {org: parties(net, f"admin.{org.lower()}", org2) for org in org_of.values()}

    def party_of(path: str, node_id: str) -> list[Party]:
        if path in NODE_TO_NODE:
            return node
        if path.startswith("/dltmw.v1.AdminService/"):
            return admins[org_of[node_id]]
        return clients

    return party_of


def _ledger_targets(method: Method) -> tuple[str, ...]:
    """The world is prepared for peer0.org1 (its clients', its vault's and its privacy manager's
    data; node-to-node calls come from peer0.org2); Admin, Health and Reflection go to every
    node."""
    if method.path.startswith(("/dltmw.v1.AdminService/", "/grpc.")):
        return method.nodes
    return ("peer0.org1",) if "peer0.org1" in method.nodes else method.nodes


async def test_fuzz_ledger_network(network) -> None:
    net, sup = network(LEDGER, batch_ms=50)
    world = await _ledger_world(net)
    await _unknown_ca_tls_is_refused(net, "peer0.org1")
    await fuzz_network(net, sup, world, _ledger_parties(net), _ledger_targets, "ledger")
    async with await GatewayClient.connect(net, "user1.org1") as c:
        done = await c.submit_transaction("trades", "kv", "put", "after", "fuzz")
        assert done.status.result == 1
        assert (await c.evaluate("trades", "kv", "get", "after")).payload == b"fuzz"


# --- the notary cluster -------------------------------------------------------------------------


def _cluster_parties(net: Path) -> Callable[[str, str], list[Party]]:
    org2 = ClientFiles.load(net, "user1.org2").signer
    clients = parties(net, "user1.org1", org2)
    member = parties(net, "notary1", org2, is_node=True)
    admins = {n: parties(net, f"admin.n{n[-1]}", org2) for n in MEMBERS}

    def party_of(path: str, node_id: str) -> list[Party]:
        if path in NODE_TO_NODE:
            return member
        if path.startswith("/dltmw.v1.AdminService/"):
            return admins[node_id]
        return clients

    return party_of


def _cluster_targets(method: Method) -> tuple[str, ...]:
    """Replica traffic comes from notary1 (replica 1) and goes to the others."""
    if method.path in NODE_TO_NODE:
        return tuple(n for n in method.nodes if n != "notary1")
    return method.nodes


async def _cluster_notarises(net: Path) -> None:
    party = PartyFiles.load(net, "user1.org1")
    me = party.signer.identity_bytes
    spec = TxSpec(
        notary=CLUSTER_ID,
        nonce=random.randbytes(32),
        outputs=[cash_output(me, me, "JPY", 1)],
        commands=[Command("cash", "issue", (me,))],
    )
    wire = read_transaction(build_transaction(spec))
    async with ClusterNotaryClient(party, CLUSTER_ID) as client:
        verdict = await client.notarise(sign_request(notarisation_payload(wire, me), party.signer))
    assert verdict.signed and verdict.signatures, verdict


async def test_fuzz_notary_cluster(network) -> None:
    net, sup = network(CLUSTER)
    try:
        await _cluster_notarises(net)
        world = World(notary=CLUSTER_ID, cluster_id=CLUSTER_ID, replica_index=1)
        await fuzz_network(net, sup, world, _cluster_parties(net), _cluster_targets, "cluster")
        await _cluster_notarises(net)
    finally:
        codes = {n: sup.stop(n) for n in list(sup.nodes)}  # one SIGTERM each (see
        assert all(c == 0 for c in codes.values()), codes  # test_notary_cluster.stop_one_by_one)
