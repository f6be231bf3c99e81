"""Issue cash from Org1's vault to Org2's and print what Org2 holds (used inside Org1's network
namespace by test_multihost.py): `python ns_issue.py ORG1_DIR ORG2_DIR`. Org2's holdings are
read from Org2's vault over the hosts' links, with Org2's own client files."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from dltmw.client.utxo import PartyFiles, VaultClient, holdings_of


async def main(org1: Path, org2: Path) -> None:
    issuer = await VaultClient.connect(PartyFiles.load(org1, "user1.org1"), "peer0.org1")
    holder = await VaultClient.connect(PartyFiles.load(org2, "user1.org2"), "peer0.org2")
    await issuer.issue("cash", issuer.identity_of("peer0.org2"), "JPY", 500)
    print(holdings_of(await holder.query()).get(("cash", "JPY"), 0), flush=True)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(Path(sys.argv[1]), Path(sys.argv[2])), 100))
