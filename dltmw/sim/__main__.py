"""Replay one seeded simulation and print its trace.

    python -m dltmw.sim --seed N [--behaviour B] [--n 4]     PBFT-lite replicas (`runner.py`)
    python -m dltmw.sim --seed N --dissemination [...]        dissemination (`dissem_runner.py`)
    python -m dltmw.sim --seed N --dissemination --crash K    ... with a world's crash points
    python -m dltmw.sim --seed N --scenario S                 a whole network (`scenarios/`)

Exit status 1 when a checker fails. The last line is the verdict; `--digest` prints only a
digest of the trace and the verdict (what the tests compare across processes).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys

from dltmw.sim.byzantine import BEHAVIOURS
from dltmw.sim.collector_byzantine import COLLECTOR_BEHAVIOURS
from dltmw.sim.dissem_byzantine import DISSEMINATION_BEHAVIOURS
from dltmw.sim.dissem_runner import CRASH_WORLDS, run_dissemination
from dltmw.sim.runner import REQUESTS, RunResult, run
from dltmw.sim.scenarios import SCENARIOS, run_scenario


def trace_digest(lines: tuple[str, ...]) -> str:
    """A short digest of a trace (equal traces, equal digests)."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    """Run one seeded simulation; exit 1 if a checker fails."""
    parser = argparse.ArgumentParser(prog="python -m dltmw.sim", description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    behaviours = sorted(BEHAVIOURS | COLLECTOR_BEHAVIOURS | DISSEMINATION_BEHAVIOURS)
    parser.add_argument("--behaviour", choices=behaviours, default="network")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--lone-every", type=int, default=0, help="every k-th request alone")
    parser.add_argument("--retain", type=int, help="decided slots kept (compaction in the run)")
    parser.add_argument("--collector", action="store_true", help="replicas use a vote collector")
    dissem = parser.add_argument_group("batch dissemination (`dissem_runner.run_dissemination`)")
    dissem.add_argument("--dissemination", action="store_true", help="replicas disseminate")
    dissem.add_argument("--uncarried", action="store_true", help="no carried batches")
    dissem.add_argument(
        "--unbounded", action="store_true", help="no slot bound (several-certificates' control)"
    )
    dissem.add_argument("--unchecked", action="store_true", help="the negative control")
    dissem.add_argument("--drained", action="store_true", help="intake drained every tick")
    dissem.add_argument("--crash", choices=sorted(CRASH_WORLDS), help="a world's crash points")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--digest", action="store_true", help="print a digest of the trace")
    parser.add_argument("--log", default="CRITICAL", help="log level of the nodes (e.g. INFO)")
    args = parser.parse_args(argv)
    if args.crash is not None and not args.dissemination:
        parser.error("--crash is a dissemination run's: add --dissemination")
    if not args.dissemination and args.behaviour not in BEHAVIOURS | COLLECTOR_BEHAVIOURS:
        parser.error(f"--behaviour {args.behaviour} is a dissemination one: add --dissemination")
    logging.basicConfig(level=args.log.upper(), format="%(levelname)s %(name)s %(message)s")
    if args.scenario is not None:
        result = run_scenario(args.scenario, args.seed, trace=True)
        lines, verdict, ok = result.trace, result.verdict(), result.ok
    else:
        pbft = _pbft(args)
        lines, verdict = pbft.trace, pbft.verdict()
        ok = not pbft.violations and pbft.live
    if args.digest:
        print(trace_digest(lines))
    else:
        for line in lines:
            print(line)
    print(verdict)
    return 0 if ok else 1


def _pbft(args: argparse.Namespace) -> RunResult:
    """The replicas' run the arguments name (what `RunResult.replay_command` prints)."""
    if args.dissemination:
        return run_dissemination(
            args.seed,
            args.behaviour,
            args.n,
            args.requests,
            trace=True,
            enforce=not args.unchecked,
            lone_every=args.lone_every,
            retain=args.retain,
            drained=args.drained,
            carried=not args.uncarried,
            slot_bound=not args.unbounded,
            crash=args.crash,
        )
    return run(
        args.seed,
        args.behaviour,
        args.n,
        args.requests,
        trace=True,
        lone_every=args.lone_every,
        retain=args.retain,
        collector=args.collector,
    )


if __name__ == "__main__":
    sys.exit(main())
