"""A client in another language, written from `protos/` only, runs Figure 8 through the gateway.

`examples/node` (TypeScript: stubs generated from protos/ by buf + ts-proto at build time,
@grpc/grpc-js, Node's crypto for P-256 low-S signatures, mutual TLS) is built by
`make node-example` (npm ci from the pinned lockfile, then tsc; `make test` does it first). Here
it runs against a fresh two-org network; the test checks its printed outcome — VALID, VALID,
MVCC_READ_CONFLICT in one block, balances 15000/8000/10000 — and that the ledger agrees: the
Python SDK reads the same validation code, block and index for each printed tx id, and the same
balances.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.v1 import transaction_pb2

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
SCRIPT = EXAMPLE / "dist" / "figure8.js"
LINE = re.compile(r"^tx(\d) ([0-9a-f]{64}) (\w+)\(.*\) block (\d+) index (\d+) (\w+)$")
WANT = ["TX_VALIDATION_CODE_VALID"] * 2 + ["TX_VALIDATION_CODE_MVCC_READ_CONFLICT"]


async def test_node_example_reproduces_figure8_and_the_ledger_agrees(network) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed (the CI machine has it)"
    assert SCRIPT.exists(), f"{SCRIPT} is missing: run `make node-example` first"
    # The example submits the three one by one; one block needs the orderer to cut by the limits
    # only (the 100 ms timeout gathers them), not as soon as it has nothing queued (the default).
    net, _ = network(by_limits_only=True)
    run = await asyncio.to_thread(
        subprocess.run,
        [node, str(SCRIPT), str(net), "user1.org1", "trades"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, f"example failed:\n{run.stdout}\n{run.stderr}"
    lines = run.stdout.splitlines()
    assert lines[-1] == "FIGURE8 OK", run.stdout
    assert "balances A=15000 B=8000 C=10000" in lines, run.stdout
    printed = [m.groups() for m in map(LINE.match, lines) if m]
    assert [p[5] for p in printed] == WANT, run.stdout
    assert len({p[3] for p in printed}) == 1, "the three transactions share one block"
    async with await GatewayClient.connect(net, "user1.org2") as client:  # the other org's peer
        for _, tx_id, _, block, index, code in printed:
            status = await client.commit_status("trades", tx_id)
            assert transaction_pb2.TxValidationCode.Name(status.result) == code
            assert (status.block_number, status.tx_index) == (int(block), int(index))
        balances = {
            a: int((await client.evaluate("trades", "bank", "balance", a)).payload) for a in "ABC"
        }
    assert balances == {"A": 15000, "B": 8000, "C": 10000}
