"""Where is node X listening? A directory of one small file per node.

Nodes listen on port 0 (the kernel picks a free port, so tests and parallel networks never clash)
and publish the address they got by writing `<dir>/<node_id>` atomically (write + rename) once
they serve. Other nodes resolve lazily, when they first connect, and wait with a deadline if the
node has not started yet.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


class AddressBook:
    """Publish and resolve node addresses."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def publish(self, node_id: str, address: str) -> None:
        """Atomically record this node's address."""
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = self._dir / f".{node_id}.{os.getpid()}.tmp"
        tmp.write_text(address)
        tmp.replace(self._dir / node_id)

    def withdraw(self, node_id: str, address: str) -> None:
        """Remove this node's record if it still names `address`."""
        path = self._dir / node_id
        try:
            if path.read_text() == address:
                path.unlink()
        except FileNotFoundError:
            pass

    def lookup(self, node_id: str) -> str | None:
        """The recorded address, or None."""
        try:
            return (self._dir / node_id).read_text().strip() or None
        except FileNotFoundError:
            return None

    async def resolve(self, node_id: str, timeout_s: float) -> str | None:
        """Wait up to `timeout_s` for `node_id` to publish its address."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            address = self.lookup(node_id)
            if address is not None or loop.time() >= deadline:
                return address
            await asyncio.sleep(0.05)
