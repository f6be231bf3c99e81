"""`python -m benchmarks.utxo_verify_budget`: how long an installed UTXO verify that never returns
runs before the deterministic step budget (`core/metering.STEP_BUDGET`) stops it — the package
loaded as a vault or notary loads it (`contract_sdk/loader.py`, `utxo_runner.MeteredVerify`).
Compare with the node's wall-clock backstop (`limits.contract_wall_s`, 2 s by default): when
this is near it, the backstop (not deterministic) may stop a runaway verify first on a loaded
machine. Process CPU time and wall time, `--runs` times (not a test).
"""

from __future__ import annotations

import argparse
import statistics
import time

from dltmw.contract_sdk.loader import load_package
from dltmw.core.contract_package import Manifest, write_package
from dltmw.core.errors import ClientError

SPIN = "def verify(tx):\n    n = 0\n    while True:\n        n += 1\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    data = write_package(Manifest("spin", "1.0", "spin:verify", kind="utxo"), {"spin.py": SPIN})
    verify = load_package(data).verify
    if verify is None:
        raise SystemExit("not a UTXO package")
    cpu, wall = [], []
    for _ in range(runs):
        c, w = time.process_time(), time.perf_counter()
        try:
            verify(None)  # type: ignore[arg-type]  # the loop never looks at its argument
        except ClientError as exc:
            if exc.metadata.get("limit") != "steps":
                raise
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    for name, xs in (("cpu", cpu), ("wall", wall)):
        print(
            f"{name} s: median {statistics.median(xs):.2f} (min {min(xs):.2f}, max {max(xs):.2f})"
        )


if __name__ == "__main__":
    main()
