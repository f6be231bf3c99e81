"""`python -m benchmarks.private`: private-payload throughput (not a test).

Two measurements, each with 2 and with 10 recipients (the sender's node is a recipient on top):

1. seal (in process, one thread): encrypt a payload once with a fresh AES-256-GCM key and wrap the
   key per recipient (X25519 + HKDF kek, cached per pair, + AES-GCM) — the CPU floor of Send;
2. Send path on a real network: one sender node and 10 recipient nodes as separate processes on
   127.0.0.1 with mutual TLS and sqlite (synchronous=FULL). `--in-flight` client workers call
   Send on the sender node's privacy manager; each Send returns only after the payload is stored
   at the sender AND acknowledged (durably stored) by every recipient's privacy manager — the
   node batches concurrent Sends into one sqlite transaction and one signed PushBatch per
   recipient on that recipient's Push stream; measured with one Send per payload, and with
   SendBatch (many payloads per signed call, each still sealed with its own fresh key), and with
   one SDK call per payload that the SDK coalesces into SendBatch calls (`send_coalesced`);
3. end to end (smaller): Send + order the hash + wait for the commit status, closed loop.
   On a channel with agreement before commit (the default; `--agreement none` for the old path)
   this includes collecting every recipient's signed agreement (docs/privacy.md).
   `--e2e-only` runs only this, with 2 recipients on a 3-peer network (the agreement's cost).

Prints the machine, the command and the figures; the lead records them in RESULTS.md.
Part 3 is the harness workload `dltmw bench --workload private` (same report as every flow);
this script stays for parts 1 and 2 (seal alone; Send, SendBatch and send_coalesced), which
the harness does not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cryptography
import grpc

from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.core.privacy.envelope import PrivacyKey, seal
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.rpc.status import reason_of

RECIPIENTS_MAX = 10
VALID = 1  # TX_VALIDATION_CODE_VALID
CHANNEL = "bench"


def topology(recipients: int, agreement: str = "all-recipients") -> str:
    orgs = [f"Org{i}" for i in range(recipients + 1)]
    out = ['name = "private-bench"', '[[orgs]]\nid = "OrdererOrg"']
    out += [f'[[orgs]]\nid = "{o}"' for o in orgs]
    out.append('[[nodes]]\nid = "orderer0"\norg = "OrdererOrg"\nroles = ["orderer"]')
    for i, o in enumerate(orgs):
        roles = '["peer", "gateway"]' if i == 0 else '["peer"]'
        out.append(f'[[nodes]]\nid = "peer.{o.lower()}"\norg = "{o}"\nroles = {roles}')
    out.append('[[clients]]\nid = "user.org0"\norg = "Org0"')
    members = ", ".join(f'"{o}"' for o in orgs)
    out.append(
        f'[[channels]]\nid = "{CHANNEL}"\nmembers = [{members}]\norderers = ["orderer0"]\n'
        'endorsement_policy = "Org0.peer"\ncontracts = [{ name = "kv" }]\n'
        "batch = { max_tx_count = 500, max_bytes = 4194304, timeout_ms = 100 }\n"
        f'private_agreement = "{agreement}"'
    )
    return "\n".join(out) + "\n"


def bench_seal(recipients: int, seconds: float, payload_bytes: int) -> float:
    sender = PrivacyKey(os.urandom(32))
    keys = [PrivacyKey(os.urandom(32)).public_key for _ in range(recipients)]
    plaintext = os.urandom(payload_bytes)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        seal(
            plaintext,
            sender,
            keys,
            os.urandom(32),
            os.urandom(12),
            [os.urandom(12) for _ in range(recipients + 1)],
        )
        n += 1
    return n / (time.perf_counter() - t0)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def send_phase(
    pc: PrivacyClient, orgs: list[str], count: int, in_flight: int, payload_bytes: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    todo = iter(range(count))

    async def worker() -> None:
        for _ in todo:
            t = time.perf_counter()
            await pc.send(CHANNEL, os.urandom(payload_bytes), orgs)
            latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return count / (time.perf_counter() - t0), latencies


async def batch_phase(
    pc: PrivacyClient, orgs: list[str], count: int, in_flight: int, batch: int, size: int
) -> float:
    calls = iter(range(count // batch))

    async def worker() -> None:
        for _ in calls:
            hashes = await pc.send_batch(CHANNEL, [(os.urandom(size), orgs)] * batch)
            if len(hashes) != batch:
                raise RuntimeError("short SendBatch reply")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return (count // batch) * batch / (time.perf_counter() - t0)


async def coalesced_phase(
    pc: PrivacyClient, orgs: list[str], count: int, in_flight: int, size: int
) -> float:
    todo = iter(range(count))

    async def worker() -> None:
        for _ in todo:
            await pc.send_coalesced(CHANNEL, os.urandom(size), orgs)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return count / (time.perf_counter() - t0)


async def e2e_phase(
    pc: PrivacyClient, orgs: list[str], count: int, in_flight: int
) -> tuple[float, dict[str, int]]:
    """Committed-VALID private tx/s, and the failures by kind (they are not retried)."""
    todo = iter(range(count))
    failures: dict[str, int] = {}
    valid = 0

    async def worker() -> None:
        nonlocal valid
        for i in todo:
            try:
                done = await pc.submit_private(CHANNEL, orgs, "kv", "put", f"k{i}", os.urandom(64))
            except grpc.aio.AioRpcError as exc:
                kind = reason_of(exc) or exc.code().name
                failures[kind] = failures.get(kind, 0) + 1
                continue
            if done.status.result == VALID:
                valid += 1
            else:
                kind = f"code {done.status.result}"
                failures[kind] = failures.get(kind, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return valid / (time.perf_counter() - t0), failures


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


class CpuMeter:
    """CPU ms per transaction of the sender node, the busiest recipient and this client."""

    def __init__(self, sup: Supervisor) -> None:
        self.pids = {n: p.process.pid for n, p in sup.nodes.items()}
        self.nodes = {n: cpu_s(p) for n, p in self.pids.items()}
        self.client = time.process_time()

    def report(self, txs: int) -> str:
        node = {n: (cpu_s(p) - self.nodes[n]) * 1000 / txs for n, p in self.pids.items()}
        recipient = max(v for n, v in node.items() if n not in ("peer.org0", "orderer0"))
        client = (time.process_time() - self.client) * 1000 / txs
        return (
            f"CPU ms/tx: sender node {node['peer.org0']:.3f}, busiest recipient "
            f"{recipient:.3f}, client {client:.3f}"
        )


async def e2e_only(net: Path, sup: Supervisor, args: argparse.Namespace) -> None:
    """The end-to-end phase alone, 2 recipients, with the sender node's CPU per transaction."""
    pc = PrivacyClient(await GatewayClient.connect(net, "user.org0"))
    try:
        orgs = ["Org1", "Org2"]
        await e2e_phase(pc, orgs, 50, args.in_flight)  # warm up
        meter = CpuMeter(sup)
        e2e, failures = await e2e_phase(pc, orgs, args.e2e, args.in_flight)
        print(
            f"end to end (agreement {args.agreement}), 2 recipients: {e2e:7.0f} tx/s"
            f"  failures: {failures or 'none'}  {meter.report(args.e2e)}"
        )
    finally:
        await pc.close()


async def network_runs(net: Path, sup: Supervisor, args: argparse.Namespace) -> None:
    if args.e2e_only:
        await e2e_only(net, sup, args)
        return
    pc = PrivacyClient(await GatewayClient.connect(net, "user.org0"))
    try:
        for recipients in (2, RECIPIENTS_MAX):
            orgs = [f"Org{i}" for i in range(1, recipients + 1)]
            size = args.payload_bytes
            await send_phase(pc, orgs, 200, args.in_flight, size)  # warm up
            meter = CpuMeter(sup)
            rate, lat = await send_phase(pc, orgs, args.sends, args.in_flight, size)
            print(
                f"Send, one call per payload, {recipients:2d} recipients (+ sender): "
                f"{rate:7.0f} tx/s  p50 {statistics.median(lat) * 1000:.1f} ms"
                f"  p99 {pct(lat, 0.99):.1f} ms  {meter.report(args.sends)}"
            )
            meter = CpuMeter(sup)
            batched = await batch_phase(pc, orgs, args.sends * 4, 8, args.batch, size)
            print(
                f"SendBatch ({args.batch} per call, 8 calls in flight), {recipients:2d} "
                f"recipients: {batched:7.0f} tx/s  {meter.report(args.sends * 4)}"
            )
            meter = CpuMeter(sup)
            coalesced = await coalesced_phase(pc, orgs, args.sends * 2, args.in_flight, size)
            print(
                f"send_coalesced (SDK gathers calls into SendBatch, {args.in_flight} in flight),"
                f" {recipients:2d} recipients: {coalesced:7.0f} tx/s  "
                f"{meter.report(args.sends * 2)}"
            )
            e2e, failures = await e2e_phase(pc, orgs, args.e2e, args.in_flight)
            print(
                f"end to end (send + order + commit VALID), {recipients:2d} recipients: "
                f"{e2e:7.0f} tx/s  failures: {failures or 'none'}"
            )
    finally:
        await pc.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.private")
    parser.add_argument("--sends", type=int, default=5000)
    parser.add_argument("--e2e", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=128)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seal-seconds", type=float, default=2.0)
    parser.add_argument("--agreement", choices=["all-recipients", "none"], default="all-recipients")
    parser.add_argument("--e2e-only", action="store_true")
    args = parser.parse_args()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"machine: {os.cpu_count()} cores, {model}; Python {platform.python_version()}; "
        f"cryptography {cryptography.__version__}; "
        + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    )
    print("command: python -m benchmarks.private " + " ".join(sys.argv[1:]))
    for recipients in () if args.e2e_only else (2, RECIPIENTS_MAX):
        rate = bench_seal(recipients, args.seal_seconds, args.payload_bytes)
        print(
            f"seal only (1 thread), {recipients:2d} recipients (+ sender): {rate:8.0f} payloads/s"
        )
    with tempfile.TemporaryDirectory(prefix="dltmw-private-bench-") as tmp:
        topo = Path(tmp) / "topology.toml"
        topo.write_text(topology(2 if args.e2e_only else RECIPIENTS_MAX, args.agreement))
        init_network(topo, Path(tmp) / "net")
        sup = Supervisor(Path(tmp) / "net")
        try:
            sup.up(timeout_s=120)
            asyncio.run(network_runs(Path(tmp) / "net", sup, args))
        finally:
            codes = {n: sup.stop(n) for n in list(sup.nodes)}
            if any(c != 0 for c in codes.values()):
                print(f"unclean stop: {codes}")


if __name__ == "__main__":
    main()
