"""The metrics a node exports and its operations endpoint, without processes.

The name and label table below is the contract with dashboards and alerts (docs/operations.md
lists the same): a renamed series or label fails here, not in someone's Grafana.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h11
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dltmw.pki.ca import issue_cert, make_ca
from dltmw.rpc.observed import final_code
from dltmw.runtime.config_file import OperationsSettings
from dltmw.runtime.metrics import NodeMetrics
from dltmw.runtime.node_state import NodeGauges, not_ready_reasons
from dltmw.runtime.operations import OperationsServer, Probe
from dltmw.v1 import errors_pb2, transaction_pb2

T = transaction_pb2
# name -> label names, for every family a node exports (counters without the _total suffix)
EXPECTED = {
    "dltmw_rpc_requests": {"service", "method", "code"},
    "dltmw_rpc_duration_seconds": {"service", "method"},
    "dltmw_blocks_committed": {"channel"},
    "dltmw_block_commit_duration_seconds": {"channel"},
    "dltmw_tx_validation": {"channel", "code"},
    "dltmw_mvcc_aborts": {"channel"},
    "dltmw_notary_decisions": {"notary", "outcome"},
    "dltmw_notary_conflicts": {"notary"},
    "dltmw_notary_attested": {"notary", "outcome"},
    "dltmw_gateway_ordering_widened": {"channel"},
    "dltmw_deliver_censorship_switches": {"channel"},
    "dltmw_deliver_forged_headers": {"channel", "orderer"},
    "dltmw_driver_inbox_depth": {"driver"},
    "dltmw_driver_overload_refusals": {"driver"},
    "dltmw_ledger_height": {"channel", "role"},
    "dltmw_orderer_height_known": {"channel"},
    "dltmw_peer_caught_up": {"channel"},
    "dltmw_pbft_view": {"replica"},
    "dltmw_pbft_view_changes": {"replica"},
    "dltmw_pbft_checkpoint_lag": {"replica"},
    "dltmw_pbft_dropped": {"replica", "reason"},
    "dltmw_private_payloads_pending": {"channel"},
    "dltmw_private_deliveries_given_up": {"channel", "reason"},
}


@dataclass
class FakeDriver:
    name: str
    depth: int = 0
    overloaded: int = 0


@dataclass
class FakeLedger:
    height: int


@dataclass
class FakePeer:
    ledger: FakeLedger
    orderer_height: int | None = None

    @property
    def caught_up(self) -> bool:
        return self.orderer_height is not None and self.ledger.height >= self.orderer_height


@dataclass
class FakeProgress:
    next_exec: int
    stable_seq: int
    counters: dict[str, int] = field(default_factory=lambda: {"old-view": 4})


@dataclass
class FakeReplica:
    current_view: int
    replica: FakeProgress | None = None


@dataclass
class FakePrivate:
    pending: int
    given_up: dict[str, int]


def families(metrics: NodeMetrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        if not family.name.endswith("_created"):  # prometheus_client's start times
            out[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return out


def populated() -> tuple[NodeMetrics, NodeGauges, dict[str, FakePeer], FakeReplica]:
    """A registry with one observation of every kind and one source of every gauge."""
    metrics = NodeMetrics()
    metrics.observe_rpc("/dltmw.v1.GatewayService/Submit", "OK", 0.002)
    codes = [T.TX_VALIDATION_CODE_VALID, T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT] * 2
    metrics.observe_block("trades", [*codes, T.TX_VALIDATION_CODE_VALID], 0.01)
    metrics.observe_decision("single", True, 0, 0)
    metrics.observe_widened("trades", 1)
    metrics.observe_censorship_switch("trades")
    metrics.observe_forged_header("trades", "orderer.b")
    metrics.observe_decision("single", False, errors_pb2.ERROR_REASON_INPUT_CONSUMED, 2)
    metrics.observe_attested("notaries", 3, 1)
    metrics.watch_driver(FakeDriver("commit-trades", depth=3, overloaded=7))
    peers = {"trades": FakePeer(FakeLedger(5), orderer_height=9)}
    replica = FakeReplica(2, FakeProgress(next_exec=13, stable_seq=10))
    gauges = NodeGauges(
        peers,
        {"trades": FakePeer(FakeLedger(9))},
        peers,
        [("orderer", {"trades": replica})],
        {"trades": FakePrivate(4, {"expired": 2})},
    )
    gauges.baseline()
    metrics.add_source(gauges.collect)
    return metrics, gauges, peers, replica


def test_names_and_labels_are_the_documented_ones() -> None:
    metrics, *_ = populated()
    found = families(metrics)
    assert set(found) == set(EXPECTED)
    for name, samples in found.items():
        labels = {k for _, lab, _ in samples for k in lab if k != "le"}
        assert labels == EXPECTED[name], name


def test_values_follow_the_observations_and_the_state() -> None:
    metrics, _, peers, replica = populated()
    replica.current_view = 5  # three view changes after the baseline
    peers["trades"].ledger.height = 9  # caught up now

    def sample(name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(metrics.exposition().decode()):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return s.value
        raise AssertionError(f"no sample {name} {labels}")

    assert sample("dltmw_tx_validation_total", channel="trades", code="VALID") == 3
    assert sample("dltmw_tx_validation_total", channel="trades", code="MVCC_READ_CONFLICT") == 2
    assert sample("dltmw_mvcc_aborts_total", channel="trades") == 2
    assert sample("dltmw_gateway_ordering_widened_total", channel="trades") == 1
    assert sample("dltmw_blocks_committed_total", channel="trades") == 1
    assert sample("dltmw_notary_decisions_total", notary="single", outcome="SIGNED") == 1
    assert sample("dltmw_notary_decisions_total", notary="single", outcome="INPUT_CONSUMED") == 1
    assert sample("dltmw_notary_attested_total", notary="notaries", outcome="answered") == 3
    assert sample("dltmw_notary_attested_total", notary="notaries", outcome="ordered_here") == 1
    assert sample("dltmw_notary_conflicts_total", notary="single") == 2
    assert sample("dltmw_driver_inbox_depth", driver="commit-trades") == 3
    assert sample("dltmw_driver_overload_refusals_total", driver="commit-trades") == 7
    assert sample("dltmw_ledger_height", channel="trades", role="peer") == 9
    assert sample("dltmw_ledger_height", channel="trades", role="orderer") == 9
    assert sample("dltmw_peer_caught_up", channel="trades") == 1
    assert sample("dltmw_pbft_view", replica="orderer-trades") == 5
    assert sample("dltmw_pbft_view_changes_total", replica="orderer-trades") == 3
    assert sample("dltmw_pbft_checkpoint_lag", replica="orderer-trades") == 2
    assert sample("dltmw_pbft_dropped_total", replica="orderer-trades", reason="old-view") == 4
    assert sample("dltmw_private_payloads_pending", channel="trades") == 4
    assert (
        sample("dltmw_private_deliveries_given_up_total", channel="trades", reason="expired") == 2
    )
    labels = {"service": "dltmw.v1.GatewayService", "method": "Submit"}
    assert sample("dltmw_rpc_requests_total", **labels, code="OK") == 1
    assert sample("dltmw_rpc_duration_seconds_count", **labels) == 1


def test_each_node_has_its_own_registry() -> None:
    a, b = NodeMetrics(), NodeMetrics()  # would raise "Duplicated timeseries" on one registry
    a.observe_rpc("/s.S/M", "OK", 0.1)
    assert "dltmw_rpc_requests_total" in a.exposition().decode()
    assert 'method="M"' not in b.exposition().decode()


@pytest.mark.parametrize(
    ("orderer_height", "height", "serving", "failed", "expected"),
    [
        (None, 1, True, None, ["channel trades: no Deliver stream from an orderer yet"]),
        (9, 5, True, None, ["channel trades: catching up to block 8"]),
        (9, 9, True, None, []),
        (9, 9, False, None, ["not serving (starting or stopping)"]),
        (9, 9, True, "deliver-trades", ["task deliver-trades failed"]),
    ],
    ids=["never-reached-an-orderer", "behind", "caught-up", "stopping", "task-failed"],
)
def test_readiness(
    orderer_height: int | None, height: int, serving: bool, failed: str | None, expected: list[str]
) -> None:
    peers = {"trades": FakePeer(FakeLedger(height), orderer_height)}
    assert not_ready_reasons(serving, failed, peers) == expected


class FakeContext:
    def __init__(self, code: object) -> None:
        self._code = code

    def code(self) -> object:
        return self._code


@pytest.mark.parametrize(
    ("code", "exc", "expected"),
    [
        (None, None, "OK"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.AbortError(), "RESOURCE_EXHAUSTED"),
        (5, grpc.aio.AbortError(), "NOT_FOUND"),  # grpc.aio may report the code as its number
        (None, asyncio.CancelledError(), "CANCELLED"),
        (None, GeneratorExit(), "CANCELLED"),
        (None, KeyError("bug"), "UNKNOWN"),
    ],
    ids=["returned", "aborted", "aborted-int-code", "cancelled", "stream-left", "bug"],
)
def test_final_code(code: object, exc: BaseException | None, expected: str) -> None:
    assert final_code(FakeContext(code), exc) == expected  # type: ignore[arg-type]


# -- the HTTP endpoint -------------------------------------------------------------------------


def endpoint(ready: list[str] | None = None) -> OperationsServer:
    from dltmw.aio.tasks import TaskOwner

    probe = Probe(lambda: (True, ""), lambda: list(ready or []))
    return OperationsServer(OperationsSettings(), NodeMetrics(), probe, TaskOwner())


def request(method: str, target: str) -> h11.Request:
    return h11.Request(method=method, target=target, headers=[("host", "x")])


def test_routes() -> None:
    server = endpoint(ready=["channel trades: catching up to block 8"])
    assert server.route(request("GET", "/healthz"), b"", True).status == 200
    answer = server.route(request("GET", "/readyz"), b"", True)
    assert (answer.status, answer.body) == (
        503,
        b"not ready\nchannel trades: catching up to block 8\n",
    )
    assert server.route(request("GET", "/metrics"), b"", False).status == 200
    assert server.route(request("POST", "/metrics"), b"", True).status == 405
    assert server.route(request("GET", "/nothing"), b"", True).status == 404


def test_log_level_changes_from_loopback_only() -> None:
    server = endpoint()
    root = logging.getLogger()
    before = root.level
    try:
        root.setLevel(logging.INFO)
        refused = server.route(request("PUT", "/loglevel"), b"DEBUG", loopback=False)
        assert refused.status == 403 and root.level == logging.INFO
        assert server.route(request("PUT", "/loglevel"), b"LOUD", True).status == 400
        changed = server.route(request("POST", "/loglevel?level=debug"), b"", True)
        assert changed.status == 200 and root.level == logging.DEBUG
    finally:
        root.setLevel(before)


async def http(address: str, raw: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_served_over_a_socket_with_bounded_requests() -> None:
    from dltmw.aio.tasks import TaskOwner

    tasks = TaskOwner()
    settings = OperationsSettings(listen="127.0.0.1:0", request_bytes_max=512)
    server = OperationsServer(settings, NodeMetrics(), Probe(lambda: (True, ""), list), tasks)
    address = await server.start()
    try:
        ok = await http(address, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 ") and ok.endswith(b"\r\n\r\nok\n")
        huge = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 2000 + b"\r\n\r\n"
        refused = await http(address, huge)
        assert refused.split(b" ", 2)[1] == b"431", refused[:80]  # headers over request_bytes_max
        garbage = await http(address, b"NOT HTTP\r\n\r\n")
        assert garbage.split(b" ", 2)[1] == b"400", garbage[:80]
    finally:
        await server.stop()
        await tasks.stop()
    assert tasks.failed is None


async def test_tls_serves_https_with_the_node_certificate_and_asks_none(tmp_path: Path) -> None:
    from dltmw.aio.tasks import TaskOwner

    ca = make_ca("Org1")
    leaf = issue_cert(ca, "Org1", "peer0.org1", "peer", tls=True, hosts=["127.0.0.1"])
    cert, key = tmp_path / "tls.pem", tmp_path / "tls.key"
    cert.write_bytes(leaf.cert_pem)
    key.write_bytes(leaf.key_pem)
    tasks = TaskOwner()
    settings = OperationsSettings(listen="127.0.0.1:0", tls=True)
    probe = Probe(lambda: (True, ""), list)
    server = OperationsServer(settings, NodeMetrics(), probe, tasks, (cert, key))
    address = await server.start()
    try:
        client = ssl.create_default_context(cadata=ca.cert_pem.decode())  # no client cert
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port), ssl=client)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok\n")
        plain = await http(address, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert not plain.startswith(b"HTTP/1.1 200"), "plain HTTP must not be served with tls"
    finally:
        await server.stop()
        await tasks.stop()


def test_data_key_rotation_from_loopback_only() -> None:
    from dltmw.aio.tasks import TaskOwner

    rotated: list[int] = []

    def rotate() -> int:
        rotated.append(len(rotated) + 2)
        return rotated[-1]

    probe = Probe(lambda: (True, ""), list)
    server = OperationsServer(
        OperationsSettings(), NodeMetrics(), probe, TaskOwner(), rotate_data_key=rotate
    )
    path = "/data-key/rotate"
    assert server.route(request("POST", path), b"", loopback=False).status == 403
    assert server.route(request("GET", path), b"", True).status == 405
    assert rotated == []
    answer = server.route(request("POST", path), b"", True)
    assert (answer.status, answer.body, rotated) == (200, b"data key 2 current\n", [2])
    assert endpoint().route(request("POST", path), b"", True).status == 404  # no storage key


def test_a_notary_batch_of_decisions_counts_as_each_decision_alone() -> None:
    from dltmw.core.handlers.notary import Conflict, Decision
    from dltmw.core.utxo.model import Ref

    conflict = Conflict(Ref("ab" * 32, 0), b"h" * 32, False)
    consumed = errors_pb2.ERROR_REASON_INPUT_CONSUMED
    window = errors_pb2.ERROR_REASON_TIME_WINDOW_INVALID
    decisions = [
        Decision("t1", b"sig"),
        Decision("t2", reason=consumed, conflicts=(conflict, conflict)),
        Decision("t3", b"sig"),
        Decision("t4", reason=window),
        Decision("t5", reason=consumed, conflicts=(conflict,)),
    ]
    batched, alone = NodeMetrics(), NodeMetrics()
    batched.observe_decisions("single", decisions)
    for d in decisions:
        alone.observe_decision("single", bool(d.signature), d.reason, len(d.conflicts))

    def notary_samples(m: NodeMetrics) -> dict[tuple[str | None, str], float]:
        return {
            (s.labels.get("outcome"), s.name): s.value
            for f in text_string_to_metric_families(m.exposition().decode())
            for s in f.samples
            if s.name.startswith("dltmw_notary_") and not s.name.endswith("_created")
        }

    counted = notary_samples(batched)
    assert counted == notary_samples(alone)
    assert counted[("SIGNED", "dltmw_notary_decisions_total")] == 2
    assert counted[("INPUT_CONSUMED", "dltmw_notary_decisions_total")] == 2
    assert counted[(None, "dltmw_notary_conflicts_total")] == 3


def test_a_message_a_replica_drops_moves_its_drop_counter() -> None:
    """A real PBFT-lite core drops a message whose signature does not verify; the scrape shows
    it under the core's reason (`dltmw_pbft_dropped_total`)."""
    from dltmw.core.pbft import Envelope, PbftConfig, Replica

    core = Replica(PbftConfig(n=4), 1, lambda _data: b"s", lambda _r, _d, _s: False)
    metrics = NodeMetrics()
    gauges = NodeGauges({}, {}, {}, [("orderer", {"trades": FakeReplica(0, core)})], {})
    metrics.add_source(gauges.collect)

    def dropped() -> float:
        for family in text_string_to_metric_families(metrics.exposition().decode()):
            for s in family.samples:
                wanted = {"replica": "orderer-trades", "reason": "bad-signature-or-malformed"}
                if s.name == "dltmw_pbft_dropped_total" and s.labels == wanted:
                    return s.value
        return 0.0

    assert dropped() == 0
    core.step(Envelope(payload=b"not a replica message", replica=2, signature=b"forged"))
    assert dropped() == 1
