"""`python -m benchmarks.sim_path_cpu [N] [--profile]`: the CPU a lone transaction's path costs
without gRPC, TLS or threads (not a test).

The simulator (`dltmw/sim`) runs the production node code on one virtual-time loop with an
in-memory transport and inline stores, so the process CPU per transaction it measures is the
cost of the code path itself, before any transport: a floor for the in-process bus latency
(issue 14) and for a lone transaction's CPU (issue 13). `N` transactions (`bank open`, default
100) are submitted one at a time on the `eov` solo topology (two organisations, AND policy, a
solo orderer). `--profile` prints the top functions of a CPU-time cProfile of the same run.
"""

from __future__ import annotations

import cProfile
import logging
import platform
import pstats
import sys
import time

from dltmw.sim import vloop
from dltmw.sim.deployment import Deployment
from dltmw.sim.scenarios.eov import CHANNEL, topology

WARMUP = 5


def main(argv: list[str]) -> None:
    count = int(next((a for a in argv if a.isdigit()), "100"))
    profile = "--profile" in argv
    logging.getLogger("dltmw").setLevel(logging.CRITICAL)
    prof = cProfile.Profile(time.process_time)
    out: dict[str, float] = {}

    async def run() -> None:
        dep = Deployment(topology("solo"))
        await dep.start()
        client = dep.gateway_client("user1.org1")
        for i in range(WARMUP):
            await client.submit_transaction(CHANNEL, "bank", "open", f"W{i}", "10")
        if profile:
            prof.enable()
        started = time.process_time()
        for i in range(count):
            await client.submit_transaction(CHANNEL, "bank", "open", f"A{i}", "10")
        out["cpu_ms_per_tx"] = (time.process_time() - started) * 1000 / count
        if profile:
            prof.disable()
        await dep.stop()
        dep.remove()

    vloop.run(1, run)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}")
    print(f"command: python -m benchmarks.sim_path_cpu {' '.join(argv)}")
    print(f"process CPU per lone transaction: {out['cpu_ms_per_tx']:.2f} ms ({count} transactions)")
    if profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main(sys.argv[1:])
