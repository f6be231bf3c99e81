"""`python -m dltmw.runtime --config node.toml [--log-file F]`: run one node until SIGTERM/SIGINT
or until one of its long-lived tasks fails for good.

Prints `READY <node_id> <address> [operations=<host:port>]` on stdout once it serves (the second
address is the HTTP operations endpoint, `runtime/operations.py`, when `[operations]` has one),
so supervisors (dltmw up, tests) can wait for it without sleeping, and `STOPPED <node_id>` or
`FAILED <node_id> <task>` at the end.
Before anything else it takes the data-directory lock (a second copy exits at once with
`EXIT_LOCKED` and one line on stderr). Exit statuses: `runtime/process.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import traceback
from pathlib import Path

import uvloop

from dltmw.ledger import failpoints
from dltmw.ledger.sqlite_file import StoreFormatError
from dltmw.net.hsm import HsmError
from dltmw.net.keyfile import KeyFileError
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.gc_tuning import freeze_startup_heap
from dltmw.runtime.interpreter import tune_for_notary
from dltmw.runtime.memory import free_in_arenas, trim_forever, tune_malloc
from dltmw.runtime.node import Node
from dltmw.runtime.process import (
    EXIT_FATAL,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_STARTUP,
    EXIT_USAGE,
    NODE_LOCK,
    Locked,
    ProcessLock,
    configure_logging,
)

logger = logging.getLogger("dltmw.runtime")
GRACE_S = 5.0
FAILED_GRACE_S = 1.0


async def serve(config: NodeConfig) -> int:
    """Start, announce, run until a signal or a fatal task failure, stop; returns the status."""
    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = await node.start()
    ops = f" operations={node.operations_address}" if node.operations_address else ""
    print(f"READY {config.node_id} {address}{ops}", flush=True)
    frozen = freeze_startup_heap()  # full collections skip the startup heap (gc_tuning.py)
    if free_in_arenas() is not None:  # glibc: give back what a burst left free (memory.py)
        node.ctx.tasks.forever("malloc-trim", trim_forever)
    if "notary" in config.roles:
        logger.info("notary interpreter: %s", tune_for_notary(config.notary))
    channels = sorted({*node.peers, *node.orderers})
    logger.info(
        "serving on %s: roles %s, channels %s, services %s, operations endpoint %s; "
        "%d startup objects frozen",
        address,
        ",".join(sorted(config.roles)),
        ",".join(channels) or "-",
        ",".join(node.service_names),
        node.operations_address or "off",
        frozen,
    )
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(node.failed.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    # After a fatal failure nothing in flight can complete well: do not wait long for it.
    await node.stop(grace_s=FAILED_GRACE_S if node.failed.is_set() else GRACE_S)
    if node.failed.is_set():
        print(f"FAILED {config.node_id} {node.ctx.tasks.failed}", flush=True)
        return EXIT_FATAL
    logger.info("stopped cleanly")
    print(f"STOPPED {config.node_id}", flush=True)
    return EXIT_OK


def main() -> None:
    """Entry point."""
    tune_malloc()  # before any thread starts (runtime/memory.py)
    parser = argparse.ArgumentParser(prog="python -m dltmw.runtime", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="the node's node.toml")
    parser.add_argument(
        "--log-file", type=Path, help="rotating JSON-lines log file (default: stderr)"
    )
    ns = parser.parse_args()
    try:
        config = NodeConfig.load(ns.config)
    except (OSError, ValueError) as exc:  # FileError (a ValueError) names the key path
        print(f"dltmw node: cannot load {ns.config}: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)
    try:
        lock = ProcessLock.acquire(config.data_dir / NODE_LOCK)
    except Locked as exc:
        print(f"dltmw node {config.node_id}: not started: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_LOCKED)
    configure_logging(ns.log_file, config.logging, config.node_id)
    if failpoints.armed():
        logger.warning("TEST-ONLY failpoints armed: %s", sorted(failpoints.armed()))
    try:
        code = uvloop.run(serve(config))
    except (KeyFileError, HsmError, StoreFormatError) as exc:
        # no (or a wrong) passphrase or PIN, no token key, data a newer dltmw wrote
        print(f"dltmw node {config.node_id}: not started: {exc}", file=sys.stderr, flush=True)
        code = EXIT_USAGE
    except Exception:
        logger.exception("node %s failed to start", config.node_id)
        traceback.print_exc(file=sys.stderr)
        code = EXIT_STARTUP
    lock.release()
    sys.exit(code)


if __name__ == "__main__":
    main()
