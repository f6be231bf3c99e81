"""kill -9 of a program that embeds the network (`dltmw.open` in a child process, on a directory
the test chooses) while it publishes and two subscribers follow the topic with the SDK's own
`FileCheckpointer`; restarted on the same directory, twice, then run to the end.

Every message acknowledged before a kill (its `publish` returned) is delivered to each
subscriber, in commit order (positions strictly increasing), and exactly once — apart from
the one message a subscriber had in hand at a kill, which the SDK's contract delivers again
right after the restart (its record was written, its checkpoint not yet saved;
docs/embedding.md "Checkpoints and exactly-once"). Over both transports of `dltmw.open`.

Red when broken: make `FileCheckpointer.save` do nothing (a restart replays the topic from
block 0: "not in commit order, or repeated").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.embedded_bus import (
    SUBSCRIBERS,
    complete_lines,
    once_but_the_message_in_hand,
)

CHILD = Path(__file__).with_name("embedded_bus.py")
ROOT = Path(__file__).resolve().parents[2]
PHASE = 100_000  # message numbers of each run start here apart (payloads never repeat)


def _start(directory: Path, transport: str, start: int, count: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), transport, str(start), str(count)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _counts(directory: Path) -> list[int]:
    files = ["acked.txt", *(f"{name}.txt" for name in SUBSCRIBERS)]
    return [len(complete_lines(directory / f)) for f in files]


def _wait_then_kill(proc: subprocess.Popen[bytes], directory: Path, more: list[int]) -> None:
    """kill -9 once acked and each subscriber's records grew by `more` (bounded wait)."""
    before = _counts(directory)
    deadline = time.monotonic() + 120
    try:
        while any(
            now < was + want
            for now, was, want in zip(_counts(directory), before, more, strict=True)
        ):
            if proc.poll() is not None:
                raise AssertionError(f"child exited: {proc.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"no progress: {_counts(directory)}"
            time.sleep(0.02)
    finally:
        proc.kill()  # SIGKILL, wherever it is: mid-publish, mid-record, mid-checkpoint
        proc.wait(10)


def _check(directory: Path, kills: int) -> None:
    acked = [line.split() for line in complete_lines(directory / "acked.txt")]
    assert acked, "nothing was acknowledged"
    for name in SUBSCRIBERS:
        delivered = once_but_the_message_in_hand(complete_lines(directory / f"{name}.txt"), kills)
        positions = [tuple(int(x) for x in row[:3]) for row in delivered]
        assert positions == sorted(set(positions)), f"{name}: not in commit order, or repeated"
        tx_ids = [row[3] for row in delivered]
        assert len(set(tx_ids)) == len(tx_ids), f"{name}: a message delivered twice"
        missing = {tx for tx, _ in acked} - set(tx_ids)
        assert not missing, f"{name}: {len(missing)} acknowledged messages never delivered"


@pytest.mark.parametrize("transport", ["inproc", "grpc"])
def test_embedded_program_killed_mid_stream_loses_and_repeats_nothing(
    tmp_path: Path, transport: str
) -> None:
    kills = 0
    for run in range(2):  # two kills, each mid-stream
        proc = _start(tmp_path, transport, run * PHASE, PHASE)
        _wait_then_kill(proc, tmp_path, [25, 10, 10])
        kills += 1
    proc = _start(tmp_path, transport, 2 * PHASE, 20)  # to the end: every message delivered
    try:
        code = proc.wait(180)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"the last run did not finish: {_counts(tmp_path)}") from None
    assert code == 0, proc.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
    _check(tmp_path, kills)
