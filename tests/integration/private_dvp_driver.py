"""A coordinating process of one private-leg DvP, to be killed -9 at a chosen point
(tests/integration/test_private_leg_resume.py).

    python -m tests.integration.private_dvp_driver NET JOURNAL SALT DEADLINE --stop-at POINT
        [--no-public-lock]

It runs `run_private_transfer` with the journal at JOURNAL for the DvP of `parties(SALT,
DEADLINE)` and, at POINT, prints STOPPED and blocks (the test kills it there):
- `locked`: both legs locked, before any claim (the first `_public_settle`);
- `pclaim` / `prefund`: right after that private step's attempt was journaled, before its
  envelope is submitted (the public claim or abort has committed).
`--no-public-lock` makes this run never lock the public leg (as if its lock was lost), so the
DvP runs out its deadline and unwinds.
The hooks are here, in the test's driver, not in the client: they only choose where it dies.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import sys
import time
from pathlib import Path
from typing import Any

from dltmw.client import private_transfer
from dltmw.client.step_journal import Attempt, StepJournal
from tests.integration.private_dvp_parties import Parties


def _stop() -> None:
    print("STOPPED", flush=True)
    time.sleep(600)  # blocks the loop: nothing more happens until the kill
    sys.exit(3)


async def drive(args: argparse.Namespace) -> None:
    if args.stop_at == "locked":

        async def settle_stops(*_: Any) -> None:
            _stop()

        private_transfer._public_settle = settle_stops  # type: ignore[assignment]
    if args.no_public_lock:
        public_step = private_transfer._public

        async def no_lock(leg: Any, function: str, *rest: Any) -> str | None:
            return None if function == "lock" else await public_step(leg, function, *rest)

        private_transfer._public = no_lock  # type: ignore[assignment]

    class StoppingJournal(StepJournal):
        def write(self, transfer_id: str, attempt: Attempt) -> None:
            super().write(transfer_id, attempt)
            if attempt.step == args.stop_at:
                _stop()

    parties = await Parties.connect(args.net)
    try:
        terms, leg = parties.dvp(args.salt, args.deadline)
        journal = StoppingJournal(args.journal)
        await private_transfer.run_private_transfer(
            parties.public,
            leg,
            terms,
            parties.trading_genesis,
            args.deadline,
            wait_max_s=60,
            journal=journal,
        )
    finally:
        await parties.close()
    print("FINISHED", flush=True)


def main() -> None:
    faulthandler.enable()
    parser = argparse.ArgumentParser()
    parser.add_argument("net", type=Path)
    parser.add_argument("journal", type=Path)
    parser.add_argument("salt")
    parser.add_argument("deadline", type=int)
    parser.add_argument("--stop-at", choices=["locked", "pclaim", "prefund"], required=True)
    parser.add_argument("--no-public-lock", action="store_true")
    asyncio.run(drive(parser.parse_args()))


if __name__ == "__main__":
    main()
