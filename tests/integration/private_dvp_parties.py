"""The parties of a private-leg DvP on the capital-market network (securities on `trading` in
clear, cash on `cash` privately among BrokerA and BrokerB), shared by
`test_private_leg_resume.py` and the process it kills (`private_dvp_driver.py`): both must
build the same terms and legs from a salt and a deadline, and use the same client identity (a
journaled private step's tx_id is its nonce's under the creator)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.private_transfer import PrivateLeg, private_terms
from dltmw.client.transfer import Leg
from dltmw.core.block import block_hash
from dltmw.core.private_leg import details_bytes
from dltmw.v1 import block_pb2

TRADING = ["peer.exchange", "peer.brokera"]
CASH = ["peer.brokera", "peer.brokerb"]  # the recipients' peers attest the private lock
RECIPIENTS = ["BrokerA", "BrokerB"]
BUYER, SELLER = "B-cash", "A-cash"
CLIENT = "trader.brokera"


def private_xfer_state(net: Path, node: str) -> dict[str, bytes]:
    """The private `xfer` keys a node's private store holds (read-only; WAL allows it)."""
    path = net / "nodes" / node / "data" / "cash.private.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, value FROM pstate WHERE namespace = 'xfer'").fetchall()
    finally:
        db.close()
    return {str(k): bytes(v) for k, v in rows}


@dataclass
class Parties:
    """BrokerA's trader, connected to the peers both legs need."""

    net: Path
    conns: dict[str, GatewayClient]
    privacy: PrivacyClient
    trading_genesis: bytes

    @classmethod
    async def connect(cls, net: Path) -> Parties:
        conns = {n: await GatewayClient.connect(net, CLIENT, n) for n in {*TRADING, *CASH}}
        genesis = (net / "channels" / "trading.block").read_bytes()
        return cls(net, conns, PrivacyClient(conns["peer.brokera"]), genesis)

    @property
    def trader(self) -> GatewayClient:
        return self.conns["peer.brokera"]

    @property
    def public(self) -> Leg:
        return Leg("trading", self.trader, [(n, self.conns[n].channel) for n in TRADING])

    def dvp(self, salt: str, deadline: int) -> tuple[bytes, PrivateLeg]:
        """The terms of DvP `salt` (10 A-sec -> B-sec against 500 B-cash -> A-cash) and its
        private leg."""
        details = details_bytes(BUYER, SELLER, 500, salt)
        leg = PrivateLeg(
            "cash", self.privacy, ["BrokerB"], [(n, self.conns[n].channel) for n in CASH], details
        )
        trust = block_hash(block_pb2.Block.FromString(self.trading_genesis))
        public = ("trading", "A-sec", "B-sec", 10)
        return private_terms(public, "cash", details, RECIPIENTS, trust, deadline, salt), leg

    async def close(self) -> None:
        await self.privacy.close()
        for c in self.conns.values():
            await c.close()
