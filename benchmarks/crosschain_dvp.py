"""`python -m benchmarks.crosschain_dvp`: cross-channel DvPs against single-channel payments.

The capital-market network (services/networks/capital-market.toml: one solo orderer, `trading`
and `cash`, seven node processes on 127.0.0.1, mutual TLS, sqlite synchronous=FULL). Closed
loop, `--in-flight` workers, each with its own accounts (no MVCC conflict between workers):

1. single-channel payments: `bank.payment` on `cash` (endorsed by Bank's peer), then on
   `trading` (Exchange's peer and a broker's, limit-cut blocks: 150 ms timeout), through
   BrokerB's gateway;
2. DvPs: `client/transfer.run_transfer` (lock on both channels, fetch both lock proofs from
   two peers each, claim on both) through BrokerA's gateway.

Reports payments/s, DvPs/s and their ratio (issue 19's goal: DvPs/s >= 25 % of payments/s), the
load average and the core count: the lead records them in RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from dltmw.client import GatewayClient
from dltmw.client.transfer import Leg, dvp_terms, run_transfer
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network

TOPOLOGY = Path(__file__).resolve().parents[1] / "services" / "networks" / "capital-market.toml"
PEERS = {"trading": ["peer.exchange", "peer.brokera"], "cash": ["peer.bank", "peer.brokerb"]}
FAR = 2_000_000_000  # a deadline that does not pass during the run


async def _setup(net: Path, workers: int, per_worker: int) -> None:
    genesis = {c: (net / "channels" / f"{c}.block").read_bytes() for c in PEERS}
    async with await GatewayClient.connect(net, "admin.brokera", "peer.brokera") as admin:
        for here, other in (("trading", "cash"), ("cash", "trading")):
            await admin.submit_transaction(here, "xfer", "trust", genesis[other])
        opens = []
        for w in range(workers):
            for ch, acct in (("trading", "A-sec"), ("trading", "B-sec")):
                opens.append((ch, "xfer", f"{acct}-{w}", str(per_worker)))
            for acct in ("B-cash", "A-cash"):
                opens.append(("cash", "xfer", f"{acct}-{w}", str(per_worker * 100)))
                opens.append(("cash", "bank", f"{acct}-{w}", str(per_worker * 100)))
                opens.append(("trading", "bank", f"{acct}-{w}", str(per_worker * 100)))
        await asyncio.gather(
            *(admin.submit_transaction(ch, c, "open", a, v) for ch, c, a, v in opens)
        )


async def _payments(net: Path, channel: str, workers: int, each: int) -> float:
    async with await GatewayClient.connect(net, "trader.brokerb", "peer.brokerb") as c:

        async def worker(w: int) -> None:
            for _ in range(each):
                await c.submit_transaction(
                    channel, "bank", "payment", f"B-cash-{w}", f"A-cash-{w}", "1"
                )

        start = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(workers)))
        return workers * each / (time.monotonic() - start)


async def _dvps(net: Path, workers: int, each: int) -> float:
    conns = {
        n: await GatewayClient.connect(net, "trader.brokera", n)
        for ns in PEERS.values()
        for n in ns
    }
    trader = conns["peer.brokera"]
    a, b = (Leg(c, trader, [(n, conns[n].channel) for n in PEERS[c]]) for c in PEERS)
    try:

        async def worker(w: int) -> None:
            for i in range(each):
                legs = {
                    "trading": (f"A-sec-{w}", f"B-sec-{w}", 1),
                    "cash": (f"B-cash-{w}", f"A-cash-{w}", 10),
                }
                done = await run_transfer(a, b, dvp_terms(legs, FAR, f"{w}-{i}"), FAR)
                assert done.outcome == "claimed", done

        start = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(workers)))
        return workers * each / (time.monotonic() - start)
    finally:
        for c in conns.values():
            await c.close()


async def _all(net: Path, workers: int, payments: int, dvps: int) -> tuple[float, float, float]:
    """Every phase in one event loop (grpc channels must close on the loop that made them)."""
    await _setup(net, workers, dvps + 1)
    pay = await _payments(net, "cash", workers, payments)
    pay_trading = await _payments(net, "trading", workers, payments)
    return pay, pay_trading, await _dvps(net, workers, dvps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--payments", type=int, default=20, help="per worker")
    parser.add_argument("--dvps", type=int, default=5, help="per worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        net = Path(tmp) / "net"
        init_network(TOPOLOGY, net)
        sup = Supervisor(net)
        sup.up(timeout_s=120)
        try:
            pay, pay_trading, dvp = asyncio.run(_all(net, args.in_flight, args.payments, args.dvps))
        finally:
            sup.stop_all()
    print(f"command: {' '.join(sys.argv)}")
    print(f"cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"payments/s on cash (bank.payment, 1 endorser):      {pay:.1f}")
    print(f"payments/s on trading (bank.payment, 2 endorsers):  {pay_trading:.1f}")
    print(
        f"DvPs/s (xfer: 4 transactions, 4 proofs):            {dvp:.1f}  "
        f"({100 * dvp / pay:.0f} % of cash payments/s, "
        f"{100 * dvp / pay_trading:.0f} % of trading's)"
    )


if __name__ == "__main__":
    main()
