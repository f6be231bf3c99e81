"""Fault handling, in-process: failpoints, the store retry, the task owner, the process lock,
log rotation. Each test names the rule it holds."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from dltmw.aio.tasks import TaskOwner
from dltmw.core.errors import ClientError, PeerError, TransientError
from dltmw.ledger import failpoints
from dltmw.ledger import retry as retry_mod
from dltmw.ledger.retry import (
    LogThrottle,
    RetryPolicy,
    StorageUnavailable,
    is_transient_storage_error,
    write_sync,
)
from dltmw.runtime.config import LogSettings
from dltmw.runtime.faults import is_transient
from dltmw.runtime.process import Locked, ProcessLock, configure_logging, lock_holder
from dltmw.v1 import errors_pb2

FAST = RetryPolicy(first_s=0.001, max_s=0.01, budget_s=0.3)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ledger.enqueue=locked", [("ledger.enqueue", "locked", 0, None)]),
        ("notary.record=ioerror*3@2", [("notary.record", "ioerror", 2, 3)]),
        (
            " pbft.append=full*1 ; outbox.write=corrupt ",
            [("pbft.append", "full", 0, 1), ("outbox.write", "corrupt", 0, None)],
        ),
        ("", []),
    ],
    ids=["every-hit", "skip-then-count", "several-with-spaces", "off"],
)
def test_failpoint_settings_parse(spec: str, expected: list[tuple[object, ...]]) -> None:
    got = [(p.name, p.kind, p.skip, p.times) for p in failpoints.parse(spec).values()]
    assert got == expected


@pytest.mark.parametrize(
    "spec", ["nope=locked", "ledger.enqueue=melted", "ledger.enqueue=locked*x"]
)
def test_bad_failpoint_settings_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="DLTMW_FAILPOINTS"):
        failpoints.parse(spec)


def test_injected_faults_look_like_sqlite_and_name_the_failpoint() -> None:
    locked = failpoints.error_of("ledger.enqueue", "locked")
    assert type(locked) is sqlite3.OperationalError and str(locked) == "database is locked"
    assert is_transient_storage_error(locked)
    assert any("ledger.enqueue" in n for n in locked.__notes__)
    assert is_transient_storage_error(failpoints.error_of("x", "ioerror"))
    assert is_transient_storage_error(failpoints.error_of("x", "full"))
    assert not is_transient_storage_error(failpoints.error_of("x", "corrupt"))


def test_the_failpoint_module_is_off_without_its_setting() -> None:
    code = "from dltmw.ledger import failpoints; failpoints.hit('ledger.enqueue'); print('ok')"
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert out.stdout.strip() == "ok"


def table(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    return conn


def test_a_write_is_retried_whole_after_a_transient_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse("ledger.enqueue=locked*2"))
    conn = table(tmp_path)
    runs: list[int] = []

    def body(c: sqlite3.Connection) -> str:
        runs.append(1)
        c.execute("INSERT INTO t VALUES (1)")  # rolled back twice, so no duplicate key
        return "done"

    assert write_sync(conn, "ledger.enqueue", body, FAST) == "done"
    assert len(runs) == 3 and conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1


def test_a_write_that_succeeds_at_once_builds_no_retry_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt runs before tenacity's objects are made (~25-50 µs per write)."""
    monkeypatch.setattr(retry_mod, "Retrying", _no_retry_loop)
    conn = table(tmp_path)
    assert write_sync(conn, "ledger.enqueue", lambda c: c.execute("INSERT INTO t VALUES (1)"), FAST)
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1


def _no_retry_loop(**_: object) -> None:
    raise AssertionError("a retry loop was built for a write that succeeded at once")


def test_a_first_transient_failure_is_attempt_one_of_the_retry_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Run once, not twice, before the loop's first wait; warned as attempt 1."""
    monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse("ledger.enqueue=locked*1"))
    monkeypatch.setattr(retry_mod, "_THROTTLE", LogThrottle())  # earlier tests' warnings
    conn = table(tmp_path)
    runs: list[int] = []

    def body(c: sqlite3.Connection) -> str:
        runs.append(1)
        c.execute("INSERT INTO t VALUES (1)")
        return "done"

    with caplog.at_level(logging.WARNING, logger="dltmw.ledger.retry"):
        assert write_sync(conn, "ledger.enqueue", body, FAST) == "done"
    assert len(runs) == 2
    warned = [r.getMessage() for r in caplog.records if "storage write" in r.getMessage()]
    assert len(warned) == 1 and "(attempt 1," in warned[0], warned


def test_a_write_that_keeps_failing_stops_with_storage_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse("ledger.enqueue=ioerror"))
    conn = table(tmp_path)
    with pytest.raises(StorageUnavailable) as err:
        write_sync(conn, "ledger.enqueue", lambda c: c.execute("INSERT INTO t VALUES (1)"), FAST)
    assert isinstance(err.value.__cause__, sqlite3.OperationalError)
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0 and not conn.in_transaction


def test_a_non_transient_fault_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(failpoints, "_ARMED", failpoints.parse("ledger.enqueue=corrupt*1"))
    conn = table(tmp_path)
    runs: list[int] = []
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        write_sync(conn, "ledger.enqueue", lambda c: runs.append(1), FAST)
    assert runs == [1]


def test_the_log_throttle_lets_the_first_line_through_then_counts() -> None:
    throttle = LogThrottle(interval_s=3600)
    assert throttle.admit("a") == 0
    assert throttle.admit("a") is None and throttle.admit("a") is None
    assert throttle.admit("b") == 0


def test_the_log_throttle_remembers_a_bounded_number_of_keys_forgetting_the_oldest() -> None:
    now = [0.0]
    throttle = LogThrottle(interval_s=60, keys_max=2, clock=lambda: now[0])
    assert throttle.admit("a") == 0 and throttle.admit("b") == 0
    assert throttle.admit("b") is None  # suppressed, counted
    assert throttle.admit("c") == 0  # a third key: "a", logged longest ago, is forgotten
    assert throttle.admit("b") is None  # "b" is still remembered (and throttled)
    assert throttle.admit("a") == 0  # "a" starts over, and "b" (logged longest ago) goes
    now[0] = 61.0
    assert throttle.admit("b") == 0  # its 2 suppressed lines were forgotten with it


def aio_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata())


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (failpoints.error_of("x", "locked"), True),
        (aio_error(grpc.StatusCode.UNAVAILABLE), True),
        (aio_error(grpc.StatusCode.INVALID_ARGUMENT), False),
        (TransientError(errors_pb2.ERROR_REASON_OVERLOADED, "busy"), True),
        (PeerError(errors_pb2.ERROR_REASON_BAD_SIGNATURE, "theirs"), True),
        (ClientError(errors_pb2.ERROR_REASON_INVALID_FIELD, "ours"), False),
        (StorageUnavailable("budget spent"), False),
        (RuntimeError("bug"), False),
    ],
    ids=[
        "sqlite-locked",
        "unavailable",
        "invalid-argument",
        "transient-error",
        "another-nodes-fault",
        "client-error",
        "storage-unavailable",
        "bug",
    ],
)
def test_one_classification_of_transient_failures(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


async def test_a_loop_is_restarted_after_a_transient_failure_and_fatal_otherwise() -> None:
    failures: list[str] = []

    async def fatal(name: str, _exc: BaseException | None) -> None:
        failures.append(name)

    owner = TaskOwner(on_fatal=fatal)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise TransientError(errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, "not yet")
        raise RuntimeError("a bug")

    await asyncio.wait_for(owner.forever("flaky", flaky), 10)
    assert runs == 3 and failures == ["flaky"] and owner.failed == "flaky"


async def test_a_call_cancelled_under_a_loop_restarts_it_instead_of_ending_it_silently() -> None:
    """Two users of one cached gRPC channel: one closes it (as `NodeContext.forget` does after it
    saw the other node restart). grpc.aio ends the other user's stream with `CancelledError`;
    that must restart the loop, not end it as if the node were stopping (a peer's deliver task
    died so and the peer stayed behind)."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    failures: list[str] = []
    channels: list[grpc.aio.Channel] = []
    watching = asyncio.Event()

    async def fatal(name: str, _exc: BaseException | None) -> None:
        failures.append(name)

    async def follow() -> None:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        async for _ in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest()):
            watching.set()

    owner = TaskOwner(on_fatal=fatal)
    try:
        task = owner.forever("follow", follow)
        await asyncio.wait_for(watching.wait(), 10)
        watching.clear()
        await channels[0].close(None)  # the other user of the channel closes it
        await asyncio.wait_for(watching.wait(), 10)  # restarted: watching again on a new channel
        assert len(channels) == 2 and not task.done() and failures == []
    finally:
        await owner.stop()
        for channel in channels:
            await channel.close(None)
        await server.stop(None)


async def test_a_loop_that_returns_is_a_failure_but_not_while_closing() -> None:
    failures: list[str] = []

    async def fatal(name: str, _exc: BaseException | None) -> None:
        failures.append(name)

    async def returns() -> None:
        return None

    owner = TaskOwner(on_fatal=fatal)
    await owner.forever("returns", returns)
    assert failures == ["returns"]
    closing = TaskOwner(on_fatal=fatal)
    closing.close()
    await closing.forever("returns-at-stop", returns)
    assert failures == ["returns"]


@pytest.mark.parametrize(
    ("exc", "level"),
    [
        (ConnectionError("peer already stopped"), logging.INFO),
        (ValueError("a bug"), logging.ERROR),
    ],
    ids=["transient-info", "non-transient-error"],
)
async def test_while_stopping_a_transient_failure_is_one_info_line_and_a_bug_stays_an_error(
    exc: BaseException, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    # flake56: every orderly stop of a PBFT-lite network logged 1-4 ERROR tracebacks of replica
    # links whose connection was dropped under them (a StrayCancellation, transient)
    async def fails() -> None:
        raise exc

    owner = TaskOwner()
    owner.close()
    with caplog.at_level(logging.DEBUG, logger="dltmw.aio.tasks"):
        await owner.forever("link", fails)
    records = [r for r in caplog.records if "link" in r.getMessage()]
    assert [r.levelno for r in records] == [level]
    assert (records[0].exc_info is not None) is (level == logging.ERROR)


async def test_a_loop_that_never_recovers_is_fatal_after_bounded_restarts() -> None:
    failures: list[str] = []

    async def fatal(name: str, _exc: BaseException | None) -> None:
        failures.append(name)

    async def down() -> None:
        raise ConnectionError("still down")

    owner = TaskOwner(on_fatal=fatal, restarts_max=2)
    await asyncio.wait_for(owner.forever("down", down), 10)
    assert failures == ["down"]


def test_a_second_holder_of_a_process_lock_is_refused_and_named(tmp_path: Path) -> None:
    path = tmp_path / "data" / "node.lock"
    assert lock_holder(path) is None
    lock = ProcessLock.acquire(path)
    code = (
        "import sys; from pathlib import Path; from dltmw.runtime.process import *\n"
        "try:\n    ProcessLock.acquire(Path(sys.argv[1]))\nexcept Locked as e:\n"
        "    print(e.holder)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False
    )
    assert other.stdout.strip() == str(os.getpid())
    assert lock_holder(path) == os.getpid()
    lock.release()
    assert lock_holder(path) is None  # the file stays; a stale file says nothing
    with pytest.raises(Locked):
        held = ProcessLock.acquire(path)
        try:
            ProcessLock.acquire(path)  # flock: a second descriptor of the same process too
        finally:
            held.release()


def test_the_log_file_rotates_and_keeps_a_bounded_count(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    configure_logging(log, LogSettings(file_bytes_max=2048, file_count=3))
    try:
        for i in range(500):
            logging.getLogger("x").warning("line %d %s", i, "y" * 40)
    finally:
        for handler in list(logging.getLogger().handlers):
            handler.close()
            logging.getLogger().removeHandler(handler)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]
    assert all((tmp_path / f).stat().st_size <= 2048 for f in files)
