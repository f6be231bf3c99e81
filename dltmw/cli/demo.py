"""`dltmw demo` / `make demo`: the main job, end to end on real processes.

1. `dltmw init` of services/networks/capital-market.toml into a temporary directory (an exchange,
   two brokers, a bank; channels `trading` and `cash`; one solo orderer), then every node started
   as its own process on 127.0.0.1 with mutual TLS and sqlite ledgers.
2. The JPX paper's Figure 8 on `trading`: accounts A, B, C open at 10000; deposit 5000 to A,
   withdraw 2000 from B, pay 3000 from A to C — endorsed against the same state, ordered into one
   block — and the report shows VALID, VALID, MVCC_READ_CONFLICT and balances 15000/8000/10000.
3. A short bank workload on `cash` (random payments between 20 accounts, 16 in flight): committed
   tx/s, the abort rate, latency percentiles, and the check that money was neither created nor lost.
4. A private trade on `trading` between BrokerA and BrokerB (`demo_private.py`): the Exchange,
   the third member, orders and stores only its payload hash.
5. Notarised UTXO (`demo_utxo.py`): a DvP between the two brokers, observed by a regulator and
   invisible to everyone else, then a double-spend attempt that the notary refuses.
6. The contract lifecycle (`demo_lifecycle.py`): a user-written contract (examples/contracts/
   assets) installed, approved by each member of `trading`, committed and invoked.
7. Clean stop of every node, then a closing summary: one line per flow, PASS or FAIL, and
   where the nodes' logs were kept (the network directory is deleted unless `--keep` names one).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dltmw.cli.demo_lifecycle import deploy_contract
from dltmw.cli.demo_private import private_trade
from dltmw.cli.demo_utxo import utxo_trade
from dltmw.client import GatewayClient
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.v1 import transaction_pb2
from dltmw.v1.gateway_service_pb2 import EventsResponse

TOPOLOGY = Path(__file__).resolve().parents[2] / "services" / "networks" / "capital-market.toml"
CODE = transaction_pb2.TxValidationCode.Name
ACCOUNTS = 20
PAYMENTS = 300
IN_FLIGHT = 16


async def figure8(console: Console, client: GatewayClient) -> bool:
    """Figure 8 of the paper; returns True if it came out exactly."""
    await asyncio.gather(
        *(client.submit_transaction("trading", "bank", "open", a, "10000") for a in "ABC")
    )
    steps = [
        ("deposit", ["A", "5000"]),
        ("withdraw", ["B", "2000"]),
        ("payment", ["A", "C", "3000"]),
    ]
    proposals = [client.proposal("trading", "bank", fn, args) for fn, args in steps]
    endorsed = [await client.endorse(signed) for signed, _ in proposals]  # same state for all
    for e in endorsed:
        await client.submit(client.envelope(e.prepared_payload))
    statuses = [await client.commit_status("trading", tx_id) for _, tx_id in proposals]
    table = Table(title="Figure 8 on channel `trading` (endorsed on one state, one block)")
    for col in ("tx", "invocation", "block", "index", "validation code"):
        table.add_column(col)
    for i, ((fn, args), st) in enumerate(zip(steps, statuses, strict=True), 1):
        table.add_row(
            f"tx{i}",
            f"{fn}({', '.join(args)})",
            str(st.block_number),
            str(st.tx_index),
            CODE(st.result),
        )
    console.print(table)
    balances = {
        a: int((await client.evaluate("trading", "bank", "balance", a)).payload) for a in "ABC"
    }
    console.print(f"balances: {balances}")
    want_codes = ["TX_VALIDATION_CODE_VALID"] * 2 + ["TX_VALIDATION_CODE_MVCC_READ_CONFLICT"]
    ok = (
        [CODE(s.result) for s in statuses] == want_codes
        and len({s.block_number for s in statuses}) == 1
        and balances == {"A": 15000, "B": 8000, "C": 10000}
    )
    console.print("[green]Figure 8 reproduced exactly[/]" if ok else "[red]Figure 8 differs[/]")
    return ok


async def workload(console: Console, client: GatewayClient) -> bool:
    """Random payments on `cash`; returns True if money is conserved."""
    names = [f"acct{i:02d}" for i in range(ACCOUNTS)]
    await asyncio.gather(
        *(client.submit_transaction("cash", "bank", "open", n, "1000") for n in names)
    )
    rng = random.Random(8)
    jobs = [
        (rng.choice(names), rng.choice(names), str(rng.randint(1, 300))) for _ in range(PAYMENTS)
    ]
    codes: dict[str, int] = {}
    latencies: list[float] = []
    refused = 0
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def pay(src: str, dst: str, amount: str) -> None:
        nonlocal refused
        if src == dst:
            return
        async with sem:
            t0 = time.perf_counter()
            try:
                done = await client.submit_transaction("cash", "bank", "payment", src, dst, amount)
            except Exception:  # overdraft refused at endorsement (ABORTED): counted, not fatal
                refused += 1
                return
            latencies.append(time.perf_counter() - t0)
            name = CODE(done.status.result).removeprefix("TX_VALIDATION_CODE_")
            codes[name] = codes.get(name, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(pay(*j) for j in jobs))
    elapsed = time.perf_counter() - t0
    total = sum([int((await client.evaluate("cash", "bank", "balance", n)).payload) for n in names])
    valid = codes.get("VALID", 0)
    committed = sum(codes.values())
    table = Table(title=f"Bank workload on `cash`: {PAYMENTS} payments, {IN_FLIGHT} in flight")
    for col in (
        "committed",
        "valid",
        "MVCC conflicts",
        "refused (overdraft)",
        "valid tx/s",
        "p50 ms",
        "p99 ms",
    ):
        table.add_column(col)
    lat = sorted(latencies) or [0.0]
    table.add_row(
        str(committed),
        str(valid),
        str(codes.get("MVCC_READ_CONFLICT", 0)),
        str(refused),
        f"{valid / elapsed:.0f}",
        f"{statistics.median(lat) * 1000:.0f}",
        f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000:.0f}",
    )
    console.print(table)
    ok = total == ACCOUNTS * 1000
    console.print(
        f"total money {total} (expected {ACCOUNTS * 1000}): "
        + ("[green]conserved[/]" if ok else "[red]NOT conserved[/]")
    )
    return ok


async def blocks_report(console: Console, client: GatewayClient, channel: str) -> None:
    """One row per committed block of `channel`."""
    table = Table(title=f"Blocks of `{channel}` on {channel}'s gateway peer")
    for col in ("block", "txs", "validation codes"):
        table.add_column(col)
    async for block in _until_idle(client, channel):
        counts: dict[str, int] = {}
        for tx in block.transactions:
            name = CODE(tx.validation_code).removeprefix("TX_VALIDATION_CODE_")
            counts[name] = counts.get(name, 0) + 1
        table.add_row(
            str(block.block_number),
            str(len(block.transactions)),
            ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        )
    console.print(table)


async def _until_idle(client: GatewayClient, channel: str) -> AsyncIterator[EventsResponse]:
    """Committed blocks until none arrives for a second (the channel is idle)."""
    stream = client.events(channel, 0).__aiter__()
    while True:
        try:
            yield await asyncio.wait_for(stream.__anext__(), 1.0)
        except (TimeoutError, StopAsyncIteration):
            return


FLOWS = {
    "figure8": "Figure 8 on `trading`: VALID, VALID, MVCC_READ_CONFLICT; 15000/8000/10000",
    "workload": "bank workload on `cash`: money conserved",
    "private": "private trade: the Exchange holds only the payload hash",
    "utxo": "notarised DvP seen by its parties and observer only; double spend refused",
    "lifecycle": "a user contract installed, approved by each member, committed, invoked",
    "shutdown": "every node stopped cleanly",
}


async def _flow(console: Console, name: str, run: Awaitable[bool]) -> bool:
    """One flow; an exception fails it (and is shown) without stopping the others."""
    try:
        return await run
    except Exception as exc:  # the summary says which flow broke, and how
        console.print(f"[red]{name} failed:[/] {type(exc).__name__}: {exc}")
        return False


async def scenario(console: Console, network: Path) -> dict[str, bool]:
    """Figure 8 + workload + private trade + UTXO + block report; pass/fail per flow."""
    broker = await GatewayClient.connect(network, "trader.brokera")
    bank = await GatewayClient.connect(network, "treasury.bank")
    try:
        results = {
            "figure8": await _flow(console, "figure8", figure8(console, broker)),
            "workload": await _flow(console, "workload", workload(console, bank)),
            "private": await _flow(console, "private", private_trade(console, network)),
            "utxo": await _flow(console, "utxo", utxo_trade(console, network)),
            "lifecycle": await _flow(console, "lifecycle", deploy_contract(console, network)),
        }
        await blocks_report(console, broker, "trading")
        return results
    finally:
        await broker.close()
        await bank.close()


def summary(console: Console, results: dict[str, bool]) -> None:
    """The closing summary: one line per flow, `PASS name  what` or `FAIL name  what`."""
    console.print("[bold]summary[/]")
    for name, what in FLOWS.items():
        ok = results.get(name, False)
        mark = "[green]PASS[/]" if ok else "[red]FAIL[/]"
        console.print(f"{mark} {name:9} {what}", highlight=False, soft_wrap=True)


def _keep_logs(network: Path) -> Path:
    """Copy the nodes' logs out of a network that is about to be deleted."""
    kept = Path(tempfile.mkdtemp(prefix="dltmw-demo-logs-"))
    shutil.copytree(network / "run" / "logs", kept, dirs_exist_ok=True)
    return kept


def run_demo(console: Console, keep: Path | None) -> int:
    """Run everything; returns the process exit code (0 only if every flow passed)."""
    with tempfile.TemporaryDirectory(prefix="dltmw-demo-") as tmp:
        network = keep or Path(tmp) / "network"
        init_network(TOPOLOGY, network)
        console.print(f"[bold]dltmw demo[/] — network {TOPOLOGY.name} in {network}")
        sup = Supervisor(network)
        results: dict[str, bool] = {}
        try:
            for node_id, address in sup.up().items():
                console.print(f"  {node_id:20} {address}")
            results = asyncio.run(scenario(console, network))
        finally:
            codes = {n: sup.stop(n) for n in list(sup.nodes)}
            console.print(f"stopped: {codes}")
            logs = network / "run" / "logs" if keep else _keep_logs(network)
        results["shutdown"] = all(c == 0 for c in codes.values())
        summary(console, results)
        console.print(f"logs: {logs}", highlight=False, soft_wrap=True)
        return 0 if all(results.get(name, False) for name in FLOWS) else 1
