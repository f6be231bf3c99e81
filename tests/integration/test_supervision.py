"""Supervision of real node processes (issue 10, findings 2, 3 and 6).

* F2: a write lock held on the solo orderer's ledger by another process stops nothing: the
  orderer retries (warning in its log at once), health stays SERVING because no task died, and
  the transaction submitted meanwhile commits once the lock is gone — without a restart.
* A task that fails for good turns health NOT_SERVING for every service at once.
* F3: `dltmw up` on a running network starts nothing twice; a second copy of a node on the same
  data exits at once (status 73); stale PID files (dead process or unrelated live process) are
  ignored and never signalled.
* F6: `dltmw stop/start/restart NET NODE`; a node that stops itself (exit 71, here through a
  test-only failpoint) or is killed is restarted by its keeper, and no acknowledged transaction
  is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dltmw.client import GatewayClient
from dltmw.client.files import ClientFiles
from dltmw.ledger.sqlite_file import FORMAT
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.rpc.tls import secure_channel
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.node import Node
from dltmw.runtime.process import EXIT_USAGE
from dltmw.v1 import transaction_pb2

from .conftest import TWO_ORG

pytestmark = pytest.mark.integration
Start = Callable[..., tuple[Path, Supervisor]]
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CH = "trades"
NODES = ("orderer0", "peer0.org1", "peer0.org2")
GATEWAY_SERVICE = "dltmw.v1.GatewayService"
LOCK_S = 12.0
BUSY_TIMEOUT_S = 5.0  # sqlite3's default: how long the orderer's BEGIN waits before it fails
DLTMW = Path(sys.executable).parent / "dltmw"

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("LOCKED", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll `check` until true; returns the seconds it took (AssertionError at the deadline)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s: {what}")


def log_of(net: Path, node: str, suffix: str = "log") -> str:
    path = net / "run" / "logs" / f"{node}.{suffix}"
    return path.read_text(errors="replace") if path.exists() else ""


async def health(net: Path, node: str, service: str = "") -> str:
    """The node's health status name, overall or of one service (over mTLS, as Org1's client)."""
    files = ClientFiles.load(net, "user1.org1")
    address = files.addresses.lookup(node)
    assert address is not None
    channel = secure_channel(address, node, files.tls, 4 * 1024 * 1024)
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    finally:
        await channel.close(None)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def committed_count(net: Path, node: str, tx_id: str) -> int:
    """How many times `tx_id` is in the peer's tx index (0 or 1; never 2)."""
    import sqlite3

    path = net / "nodes" / node / "data" / f"{CH}.peer.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM txs WHERE tx_id=?", (tx_id,)).fetchone()[0])


async def test_solo_orderer_rides_out_a_write_lock_held_by_another_process(
    network: Start,
) -> None:
    net, sup = network()
    ledger = net / "nodes" / "orderer0" / "data" / f"{CH}.orderer.sqlite"
    async with await GatewayClient.connect(net, "user1.org1") as client:
        first = await client.submit_transaction(CH, "bank", "open", "A", "100")
        assert first.status.result == VALID
        locker = subprocess.Popen(  # noqa: ASYNC220 — must outlive this await-free moment
            [sys.executable, "-c", LOCKER, str(ledger), str(LOCK_S)], stdout=subprocess.PIPE
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline() == b"LOCKED\n"
            submit = asyncio.ensure_future(client.submit_transaction(CH, "bank", "open", "B", "5"))
            # The envelope's first durable write: the queue, or (cut at once by adaptive
            # cutting, the orderer's intake being empty) the block that holds it.
            warned = re.compile(
                r"storage write ledger\.(enqueue|commit_block) failed: database is locked"
            )
            took = await until(
                lambda: warned.search(log_of(net, "orderer0")) is not None,
                BUSY_TIMEOUT_S + 3,
                "retry warning",
            )
            assert took <= BUSY_TIMEOUT_S + 2  # within ~1 s of the first failure
            while locker.poll() is None:  # the lock is still held: the orderer waits, alive
                assert await health(net, "orderer0") == "SERVING"
                assert sup.nodes["orderer0"].process.poll() is None
                assert not submit.done()  # acknowledged only once durably queued
                await asyncio.sleep(0.5)
        finally:
            locker.kill()
            locker.wait(10)
        second = await asyncio.wait_for(submit, 40)
        assert second.status.result == VALID
        third = await client.submit_transaction(CH, "bank", "open", "C", "7")
        assert third.status.result == VALID
    assert await health(net, "orderer0") == "SERVING"
    for node in ("peer0.org1", "peer0.org2"):
        for tx in (first, second, third):
            await until(lambda n=node, t=tx: committed_count(net, n, t.tx_id) == 1, 30, "commit")


async def test_a_task_that_fails_for_good_turns_health_not_serving(tmp_path: Path) -> None:
    topo = tmp_path / "topology.toml"
    topo.write_text(TWO_ORG.replace("BATCH_MS", "100"))
    net = tmp_path / "net"
    init_network(topo, net)
    node = Node(NodeConfig.load(net / "nodes" / "peer0.org1" / "node.toml"))
    await node.start()
    try:
        assert await health(net, "peer0.org1") == "SERVING"
        assert await health(net, "peer0.org1", GATEWAY_SERVICE) == "SERVING"

        async def broken() -> None:
            raise RuntimeError("a bug in a long-lived loop")

        node.ctx.tasks.forever("broken-loop", broken)
        await asyncio.wait_for(node.failed.wait(), 10)
        assert node.ctx.tasks.failed == "broken-loop"
        assert await health(net, "peer0.org1") == "NOT_SERVING"
        assert await health(net, "peer0.org1", GATEWAY_SERVICE) == "NOT_SERVING"  # each service
    finally:
        await node.stop(grace_s=1)


# --- the dltmw command (every node under a keeper) ------------------------------------------


def dltmw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DLTMW), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        check=False,
    )


def node_pids(net: Path) -> dict[str, int | None]:
    from dltmw.runtime.process import NODE_LOCK, lock_holder  # here: the F2 test runs on main

    return {n: lock_holder(net / "nodes" / n / "data" / NODE_LOCK) for n in NODES}


def processes_of(net: Path) -> list[psutil.Process]:
    """Every live process whose command line names a file of this network."""
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(net) in part for part in proc.info["cmdline"] or ()):
                out.append(proc)
    return out


@pytest.fixture
def cli_net(tmp_path: Path) -> Iterator[Path]:
    """A two-org network directory for `dltmw up`; everything it started is stopped at the end."""
    topo = tmp_path / "topology.toml"
    topo.write_text(TWO_ORG.replace("BATCH_MS", "50"))
    net = tmp_path / "net"
    init_network(topo, net)
    try:
        yield net
    finally:
        dltmw("down", str(net))
        for proc in processes_of(net):  # nothing may survive the test, whatever happened
            with contextlib.suppress(psutil.Error):
                proc.kill()


def test_up_twice_starts_nothing_twice_and_stale_pid_files_are_ignored(
    cli_net: Path,
) -> None:
    net = cli_net
    first = dltmw("up", str(net))
    assert first.returncode == 0, first.stdout + first.stderr
    before = node_pids(net)
    assert all(before.values())
    assert len(processes_of(net)) == 2 * len(NODES)  # a keeper and its node each
    second = dltmw("up", str(net))
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(processes_of(net)) == 2 * len(NODES)  # F3: no second copy of anything
    assert node_pids(net) == before
    assert second.stdout.count("already running") == len(NODES)
    # a second copy started by hand on the same data refuses at once, naming the holder
    config = net / "nodes" / "peer0.org1" / "node.toml"
    direct = subprocess.run(
        [sys.executable, "-m", "dltmw.runtime", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert direct.returncode == 73
    assert f"in use by process {before['peer0.org1']}" in direct.stderr
    assert len(direct.stderr.strip().splitlines()) == 1
    # stale PID files naming an unrelated live process are never signalled
    decoy = subprocess.Popen(["sleep", "120"])
    try:
        for node in NODES:
            (net / "run" / "pids" / f"{node}.pid").write_text(f"{decoy.pid}\n")
        down = dltmw("down", str(net))
        assert down.returncode == 0, down.stdout + down.stderr
        assert processes_of(net) == []  # F3: down stops every node and keeper it did not start
        assert decoy.poll() is None
        again = dltmw("up", str(net))  # the PID files are stale: every node starts
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count(" started") == len(NODES)
        assert decoy.poll() is None
    finally:
        decoy.kill()
        decoy.wait(10)


async def submit_with_retries(net: Path, *args: str) -> str:
    """Submit through peer0.org1 (bounded retries of UNAVAILABLE: nodes just restarted)."""
    for attempt in range(5):
        try:
            async with await GatewayClient.connect(net, "user1.org1") as client:
                done = await client.submit_transaction(CH, "bank", *args)
            assert done.status.result == VALID
            return done.tx_id
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s")


async def test_stop_start_restart_one_node_and_the_keeper_restarts_a_failed_node(
    cli_net: Path,
) -> None:
    net = cli_net
    assert dltmw("up", str(net)).returncode == 0
    stop = dltmw("stop", str(net), "peer0.org2")
    assert stop.returncode == 0 and "stopped (exit 0)" in stop.stdout, stop.stdout + stop.stderr
    pids = node_pids(net)
    assert pids["peer0.org2"] is None and pids["orderer0"] and pids["peer0.org1"]
    assert "was not running" in dltmw("stop", str(net), "peer0.org2").stdout
    start = dltmw("start", str(net), "peer0.org2")
    assert start.returncode == 0 and " started" in start.stdout, start.stdout + start.stderr
    twice = dltmw("start", str(net), "peer0.org2")
    assert twice.returncode == 1 and "already running" in twice.stdout
    # restart the orderer with a test-only fault: its next block commit finds a corrupt file
    old = node_pids(net)["orderer0"]
    restart = dltmw(
        "restart",
        str(net),
        "orderer0",
        env={"DLTMW_FAILPOINTS": "ledger.commit_block=corrupt*1"},
    )
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert node_pids(net)["orderer0"] not in (None, old)
    # acknowledged (durably queued), then the orderer stops loudly at the commit, its keeper
    # restarts it, and the queued transaction still commits
    tx_id = await submit_with_retries(net, "open", "K", "1")
    orderer_log = log_of(net, "orderer0")
    assert "task orderer-trades failed; the node stops" in orderer_log
    assert "Traceback" in orderer_log and "failpoint ledger.commit_block" in orderer_log
    assert "keeper: restarting orderer0 after exit 71" in log_of(net, "orderer0", "err")
    for node in ("peer0.org1", "peer0.org2"):
        await eventually(lambda n=node: committed_count(net, n, tx_id) == 1, 30)
    # a node killed outright is restarted by its keeper too
    victim = node_pids(net)["peer0.org1"]
    assert victim
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: node_pids(net)["peer0.org1"] not in (None, 0, victim), 30)
    assert "keeper: restarting peer0.org1 after exit -9" in log_of(net, "peer0.org1", "err")
    await eventually(
        lambda: "READY" in log_of(net, "peer0.org1", "out").rsplit("--- start")[-1], 30
    )
    tx2 = await submit_with_retries(net, "open", "L", "2")
    await eventually(lambda: committed_count(net, "peer0.org2", tx2) == 1, 30)
    down = dltmw("down", str(net))
    assert down.returncode == 0
    assert down.stdout.count("stopped (exit 0)") == len(NODES), down.stdout
    assert processes_of(net) == []


def test_a_node_refuses_data_a_newer_dltmw_wrote(tmp_path: Path) -> None:
    """A downgrade onto a data directory a newer release wrote (a later storage format) stops
    at start with one line naming the file, exit 2 (the keeper does not restart it), and leaves
    the file as it was."""
    (tmp_path / "topology.toml").write_text(TWO_ORG.replace("BATCH_MS", "100"))
    net = tmp_path / "net"
    init_network(tmp_path / "topology.toml", net)
    ledger = net / "nodes" / "peer0.org1" / "data" / "trades.peer.sqlite"
    ledger.parent.mkdir(parents=True, exist_ok=True)  # init made data/ (installed packages)
    with sqlite3.connect(ledger) as conn:
        conn.execute(f"PRAGMA user_version = {FORMAT + 1}")
    config = net / "nodes" / "peer0.org1" / "node.toml"
    done = subprocess.run(
        [sys.executable, "-m", "dltmw.runtime", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "written by a newer dltmw" in done.stderr and str(ledger) in done.stderr
    assert "Traceback" not in done.stderr
    with sqlite3.connect(ledger) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == FORMAT + 1
