"""Start and stop the node processes of a network directory (used by `dltmw up/down/start/stop/
restart`, the demo and the integration tests).

Each node is a separate OS process (`python -m dltmw.runtime`), in its own session, optionally
under a keeper (`keeper.py`, which restarts it after a failure; `dltmw up` uses one, the tests do
not unless they ask). Files under `run/`:
* `logs/<id>.out` — stdout: `--- start` before each run, then `READY <id> <address>`;
* `logs/<id>.log` — the node's own rotating log (`[logging]` in node.toml);
* `logs/<id>.err` — stderr: fatal start-up errors, Python's last words, the keeper's restarts;
* `pids/<id>.pid` — the PID to signal (the keeper's, or the node's), written atomically.
Readiness is the `READY` line of the newest run, waited for with a deadline (never a fixed sleep).

Who is running is asked of the locks, never of the PID files: a node holds `<data_dir>/node.lock`
and its keeper `<data_dir>/keeper.lock` for their lives (`process.py`), so a stale PID file — the
process gone, or its PID reused by another program — is ignored, `start` refuses a node that is
already running, and `stop`/`down` find processes another `dltmw` command started.
Stopping: SIGTERM (a keeper forwards it to its node), wait for the graceful stop, then SIGKILL of
the process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dltmw.net.nats_plan import PLAN_FILE, NatsPlan
from dltmw.ops.nats_cluster import NatsCluster
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.process import KEEPER_LOCK, NODE_LOCK, lock_holder


class AlreadyRunning(RuntimeError):
    """The node (or its keeper) is running already."""


@dataclass
class NodeProcess:
    """A node (or its keeper) started by this supervisor."""

    node_id: str
    process: subprocess.Popen[bytes]
    address: str = ""
    kept: bool = False


@dataclass(frozen=True)
class NodeStatus:
    """What `up` found or did for one node."""

    node_id: str
    pid: int
    address: str
    started: bool  # False: it was running already


class Supervisor:
    """Node processes of one network directory."""

    def __init__(
        self,
        network_dir: Path,
        *,
        keep: bool = False,
        launch: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.dir = network_dir.resolve()
        self.run = self.dir / "run"
        self.keep = keep  # start nodes under a keeper by default
        # a command prefix per node that must exec its argument, e.g. `ip netns exec NS`
        # (the multi-host tests put each organisation's nodes into its own network namespace);
        # a nats-server member is named by its plan name ("n0", ...)
        self.launch = dict(launch or {})
        self.nodes: dict[str, NodeProcess] = {}
        self._nats: NatsCluster | None = None

    def node_ids(self) -> list[str]:
        """Every node of the topology, orderers first."""
        with (self.dir / "topology.toml").open("rb") as f:
            nodes = tomllib.load(f)["nodes"]
        return [n["id"] for n in sorted(nodes, key=lambda n: "orderer" not in n["roles"])]

    def config_path(self, node_id: str) -> Path:
        """The node's node.toml."""
        return self.dir / "nodes" / node_id / "node.toml"

    def data_dir(self, node_id: str) -> Path:
        """The node's data directory (where its locks live)."""
        return NodeConfig.load(self.config_path(node_id)).data_dir

    def running(self, node_id: str) -> int | None:
        """PID to signal to stop the node (its keeper's, else its own), or None when neither
        holds its lock; 0 when a lock is held but the holder has not written its PID yet."""
        data = self.data_dir(node_id)
        for name in (KEEPER_LOCK, NODE_LOCK):
            holder = lock_holder(data / name)
            if holder is not None:
                return holder
        return None

    def node_pid(self, node_id: str) -> int | None:
        """PID of the node process itself (not its keeper), if it runs."""
        return lock_holder(self.data_dir(node_id) / NODE_LOCK)

    def start(
        self, node_id: str, *, keep: bool | None = None, env: Mapping[str, str] | None = None
    ) -> NodeProcess:
        """Spawn one node (returns at once; see wait_ready); AlreadyRunning if it runs.
        `env` adds to this process's environment (tests: failpoints)."""
        pid = self.running(node_id)
        if pid is not None:
            raise AlreadyRunning(f"{node_id} is already running (pid {pid})")
        kept = self.keep if keep is None else keep
        logs = self.run / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (
            (logs / f"{node_id}.out").open("ab") as out,
            (logs / f"{node_id}.err").open("ab") as err,
        ):
            out.write(b"--- start\n")
            out.flush()
            module = "dltmw.ops.keeper" if kept else "dltmw.runtime"
            args = ["--config", str(self.config_path(node_id))]
            args += ["--log-file", str(logs / f"{node_id}.log")]
            proc = subprocess.Popen(
                [*self.launch.get(node_id, ()), sys.executable, "-m", module, *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        self._write_pid(node_id, proc.pid)
        node = NodeProcess(node_id, proc, kept=kept)
        self.nodes[node_id] = node
        return node

    def _write_pid(self, node_id: str, pid: int) -> None:
        folder = self.run / "pids"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{node_id}.{os.getpid()}.tmp"
        tmp.write_text(f"{pid}\n")
        tmp.replace(folder / f"{node_id}.pid")

    def ready_address(self, node_id: str) -> str | None:
        """The address in the newest run's READY line, if it printed one."""
        words = self._ready_line(node_id)
        return words[2] if words is not None else None

    def operations_address(self, node_id: str) -> str | None:
        """The operations endpoint ("host:port") in the newest run's READY line, if any."""
        words = self._ready_line(node_id) or []
        found = [w for w in words[3:] if w.startswith("operations=")]
        return found[0].removeprefix("operations=") if found else None

    def _ready_line(self, node_id: str) -> list[str] | None:
        """The words of the newest run's READY line ("READY <node> <address> ..."), if any."""
        path = self.run / "logs" / f"{node_id}.out"
        try:
            text = path.read_text(errors="replace").rsplit("--- start\n", 1)[-1]
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if line.startswith(f"READY {node_id} "):
                return line.split()
        return None
        for line in text.splitlines():
            if line.startswith(f"READY {node_id} "):
                found = [w for w in line.split()[3:] if w.startswith("operations=")]
                return found[0].removeprefix("operations=") if found else None
        return None

    def log_tail(self, node_id: str, chars: int = 2000) -> str:
        """The end of the node's log and stderr (for failure messages)."""
        parts = []
        for suffix in ("log", "err"):
            with contextlib.suppress(FileNotFoundError):
                text = (self.run / "logs" / f"{node_id}.{suffix}").read_text(errors="replace")
                if text.strip():
                    parts.append(f"--- {node_id}.{suffix}:\n{text[-chars:]}")
        return "\n".join(parts)

    def wait_ready(self, node_id: str, timeout_s: float = 30.0) -> str:
        """Wait for the node's READY line; returns its address or raises RuntimeError."""
        node = self.nodes.get(node_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            address = self.ready_address(node_id)
            if address is not None:
                if node is not None:
                    node.address = address
                return address
            if node is not None and node.process.poll() is not None:
                code = node.process.returncode
                raise RuntimeError(f"{node_id} exited with {code}:\n{self.log_tail(node_id)}")
            if node is None and self.running(node_id) is None:
                raise RuntimeError(f"{node_id} is not running:\n{self.log_tail(node_id)}")
            time.sleep(0.05)
        raise RuntimeError(f"{node_id} not ready within {timeout_s}s")

    @property
    def nats(self) -> NatsCluster | None:
        """The network's NATS JetStream cluster (`jetstream/`, planned by `dltmw init` for a
        topology with `[jetstream]`), or None."""
        if self._nats is None and (self.dir / "jetstream" / PLAN_FILE).exists():
            self._nats = NatsCluster(NatsPlan.load(self.dir / "jetstream"), self.launch)
        return self._nats

    def start_missing(self, timeout_s: float = 60.0) -> list[NodeStatus]:
        """Start every node that is not running (the NATS cluster first, if the network has
        one), wait until all are ready; report each."""
        if self.nats is not None:
            self.nats.start()
        found: dict[str, int] = {}
        for node_id in self.node_ids():
            pid = self.running(node_id)
            if pid is None:
                self.start(node_id)
            else:
                found[node_id] = pid
        out = []
        for node_id in self.node_ids():
            address = self.wait_ready(node_id, timeout_s)
            if node_id in found:
                out.append(NodeStatus(node_id, found[node_id], address, started=False))
            else:
                out.append(NodeStatus(node_id, self.nodes[node_id].process.pid, address, True))
        return out

    def up(self, timeout_s: float = 60.0) -> dict[str, str]:
        """Start every node that is not running and wait until all are ready; addresses."""
        return {s.node_id: s.address for s in self.start_missing(timeout_s)}

    def stop(self, node_id: str, grace_s: float = 10.0) -> int | None:
        """SIGTERM, wait up to grace_s, then SIGKILL; returns the exit code (None: not
        running; for a process another command started: 0 if it stopped in time, else -9)."""
        return self._stop_many([node_id], grace_s).get(node_id)

    def kill(self, node_id: str) -> None:
        """kill -9 of the node process itself (crash tests). Under a keeper, the keeper lives
        on and restarts it; otherwise the node is forgotten."""
        node = self.nodes.get(node_id)
        if node is not None and not node.kept:
            self.nodes.pop(node_id)
            node.process.kill()
            node.process.wait(10)
            (self.run / "pids" / f"{node_id}.pid").unlink(missing_ok=True)
            return
        pid = self.node_pid(node_id)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(lambda: self.node_pid(node_id) == pid, 10.0)

    def stop_all(self, grace_s: float = 10.0) -> dict[str, int | None]:
        """Stop every running node of the network, all at once; returns exit codes by node.

        SIGTERM goes to every node first, then each is waited for: nodes keep streams open to
        each other (Deliver, replica Exchange), so stopping them one by one would make each wait
        out its grace period for peers that are still up.
        """
        codes = self._stop_many(sorted({*self.node_ids(), *self.nodes}), grace_s)
        if self.nats is not None:  # after the orderers: they publish to it until they stop
            self.nats.stop()
        return codes

    def down(self, grace_s: float = 10.0) -> dict[str, int | None]:
        """Stop every node of the network."""
        return self.stop_all(grace_s)

    def _stop_many(self, node_ids: list[str], grace_s: float) -> dict[str, int | None]:
        targets: dict[str, int] = {}
        for node_id in node_ids:
            node = self.nodes.get(node_id)
            pid = node.process.pid if node is not None else self.running(node_id)
            if node is not None and node.process.poll() is not None:
                pid = self.running(node_id)  # ours ended; maybe someone else's runs
            if pid:
                targets[node_id] = pid
        # Signalled exactly once: a second SIGTERM may hit a node whose handler is already gone.
        for pid in targets.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for node_id, pid in targets.items():
            codes[node_id] = self._await_exit(node_id, pid, grace_s)
            self.nodes.pop(node_id, None)
            (self.run / "pids" / f"{node_id}.pid").unlink(missing_ok=True)
        return codes

    def _await_exit(self, node_id: str, pid: int, grace_s: float) -> int:
        """Wait up to grace_s for a signalled process, then SIGKILL its process group."""
        node = self.nodes.get(node_id)
        if node is not None and node.process.pid == pid:
            try:
                return node.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                _kill_group(pid)
                return node.process.wait(10)
        child = self.node_pid(node_id)
        deadline = time.monotonic() + grace_s
        if _wait_gone(lambda: self.running(node_id) is not None, grace_s):
            # Its lock is released during shutdown, a moment before the process is gone: wait
            # for the processes too, so that when this returns nothing of the node still runs.
            left = max(0.0, deadline - time.monotonic()) + 1.0
            _wait_gone(
                lambda: process_alive(pid) or (child is not None and process_alive(child)), left
            )
            return 0
        _kill_group(pid)
        node_pid = self.node_pid(node_id)
        if node_pid:
            _kill_group(node_pid)
        _wait_gone(lambda: self.running(node_id) is not None, 10.0)
        return -9


def _wait_gone(still_there: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `still_there()` until false (True) or the deadline (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not still_there():
            return True
        time.sleep(0.05)
    return False


def process_alive(pid: int) -> bool:
    """Is process `pid` running (not gone, not a zombie waiting to be reaped)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
