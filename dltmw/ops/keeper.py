"""`python -m dltmw.ops.keeper --config node.toml [--log-file F]`: keep one node running.

Why. A node stops itself with a non-zero status when it cannot go on safely (a long-lived task
failed for good, storage unavailable past its retry budget; `aio/tasks.py`): its in-memory
state is then rebuilt from what is durable by starting it again. `dltmw up` starts each node under
a keeper so that this happens without an operator; the integration tests start nodes directly
(their crash tests restart nodes themselves) unless a test asks for a keeper.

Rules. The keeper holds `<data_dir>/keeper.lock` for its life (a second keeper of the same node
exits at once with `EXIT_LOCKED`), runs `python -m dltmw.runtime` as its child, and:
* a child exit of 0 (clean stop), 2 (bad configuration) or 73 (data directory in use) ends the
  keeper with that status — restarting cannot help;
* any other exit, a crash by signal included, is followed by a restart after an exponential
  backoff with jitter (`--backoff-first-s`, doubling up to `--backoff-max-s`), at most
  `--restart-max` restarts per `--window-s`; past that the keeper gives up with the child's status
  (128 + signal for a signal). Each restart is logged on stderr as
  `keeper: restarting <node> after exit <code> in <s> s (attempt <k>)`;
* SIGTERM/SIGINT are forwarded to the child; the keeper then waits for it and exits with its
  status (0 after a clean stop); during a backoff it exits 0 at once.
Test-only fault settings (`DLTMW_FAILPOINTS`, `DLTMW_TEST_*`) apply to the first run only: a
restart models the operator's fix.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import sys
import time
from collections import deque
from pathlib import Path

from dltmw.runtime.config import NodeConfig
from dltmw.runtime.process import (
    EXIT_LOCKED,
    EXIT_USAGE,
    KEEPER_LOCK,
    NOT_RESTARTED,
    Locked,
    ProcessLock,
)

logger = logging.getLogger("keeper")
TEST_ONLY_ENV_PREFIXES = ("DLTMW_FAILPOINTS", "DLTMW_TEST_")


class Keeper:
    """Runs one node process and restarts it (see the module docstring)."""

    def __init__(self, node_id: str, command: list[str], ns: argparse.Namespace) -> None:
        self.node_id = node_id
        self.command = command
        self.restart_max: int = ns.restart_max
        self.window_s: float = ns.window_s
        self.backoff_first_s: float = ns.backoff_first_s
        self.backoff_max_s: float = ns.backoff_max_s
        self.stopping = asyncio.Event()
        self.child: asyncio.subprocess.Process | None = None
        self._signal: int | None = None

    def on_signal(self, sig: int) -> None:
        """SIGTERM/SIGINT: stop restarting, pass it on to the node."""
        self._signal = sig
        self.stopping.set()
        if self.child is not None and self.child.returncode is None:
            self.child.send_signal(sig)

    async def run(self) -> int:
        """Run, restart, until a clean stop, a signal, or too many restarts."""
        restarts: deque[float] = deque()
        env = dict(os.environ)
        attempt = 0
        while True:
            self.child = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.DEVNULL, env=env
            )
            if self.stopping.is_set() and self._signal is not None:
                self.child.send_signal(self._signal)  # the signal came while we were spawning
            code = await self.child.wait()
            if self.stopping.is_set() or code in NOT_RESTARTED:
                return _status(code)
            now = time.monotonic()
            while restarts and now - restarts[0] > self.window_s:
                restarts.popleft()
            if len(restarts) >= self.restart_max:
                logger.error(
                    "keeper: %s exited with %d; %d restarts within %.0f s, giving up",
                    self.node_id,
                    code,
                    len(restarts),
                    self.window_s,
                )
                return _status(code)
            restarts.append(now)
            attempt += 1
            cap = min(self.backoff_max_s, self.backoff_first_s * 2.0 ** (len(restarts) - 1))
            delay = cap / 2 + random.random() * cap / 2  # jitter, not cryptography
            logger.warning(
                "keeper: restarting %s after exit %d in %.1f s (attempt %d)",
                self.node_id,
                code,
                delay,
                attempt,
            )
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
                return 0  # stopped during the backoff: the node is already down
            except TimeoutError:
                pass
            env = {k: v for k, v in env.items() if not k.startswith(TEST_ONLY_ENV_PREFIXES)}
            print("--- start", flush=True)  # readiness waiters read the newest run only


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


async def _main(keeper: Keeper) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, keeper.on_signal, sig)
    return await keeper.run()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m dltmw.ops.keeper")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--log-file", type=Path)
    parser.add_argument("--restart-max", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=300.0)
    parser.add_argument("--backoff-first-s", type=float, default=1.0)
    parser.add_argument("--backoff-max-s", type=float, default=60.0)
    ns = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        config = NodeConfig.load(ns.config)
    except (OSError, ValueError, TypeError) as exc:
        print(f"keeper: cannot load {ns.config}: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)
    try:
        lock = ProcessLock.acquire(config.data_dir / KEEPER_LOCK)
    except Locked as exc:
        print(f"keeper of {config.node_id}: not started: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_LOCKED)
    command = [sys.executable, "-m", "dltmw.runtime", "--config", str(ns.config)]
    if ns.log_file is not None:
        command += ["--log-file", str(ns.log_file)]
    code = asyncio.run(_main(Keeper(config.node_id, command, ns)))
    lock.release()
    sys.exit(code)


if __name__ == "__main__":
    main()
