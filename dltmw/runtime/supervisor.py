"""Start and stop the node processes of a network directory (used by `dltmw up/down`, the demo
and the integration tests).

Each node is a separate OS process (`python -m dltmw.runtime`) whose stdout goes to
`run/logs/<id>.out` and stderr to `run/logs/<id>.log`; its PID is kept in `run/pids/<id>.pid`.
Readiness is the `READY <id> <address>` line, waited for with a deadline (never a fixed sleep).
Stopping is by PID: SIGTERM, wait for the graceful stop, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path


@dataclass
class NodeProcess:
    """A started node."""

    node_id: str
    process: subprocess.Popen[bytes]
    address: str = ""


class Supervisor:
    """Node processes of one network directory."""

    def __init__(self, network_dir: Path) -> None:
        self.dir = network_dir.resolve()
        self.run = self.dir / "run"
        self.nodes: dict[str, NodeProcess] = {}

    def node_ids(self) -> list[str]:
        """Every node of the topology, orderers first."""
        with (self.dir / "topology.toml").open("rb") as f:
            nodes = tomllib.load(f)["nodes"]
        return [n["id"] for n in sorted(nodes, key=lambda n: "orderer" not in n["roles"])]

    def start(self, node_id: str) -> NodeProcess:
        """Spawn one node (returns at once; see wait_ready)."""
        logs = self.run / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (self.run / "pids").mkdir(parents=True, exist_ok=True)
        out = (logs / f"{node_id}.out").open("ab")
        err = (logs / f"{node_id}.log").open("ab")
        out.write(b"--- start\n")
        out.flush()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dltmw.runtime",
                "--config",
                str(self.dir / "nodes" / node_id / "node.toml"),
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        err.close()
        (self.run / "pids" / f"{node_id}.pid").write_text(str(proc.pid))
        node = NodeProcess(node_id, proc)
        self.nodes[node_id] = node
        return node

    def wait_ready(self, node_id: str, timeout_s: float = 30.0) -> str:
        """Wait for the node's READY line; returns its address or raises RuntimeError."""
        node = self.nodes[node_id]
        path = self.run / "logs" / f"{node_id}.out"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = path.read_text(errors="replace").rsplit("--- start\n", 1)[-1]
            for line in text.splitlines():
                if line.startswith(f"READY {node_id} "):
                    node.address = line.split()[2]
                    return node.address
            if node.process.poll() is not None:
                log = (self.run / "logs" / f"{node_id}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{node_id} exited with {node.process.returncode}:\n{log}")
            time.sleep(0.05)
        raise RuntimeError(f"{node_id} not ready within {timeout_s}s")

    def up(self, timeout_s: float = 60.0) -> dict[str, str]:
        """Start every node and wait until all are ready."""
        for node_id in self.node_ids():
            self.start(node_id)
        return {n: self.wait_ready(n, timeout_s) for n in self.node_ids()}

    def stop(self, node_id: str, grace_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to grace_s, then SIGKILL; returns the exit code."""
        pid = self._pid(node_id)
        if pid is None:
            return None
        code = _terminate(pid, self.nodes.get(node_id), grace_s)
        self._forget(node_id)
        return code

    def _forget(self, node_id: str) -> None:
        (self.run / "pids" / f"{node_id}.pid").unlink(missing_ok=True)
        self.nodes.pop(node_id, None)

    def kill(self, node_id: str) -> None:
        """kill -9 (crash tests)."""
        node = self.nodes.pop(node_id)
        node.process.kill()
        node.process.wait(10)
        (self.run / "pids" / f"{node_id}.pid").unlink(missing_ok=True)

    def stop_all(self, grace_s: float = 10.0) -> dict[str, int | None]:
        """Stop every node that has a PID file, all at once; returns exit codes by node.

        SIGTERM goes to every node first, then each is waited for: nodes keep streams open to
        each other (Deliver, replica Exchange), so stopping them one by one would make each wait
        out its grace period for peers that are still up.
        """
        folder = self.run / "pids"
        ids = sorted({*(p.stem for p in folder.glob("*.pid")), *self.nodes})
        targets = {n: pid for n in ids if (pid := self._pid(n)) is not None}
        for pid in targets.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        codes: dict[str, int | None] = {}
        # Signalled exactly once: a second SIGTERM may hit a node whose handler is already gone.
        for node_id, pid in targets.items():
            codes[node_id] = _await_exit(pid, self.nodes.get(node_id), grace_s)
            self._forget(node_id)
        return codes

    def down(self, grace_s: float = 10.0) -> None:
        """Stop every node that has a PID file."""
        self.stop_all(grace_s)

    def _pid(self, node_id: str) -> int | None:
        if node_id in self.nodes:
            return self.nodes[node_id].process.pid
        path = self.run / "pids" / f"{node_id}.pid"
        return int(path.read_text()) if path.exists() else None


def _terminate(pid: int, node: NodeProcess | None, grace_s: float) -> int | None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    return _await_exit(pid, node, grace_s)


def _await_exit(pid: int, node: NodeProcess | None, grace_s: float) -> int | None:
    """Wait up to grace_s for an already signalled process, then SIGKILL it."""
    if node is not None:
        try:
            return node.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            node.process.kill()
            return node.process.wait(10)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 0
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return -9
