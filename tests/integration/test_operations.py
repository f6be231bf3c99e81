"""The operations endpoint of real node processes: metrics agree with what the client saw,
`/readyz` follows a restarted peer's catch-up, the log level changes at runtime.

Every node's endpoint is found in its READY line (`operations=host:port`). The workload is
unpipelined (`Endorse`, `Submit`, `CommitStatus` as unary RPCs) so the RPC counters can be
compared call for call; concurrent `incr`s of a few keys give MVCC read conflicts, so the
abort counter is compared with a number that is not zero. The endpoint is read with blocking
HTTP while no client of the test is open.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from dltmw.cli.status import collect
from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import transaction_pb2

from .ledgers import height, ledger_path
from .operations_http import get, scrape, value
from .test_pbft_ordering import TOPOLOGY as PBFT_TOPOLOGY

pytestmark = pytest.mark.integration
NODES = ("orderer0", "peer0.org1", "peer0.org2")
PEERS = ("peer0.org1", "peer0.org2")
TXS = 40
MISSED_TXS = 12
CATCH_UP_STALL = "ledger.commit_block=locked*6"  # ~3 s of storage retries on the first commit


def wait_for(check, what: str, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


async def workload(net: Path) -> Counter[int | str]:
    """TXS concurrent `incr`s of 4 keys through peer0.org1's gateway: validation codes seen,
    and "STALE_READ" for those refused at Submit (early abort: a read the gateway's peer had
    already seen replaced, docs/ordering.md) — never ordered, so in no block and no metric."""
    client = await GatewayClient.connect(net, "user1.org1", pipelined=False)
    seen: Counter[int | str] = Counter()
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with sem:
            try:
                done = await client.submit_transaction("trades", "kv", "incr", f"n{i % 4}")
            except grpc.aio.AioRpcError as exc:
                assert reason_of(exc) == "STALE_READ", exc
                seen["STALE_READ"] += 1
                return
            seen[done.status.result] += 1

    try:
        await asyncio.gather(*(one(i) for i in range(TXS)))
    finally:
        await client.close()
    return seen


async def more_blocks(net: Path, count: int) -> None:
    """`count` transactions one after another (a block each at this batch timeout)."""
    async with await GatewayClient.connect(net, "user1.org1", pipelined=False) as client:
        for i in range(count):
            await client.submit_transaction("trades", "kv", "put", f"m{i}", "x")


def log_lines_after(log: Path, offset: int) -> list[tuple[str, str]]:
    """(level, message) of the JSON lines the node logged after byte `offset`."""
    with log.open("rb") as f:
        f.seek(offset)
        lines = [json.loads(line) for line in f.read().splitlines() if line.strip()]
    return [(line["level"], line["message"]) for line in lines]


def bad_request(address: str) -> None:
    """Send bytes that are not HTTP (the endpoint logs that at DEBUG)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        s.recv(4096)


async def test_metrics_readiness_and_log_level(network) -> None:
    net, sup = network(batch_ms=50)
    ops = {n: sup.operations_address(n) for n in NODES}
    assert all(ops.values()), f"READY lines without operations=: {ops}"
    assert {row.node: row.operations for row in await collect(net)} == ops  # `dltmw status`
    for node, address in ops.items():
        assert get(address, "/healthz") == (200, "ok\n"), node
        wait_for(lambda a=address: get(a, "/readyz")[0] == 200, f"{node} ready")

    seen = await workload(net)
    valid = seen[transaction_pb2.TX_VALIDATION_CODE_VALID]
    conflicts = seen[transaction_pb2.TX_VALIDATION_CODE_MVCC_READ_CONFLICT]
    stale = seen["STALE_READ"]
    assert valid > 0 and conflicts + stale > 0 and valid + conflicts + stale == TXS, seen

    orderer_height = height(ledger_path(net, "orderer0", role="orderer"))
    for peer in PEERS:  # the client waited for peer0.org1 only
        wait_for(
            lambda p=peer: (
                value(scrape(ops[p]), "dltmw_ledger_height", channel="trades", role="peer")
                == orderer_height
            ),
            f"{peer} at the orderer's height",
        )
    for peer in PEERS:
        m = scrape(ops[peer])
        ledger_height = height(ledger_path(net, peer))
        assert ledger_height == orderer_height
        assert value(m, "dltmw_ledger_height", channel="trades", role="peer") == ledger_height
        assert value(m, "dltmw_tx_validation_total", channel="trades", code="VALID") == valid
        assert (
            value(m, "dltmw_tx_validation_total", channel="trades", code="MVCC_READ_CONFLICT")
            == conflicts
        )
        assert value(m, "dltmw_mvcc_aborts_total", channel="trades") == conflicts
        blocks = value(m, "dltmw_blocks_committed_total", channel="trades")
        assert blocks == ledger_height - 1, "every block but the genesis went through the committer"
        assert value(m, "dltmw_block_commit_duration_seconds_count", channel="trades") == blocks
        assert value(m, "dltmw_orderer_height_known", channel="trades") == orderer_height
        assert value(m, "dltmw_driver_inbox_depth", driver="commit-trades") == 0
        assert (
            "dltmw_driver_overload_refusals_total",
            frozenset({("driver", "commit-trades")}),
        ) in m
    gateway = scrape(ops["peer0.org1"])
    svc = "dltmw.v1.GatewayService"
    for method, expected in (
        ("Endorse", TXS),
        ("Submit", TXS - stale),
        ("CommitStatus", TXS - stale),
    ):
        calls = value(gateway, "dltmw_rpc_requests_total", service=svc, method=method, code="OK")
        assert calls >= expected, f"{method}: {calls} OK calls counted for {expected} transactions"
        timed = value(gateway, "dltmw_rpc_duration_seconds_count", service=svc, method=method)
        assert timed >= calls
    if stale:  # the early aborts are counted as what they are
        aborted = value(
            gateway, "dltmw_rpc_requests_total", service=svc, method="Submit", code="ABORTED"
        )
        assert aborted == stale
    orderer = scrape(ops["orderer0"])
    assert value(orderer, "dltmw_ledger_height", channel="trades", role="orderer") == orderer_height

    # /readyz: a peer restarted behind the orderer is not ready until it caught up.
    before = height(ledger_path(net, "peer0.org2"))
    assert sup.stop("peer0.org2") == 0
    await more_blocks(net, MISSED_TXS)
    target = height(ledger_path(net, "orderer0", role="orderer"))
    assert target >= before + MISSED_TXS
    sup.start("peer0.org2", env={"DLTMW_FAILPOINTS": CATCH_UP_STALL})
    sup.wait_ready("peer0.org2")
    address = sup.operations_address("peer0.org2")
    assert address is not None
    assert get(address, "/healthz") == (200, "ok\n")  # alive while not ready
    answers: list[tuple[int, str]] = []

    def ready() -> bool:
        answers.append(get(address, "/readyz"))
        return answers[-1][0] == 200

    wait_for(ready, "peer0.org2 ready after catching up")
    assert any(s == 503 and "catching up" in t for s, t in answers), answers
    m = scrape(address)
    assert value(m, "dltmw_ledger_height", channel="trades", role="peer") == target
    assert value(m, "dltmw_blocks_committed_total", channel="trades") == target - before

    # The log level changes while the node runs: a DEBUG line appears only after the change.
    log = net / "run" / "logs" / "peer0.org1.log"
    offset = log.stat().st_size
    bad_request(ops["peer0.org1"])
    assert get(ops["peer0.org1"], "/loglevel") == (200, "INFO\n")
    assert get(ops["peer0.org1"], "/loglevel", "PUT", b"verbose")[0] == 400
    assert get(ops["peer0.org1"], "/loglevel", "PUT", b"DEBUG") == (200, "INFO -> DEBUG\n")
    bad_request(ops["peer0.org1"])
    lines = log_lines_after(log, offset)
    change = next(i for i, (_, msg) in enumerate(lines) if "log level changed" in msg)
    assert all(level != "DEBUG" for level, _ in lines[:change]), "DEBUG logged at INFO"
    assert any(level == "DEBUG" for level, _ in lines[change:]), lines
    assert get(ops["peer0.org1"], "/loglevel?level=info", "POST")[0] == 200


BFT_FOUR = PBFT_TOPOLOGY  # bft-four on the envelope path (test_pbft_ordering.TOPOLOGY)
REPLICA = "orderer.d"  # a backup of view 0 (orderer.a is the primary)
LOAD_TXS = 40


async def test_a_pbft_replica_restarted_under_load_is_not_ready_while_catching_up(
    network,
) -> None:
    """`/readyz` of a PBFT-lite orderer replica: 503 "catching up" while it is behind its
    cluster (f+1 other replicas signed blocks past its head, or it proved itself behind), then
    200 once it holds what they hold. The restarted replica's first ledger commit is stalled
    (~3 s of storage retries) so that the load runs past it while it catches up."""
    net, sup = network(BFT_FOUR)
    address = sup.operations_address(REPLICA)
    assert address is not None
    wait_for(lambda: get(address, "/readyz")[0] == 200, f"{REPLICA} ready")
    assert sup.stop(REPLICA) == 0
    await more_blocks(net, MISSED_TXS)
    sup.start(REPLICA, env={"DLTMW_FAILPOINTS": CATCH_UP_STALL})
    sup.wait_ready(REPLICA)
    address = sup.operations_address(REPLICA)
    assert address is not None
    answers: list[tuple[int, str]] = []

    def catching_up() -> bool:
        answers.append(get(address, "/readyz"))
        return answers[-1][0] == 503 and "PBFT-lite replica catching up" in answers[-1][1]

    load = asyncio.create_task(more_blocks(net, LOAD_TXS))
    try:
        await asyncio.to_thread(wait_for, catching_up, f"{REPLICA} not ready while behind")
    finally:
        await load
    assert get(address, "/healthz") == (200, "ok\n")  # alive while not ready
    await asyncio.to_thread(
        wait_for, lambda: get(address, "/readyz") == (200, "ready\n"), f"{REPLICA} ready again"
    )
    primary, replica = (ledger_path(net, n, role="orderer") for n in ("orderer.a", REPLICA))
    wait_for(lambda: height(replica) == height(primary), f"{REPLICA} holds every block")
