"""TEST-ONLY: an orderer that withholds blocks from its Deliver streams.

`DLTMW_TEST_BYZANTINE=<node_id>:withhold:<h>` (or `<node_id>:withhold`, h = 1) makes that
orderer serve every Deliver stream — peers, other orderers catching up, header-only monitors —
blocks below `h` only: past them the stream stays open and silent, as a byzantine orderer (or one
cut off from the others) would keep it, while the orderer itself takes part in consensus and
orders correctly (`PoisonHook.from_env` returns no hook for this mode). It is the fault a peer's
censorship monitor answers (`runtime/roles/peer/censor_watch.py`). Like the other byzantine
hooks (`byzantine.py`, whose variable this is) it is read once, when the orderer channel is built;
a value that names another node or mode, or no height, is ignored here.
"""

from __future__ import annotations

import asyncio
import logging
import os

from dltmw.runtime.roles.orderer.byzantine import HOOK_ENV

logger = logging.getLogger(__name__)

MODE = "withhold"


def withheld_from(node_id: str) -> int | None:
    """The first block number this orderer withholds, if the hook names it (else None)."""
    value = os.environ.get(HOOK_ENV, "")
    prefix = f"{node_id}:{MODE}"
    if value == prefix:
        height = 1
    elif value.startswith(prefix + ":") and value[len(prefix) + 1 :].isdigit():
        height = int(value[len(prefix) + 1 :])
    else:
        return None
    logger.warning(
        "TEST-ONLY byzantine hook active on %s: Deliver streams get no block from %d on",
        node_id,
        height,
    )
    return height


async def hold() -> None:
    """Keep a Deliver stream open and silent until it is cancelled."""
    await asyncio.Event().wait()
