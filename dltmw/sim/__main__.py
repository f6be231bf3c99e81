"""`python -m dltmw.sim --seed N [--behaviour B] [--n 4]`: replay one run, print its trace."""

from __future__ import annotations

import argparse
import sys

from dltmw.sim.byzantine import BEHAVIOURS
from dltmw.sim.runner import run


def main(argv: list[str] | None = None) -> int:
    """Run one seeded simulation; exit 1 if a checker fails."""
    parser = argparse.ArgumentParser(prog="python -m dltmw.sim", description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--behaviour", choices=sorted(BEHAVIOURS), default="network")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--requests", type=int, default=24)
    args = parser.parse_args(argv)
    result = run(args.seed, args.behaviour, args.n, args.requests, trace=True)
    for line in result.trace:
        print(line)
    print(result.verdict())
    return 0 if not result.violations and result.live else 1


if __name__ == "__main__":
    sys.exit(main())
