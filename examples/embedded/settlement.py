"""A settlement service that embeds a dltmw network and reacts to trade events.

Run: `python examples/embedded/settlement.py` (prints each settlement and `OK` at the end).

The exchange publishes executed trades on topic "trades"; the settlement service (in this same
process, as an embedding program would) subscribes, and for each trade submits a cash payment
from buyer to seller through the `bank` contract under the channel's AND(Org1, Org2) policy.
Its checkpoint is kept next to the network: stopped and restarted, it would carry on after the
last trade it settled. A trade the bank refuses (insufficient funds) is reported, not retried.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import dltmw

TRADES = [
    {"id": "T1", "buyer": "fundA", "seller": "brokerB", "cash": 400},
    {"id": "T2", "buyer": "fundA", "seller": "brokerB", "cash": 300},
    {"id": "T3", "buyer": "fundA", "seller": "brokerB", "cash": 900},  # fundA has 300 left
]


async def settle(net: dltmw.Network, checkpoints: dltmw.FileCheckpointer) -> list[str]:
    """Settle trades as they are published; returns one outcome per trade."""
    bank = net.client("user1.org2")
    outcomes: list[str] = []
    async with net.bus("user1.org2").subscribe("trades", "settlement", checkpoints) as trades:
        async for message in trades:
            trade = json.loads(message.payload)
            try:
                await bank.submit(
                    "main", "bank", "payment", trade["buyer"], trade["seller"], str(trade["cash"])
                )
                outcomes.append(f"{trade['id']} settled")
            except dltmw.ContractRefused as refused:
                outcomes.append(f"{trade['id']} refused: {refused.message}")
            print(outcomes[-1])
            if len(outcomes) == len(TRADES):
                return outcomes
    return outcomes


async def main() -> int:
    with tempfile.TemporaryDirectory() as home:
        async with dltmw.open(Path(home) / "net") as net:
            exchange = net.client("user1.org1")
            await exchange.submit("main", "bank", "open", "fundA", "1000")
            await exchange.submit("main", "bank", "open", "brokerB", "0")
            bus = net.bus("user1.org1")
            await bus.create_topic("trades")
            service = asyncio.ensure_future(
                settle(net, dltmw.FileCheckpointer(Path(home) / "checkpoints"))
            )
            for trade in TRADES:
                await bus.publish("trades", json.dumps(trade).encode(), {"kind": "trade"})
            outcomes = await asyncio.wait_for(service, 60)
            balances = [
                int(await exchange.evaluate("main", "bank", "balance", who))
                for who in ("fundA", "brokerB")
            ]
            print(f"balances fundA={balances[0]} brokerB={balances[1]}")
            ok = outcomes[:2] == ["T1 settled", "T2 settled"] and balances == [300, 700]
            ok = ok and outcomes[2].startswith("T3 refused: insufficient funds")
            print("OK" if ok else "MISMATCH")
            return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
