"""Run the paper's Figure 8 as a client process (used inside a network namespace by
test_multihost.py): `python ns_figure8.py NET CLIENT` prints the three validation codes, one
per line, in the order of `figure8.STEPS`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from figure8 import open_accounts, run_steps

from dltmw.client import GatewayClient


async def main(net: Path, client_id: str) -> None:
    async with await GatewayClient.connect(net, client_id) as client:
        await open_accounts(client)
        for _, status in await run_steps(client):
            print(status.result, flush=True)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(Path(sys.argv[1]), sys.argv[2]), 120))
