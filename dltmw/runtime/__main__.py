"""`python -m dltmw.runtime --config node.toml`: run one node until SIGTERM/SIGINT.

Prints `READY <node_id> <address>` on stdout once it serves, so supervisors (dltmw up, tests)
can wait for it without sleeping.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

from dltmw.runtime.config import NodeConfig
from dltmw.runtime.node import Node


async def serve(config: NodeConfig) -> None:
    """Start, announce, wait for a signal, stop."""
    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    address = await node.start()
    print(f"READY {config.node_id} {address}", flush=True)
    await stop.wait()
    await node.stop(grace_s=5.0)
    print(f"STOPPED {config.node_id}", flush=True)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m dltmw.runtime")
    parser.add_argument("--config", type=Path, required=True)
    ns = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvloop.run(serve(NodeConfig.load(ns.config)))


if __name__ == "__main__":
    main()
