"""TEST-ONLY: an orderer whose Deliver streams withhold blocks, or show forged ones.

Two faults of the block source a peer follows, answered by the peer's censorship monitor
(`runtime/roles/peer/censor_watch.py`, `header_monitor.py`). Both orderers order correctly and
take part in consensus (`PoisonHook.from_env` returns no hook for these modes); only what their
Deliver streams send — to peers, to other orderers catching up, to header-only monitors — is
faulty:

- `DLTMW_TEST_BYZANTINE=<node_id>:withhold:<h>` (or `<node_id>:withhold`, h = 1): blocks below
  `h` only; past them the stream stays open and silent, as a byzantine orderer (or one cut off
  from the others) keeps it;
- `DLTMW_TEST_BYZANTINE=<node_id>:forge`: every block with its number raised by `FORGED_AHEAD`
  and the signatures of the real one, which do not cover it: a header "far ahead" that only a
  monitor checking signatures can tell from a real one.

Like the other byzantine hooks (`byzantine.py`) it is read once, when the orderer channel is
built; a value that names another node or mode is ignored here. The variable is defined here,
not in `byzantine.py`: a solo orderer loads this module, and `byzantine.py` loads PBFT-lite's
core (`tests/integration/test_node_imports.py`: a node loads only its roles' code).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from dltmw.v1 import block_pb2

logger = logging.getLogger(__name__)

HOOK_ENV = "DLTMW_TEST_BYZANTINE"  # `<node_id>:<mode>[:<arg>]`, every byzantine hook's
FORGED_AHEAD = 1000


@dataclass(frozen=True)
class DeliverFault:
    """What one faulty orderer does to the blocks its Deliver streams send."""

    withhold_from: int | None = None  # the first block number never sent
    forge: bool = False

    @classmethod
    def from_env(cls, node_id: str) -> DeliverFault | None:
        """The fault `DLTMW_TEST_BYZANTINE` names for `node_id`, else None."""
        value = os.environ.get(HOOK_ENV, "")
        prefix = f"{node_id}:withhold"
        fault = None
        if value == prefix:
            fault = cls(withhold_from=1)
        elif value.startswith(prefix + ":") and value[len(prefix) + 1 :].isdigit():
            fault = cls(withhold_from=int(value[len(prefix) + 1 :]))
        elif value == f"{node_id}:forge":
            fault = cls(forge=True)
        if fault is not None:
            logger.warning("TEST-ONLY byzantine hook active on %s: Deliver %s", node_id, fault)
        return fault

    async def apply_data(self, data: bytes) -> bytes:
        """`apply` to a block serialised as stored (what Deliver sends)."""
        block = block_pb2.Block.FromString(data)
        return (await self.apply(block)).SerializeToString()

    async def apply(self, block: block_pb2.Block) -> block_pb2.Block:
        """The block to send instead of `block` (never returns for a withheld one: the stream
        stays open and silent until it is cancelled)."""
        if self.withhold_from is not None and block.header.number >= self.withhold_from:
            await asyncio.Event().wait()
        if self.forge:
            forged = block_pb2.Block()
            forged.CopyFrom(block)
            forged.header.number += FORGED_AHEAD
            return forged
        return block
