"""Large-ledger check (issue 18): peak RSS of every node after a catch-up of BLOCKS x TXS
transactions, and restart-to-serving of a peer and the orderer holding that ledger.

    .venv/bin/python benchmarks/big_ledger.py --blocks 10000 --txs 100 --dir /tmp/big1m
    .venv/bin/python benchmarks/big_ledger.py --blocks 100000 --txs 1 --dir /tmp/big100k

Writes the figures as JSON to DIR/result.json (and prints them). See `dltmw/bench/bigrun.py`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from dltmw.bench.bigledger import LedgerPlan
from dltmw.bench.bigrun import run_big


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, required=True)
    parser.add_argument("--txs", type=int, default=100, help="transactions per block")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--restart", default="peer0.org1,orderer0")
    parser.add_argument(
        "--resume", action="store_true", help="start DIR's network again (ledger already made)"
    )
    args = parser.parse_args()
    result = run_big(
        args.dir,
        LedgerPlan(args.blocks, args.txs),
        restart=args.restart.split(","),
        repeats=args.repeats,
        say=lambda s: print(s, flush=True),
        resume=args.resume,
    )
    result["loadavg"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    (args.dir / "result.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
