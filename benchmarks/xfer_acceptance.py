"""`python -m benchmarks.xfer_acceptance`: issue 19's acceptance run on real processes.

    python -m benchmarks.xfer_acceptance [--count 1000] [--in-flight 32] [--kills 4]
        [--orderer-kills 2] [--seed 1] [--flow channel|private]

The capital-market network (services/networks/capital-market.toml; `trading`: Exchange and both
brokers, `cash`: Bank and both brokers, one solo orderer for both) on 127.0.0.1:
1. each channel's config is updated to trust the other's block 0 (ChannelConfig.trusted_channels,
   signed by a majority of its admins), then a trader, not an admin, starts the light clients
   (`xfer.trust`): the trust root comes from the config, through the real endorser; a block 0
   the config does not name is refused with TRUST_ROOT_MISMATCH;
2. accounts per slot, and canary values written on `trading` by `kv` (never part of a proof);
3. `--count` DvPs between the brokers by a coordinator process (`benchmarks/xfer_coordinator.py`),
   kill -9'd `--kills` times at random moments, each time replaced by a new one that resumes
   from its terms journal and the ledger; meanwhile the orderer is kill -9'd `--orderer-kills`
   times at random moments and restarted;
4. checks, on EVERY peer of each channel: every DvP ended claimed on both channels, or aborted
   on one and refunded (or aborted) on the other, the peers of a channel agree, nothing stays
   locked, the channel's total is conserved (accounts + escrow = opening); and the canary scan:
   no file of the Bank's peer (a `cash` member, not a `trading` member: sqlite with -wal/-shm,
   logs) holds a canary, while the Exchange's peer's files do (the scan's positive control).
`--flow private` (docs/cross-channel.md "A private leg"): the cash leg is private among BrokerA
and BrokerB (`benchmarks/xfer_private_flow.py`), the coordinator resumes it from its step journal;
the checks add, on each recipient's private store: the recipients agree, every private record
ended (claimed, refunded or aborted) and pairs with the public one as above, no hold left, the
private cash conserved, and the Bank's peer holds no private `xfer` state; a second canary (in
the private account names) is in no file or log of the Bank's peer, the Exchange's peer or the
orderer, and is in the recipients' (positive control).
Exit status 1 if a check fails. Prints the figures benchmarks/RESULTS.md records.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import queue
import random
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from benchmarks import xfer_private_flow as pflow
from benchmarks.xfer_coordinator import FINAL, accounts_of, read_journal
from dltmw.client import GatewayClient
from dltmw.client.files import ClientFiles
from dltmw.client.governance import current_config, genesis_of, submit_update
from dltmw.core.block import block_hash
from dltmw.core.config_edit import with_trusted_channel
from dltmw.core.config_update import add_signature, update_content
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.v1 import config_update_pb2, transaction_pb2

TOPOLOGY = Path(__file__).resolve().parents[1] / "services" / "networks" / "capital-market.toml"
ORDERER = "orderer.exchange"
CHECK_PEERS = {
    "trading": ["peer.exchange", "peer.brokera", "peer.brokerb"],
    "cash": ["peer.bank", "peer.brokera", "peer.brokerb"],
}
ADMINS = {"trading": ("admin.brokera", "admin.exchange"), "cash": ("admin.brokera", "admin.bank")}
OUTSIDER, INSIDER = "peer.bank", "peer.exchange"  # cash-only member; trading member
OPENING = 1_000_000
RUN_MAX_S = 3600.0  # the whole run, kills and restarts included
CANARIES = 5


async def _trust_roots(net: Path) -> None:
    """Each channel's config names the other's block 0 (a majority of its admins sign)."""
    for here, other in (("trading", "cash"), ("cash", "trading")):
        first, second = ADMINS[here]
        view = await current_config(net, first, here)
        new = with_trusted_channel(view.config, other, block_hash(genesis_of(net, other)))
        update = config_update_pb2.ConfigUpdate(content=update_content(view, new))
        for admin in (first, second):
            add_signature(update, ClientFiles.load(net, admin).signer)
        _, code, _ = await submit_update(net, first, here, update, "peer.brokera")
        if code != transaction_pb2.TX_VALIDATION_CODE_VALID:
            raise SystemExit(f"trust root update of {here}: {code}")


async def _refused_root(trader: GatewayClient, genesis: bytes) -> None:
    """A block 0 the config does not name (trading's own, on trading) is refused, by name."""
    try:
        await trader.submit_transaction("trading", "xfer", "trust", genesis)
    except grpc.aio.AioRpcError as exc:
        if "TRUST_ROOT_MISMATCH" in (exc.details() or ""):
            return
        raise SystemExit(f"an unnamed trust root was refused otherwise: {exc.details()}") from exc
    raise SystemExit("trading accepted a trust root its config does not name")


async def _prepare(net: Path, args: argparse.Namespace, canary: str) -> None:
    in_flight = args.in_flight
    await _trust_roots(net)
    if args.flow == "private":
        await pflow.open_private_accounts(net, in_flight, args.private_canary, OPENING)
    async with await GatewayClient.connect(net, "trader.brokera", "peer.brokera") as trader:
        for here, other in (("trading", "cash"), ("cash", "trading")):
            genesis = (net / "channels" / f"{other}.block").read_bytes()
            await trader.submit_transaction(here, "xfer", "trust", genesis)  # not an admin
        await _refused_root(trader, (net / "channels" / "trading.block").read_bytes())
        opens = [
            trader.submit_transaction(channel, "xfer", "open", account, str(OPENING))
            for w in range(in_flight)
            for channel, pair in accounts_of(w).items()
            for account in pair
        ]
        opens += [
            trader.submit_transaction("trading", "kv", "put", f"canary-{k}", f"{canary}-{k}")
            for k in range(CANARIES)
        ]
        await asyncio.gather(*opens)


def _spawn(net: Path, journal: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "benchmarks.xfer_coordinator", str(net), str(journal)]
    command += ["--count", str(args.count), "--in-flight", str(args.in_flight)]
    command += ["--flow", args.flow, "--canary", args.private_canary]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _lines(proc: subprocess.Popen[str], out: queue.Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put(line.strip())


def _restart_orderer(sup: Supervisor) -> float:
    """kill -9 the orderer, start it again; seconds until it is ready."""
    start = time.monotonic()
    sup.kill(ORDERER)
    if sup.running(ORDERER) is None:
        sup.start(ORDERER)
    sup.wait_ready(ORDERER, 60)
    return time.monotonic() - start


def _drain(lines: queue.Queue[str], figures: dict[str, float]) -> int:
    """How many DvPs the coordinator reported ended since the last call (and counts in
    `figures["resumed"]` those it resumed: started by a killed coordinator, unfinished)."""
    done = 0
    while not lines.empty():
        line = lines.get()
        done += line.startswith("done ")
        figures["resumed"] += line.startswith("resume ")
    return done


def drive(sup: Supervisor, net: Path, args: argparse.Namespace) -> dict[str, float]:
    """Coordinators until every DvP ended; kill -9 of a coordinator `kills` times and of the
    orderer `orderer_kills` times, at random moments (seeded): each after a random number of
    DvPs ended (so it lands while work remains) plus a random fraction of a second."""
    rng = random.Random(args.seed)
    journal = net.parent / "coordinator.journal"
    figures = {"coordinator_kills": 0.0, "orderer_kills": 0.0, "orderer_down_s_max": 0.0}
    figures["resumed"] = 0.0
    orderer_after = sorted(rng.randrange(args.count) for _ in range(args.orderer_kills))
    kills_left, ended = args.kills, 0
    start = time.monotonic()
    while len(read_journal(journal)[1]) < args.count:
        if time.monotonic() - start > RUN_MAX_S:
            raise SystemExit(f"not done after {RUN_MAX_S} s")
        proc = _spawn(net, journal, args)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc, lines), daemon=True).start()
        remaining = args.count - len(read_journal(journal)[1])
        kill_after = ended + rng.randint(0, remaining // (kills_left + 1)) if kills_left else None
        kill_at = float("inf")
        while proc.poll() is None:
            time.sleep(0.05)
            ended += _drain(lines, figures)
            if orderer_after and ended >= orderer_after[0]:
                orderer_after.pop(0)
                down = _restart_orderer(sup)
                figures["orderer_kills"] += 1
                figures["orderer_down_s_max"] = max(figures["orderer_down_s_max"], down)
            if kill_after is not None and ended >= kill_after and kill_at == float("inf"):
                kill_at = time.monotonic() + rng.uniform(0.0, 0.5)
            if time.monotonic() >= kill_at:
                proc.kill()  # kill -9 of the coordinating client
                proc.wait(10)
                kills_left -= 1
                figures["coordinator_kills"] += 1
        if proc.returncode not in (0, -9):
            raise SystemExit(f"coordinator exited with {proc.returncode}")
    figures["run_s"] = time.monotonic() - start
    return figures


async def _peer_view(
    net: Path, peer: str, channel: str, ids: list[str], accounts: list[str], height: int
) -> tuple[list[str], int]:
    """(status of every DvP, sum of the accounts) as `peer` sees `channel` at >= `height`."""
    async with await GatewayClient.connect(net, "trader.brokera", peer) as c:
        c.observe_block(channel, height)
        gate = asyncio.Semaphore(32)

        async def status(transfer_id: str) -> str:
            async with gate:
                reply = await c.evaluate(channel, "xfer", "status", transfer_id)
                return reply.payload.decode()

        states = list(await asyncio.gather(*(status(t) for t in ids)))
        total = 0
        for account in accounts:
            total += int((await c.evaluate(channel, "xfer", "balance", account)).payload)
        return states, total


async def verify(sup: Supervisor, net: Path, args: argparse.Namespace) -> list[str]:
    """The checks of the module docstring, on every peer; returns the failures."""
    started, ended = read_journal(net.parent / "coordinator.journal")
    ids = [hashlib.sha256(started[i][0]).hexdigest() for i in range(args.count)]
    failures: list[str] = []
    seen: dict[str, list[str]] = {}
    async with await GatewayClient.connect(net, "trader.brokera", "peer.brokera") as c:
        marks = {  # a last transaction per channel: every peer is checked at or after it
            ch: (await c.submit_transaction(ch, "xfer", "open", f"mark-{time.time()}", "0"))
            for ch in CHECK_PEERS
        }
    for channel, peers in CHECK_PEERS.items():
        accounts = [a for w in range(args.in_flight) for a in accounts_of(w)[channel]]
        opening = OPENING * len(accounts)
        height = marks[channel].status.block_number
        for peer in peers:
            states, total = await _peer_view(net, peer, channel, ids, accounts, height)
            if seen.setdefault(channel, states) != states:
                failures.append(f"{peer} disagrees with another peer of {channel}")
            if total != opening:  # nothing stays locked (below), so no escrow
                failures.append(f"{peer}: {channel} accounts hold {total}, opened with {opening}")
            if "locked" in states:
                failures.append(f"{peer}: {states.count('locked')} DvPs still locked")
    if args.flow == "private":  # the cash leg's records are in the recipients' private stores
        dirs = {n: sup.data_dir(n) for n in (*pflow.RECIPIENT_PEERS, *pflow.OUTSIDERS)}
        terms = [started[i][0] for i in range(args.count)]
        found, seen["cash"] = pflow.check_private(
            dirs, terms, args.private_canary, args.in_flight, OPENING
        )
        failures += found
    pairs = list(zip(seen["trading"], seen["cash"], strict=True))
    failures += [f"DvP {i} ended {p}" for i, p in enumerate(pairs) if p not in FINAL]
    for i, p in enumerate(pairs):
        if ended.get(i) == "claimed" and p != ("claimed", "claimed"):
            failures.append(f"DvP {i}: the coordinator saw claimed, the peers {p}")
    return failures


def canary_scan(sup: Supervisor, canary: str) -> list[str]:
    """Failures: a canary in the Bank peer's files, or none in the Exchange peer's."""

    def holders(node: str) -> list[str]:
        found = []
        for path in sorted(sup.data_dir(node).rglob("*")):
            if path.is_file() and canary.encode() in path.read_bytes():
                found.append(str(path))
        return found

    outside = holders(OUTSIDER)
    log = sup.run / "logs" / f"{OUTSIDER}.out"
    if log.exists() and canary.encode() in log.read_bytes():
        outside.append(str(log))
    failures = [f"canary of trading in {p}" for p in outside]
    if not holders(INSIDER):
        failures.append(f"the scan found no canary in {INSIDER}'s files (scan broken)")
    return failures


async def _run(
    sup: Supervisor, net: Path, args: argparse.Namespace, canary: str
) -> tuple[dict[str, float], list[str]]:
    """Every phase in one event loop (grpc channels must close on the loop that made them);
    the coordinators and kills run in a thread (they only wait on processes)."""
    await _prepare(net, args, canary)
    figures = await asyncio.to_thread(drive, sup, net, args)
    return figures, await verify(sup, net, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--kills", type=int, default=4, help="kill -9 of the coordinator")
    parser.add_argument("--orderer-kills", type=int, default=2, help="kill -9 of the orderer")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flow", choices=["channel", "private"], default="channel")
    args = parser.parse_args()
    canary = "CANARY-" + secrets.token_hex(12)
    args.private_canary = "PRIV" + secrets.token_hex(12)  # not a substring of the other
    with tempfile.TemporaryDirectory() as tmp:
        net = Path(tmp) / "net"
        init_network(TOPOLOGY, net)
        sup = Supervisor(net)
        sup.up(timeout_s=120)
        try:
            figures, failures = asyncio.run(_run(sup, net, args, canary))
        finally:
            sup.stop_all()
        failures += canary_scan(sup, canary)
        if args.flow == "private":
            dirs = {n: sup.data_dir(n) for n in (*pflow.RECIPIENT_PEERS, *pflow.OUTSIDERS)}
            failures += pflow.canary_scan(dirs, sup.run / "logs", args.private_canary)
        _, ended = read_journal(net.parent / "coordinator.journal")
    outcomes = {o: sum(v == o for v in ended.values()) for o in ("claimed", "refunded", "aborted")}
    print(f"command: {' '.join(sys.argv)}")
    print(f"cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"DvPs: {args.count} ({' '.join(f'{k}={v}' for k, v in outcomes.items())})")
    print(" ".join(f"{k}={v:.1f}" for k, v in figures.items()))
    print(f"DvPs/s over the run (kills included): {args.count / figures['run_s']:.1f}")
    for failure in failures[:50]:
        print(f"FAIL {failure}")
    print("verdict:", "FAIL" if failures else "PASS (every check on every peer)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
