"""The coordinating client of the cross-channel acceptance run (`benchmarks/xfer_acceptance.py`).

    python -m benchmarks.xfer_coordinator NET JOURNAL --count N --in-flight W
        [--flow channel|private --canary C]

A separate process, so the acceptance run can kill -9 it at any moment. It holds no authority
and nearly no state: the JOURNAL (JSON lines) keeps the terms of every DvP it started, written
and fsynced BEFORE the first lock, and a line for every DvP it saw end. A new coordinator reads
the journal, resumes every started-but-unfinished DvP with `client/transfer.run_transfer` (which
learns from the two channels' records what was done: the ledger is the state), then starts the
rest. DvP i runs in slot i % W on that slot's accounts, one at a time per slot (no MVCC conflict
between this process's own DvPs). Every 10th DvP has a short deadline, so a crash between its
steps, or a stalled orderer, may end it aborted or refunded instead of claimed; every 50th asks
for more cash than there is (`legs_of`), so it ends refunded.

`--flow private`: the cash leg is private among the brokers (`benchmarks/xfer_private_flow.py`),
driven by `run_private_transfer` with a step journal next to the terms journal (JOURNAL.steps),
which is what lets a new coordinator finish a private leg another one started.

A DvP counts as ended only when both channels' records say so (claimed on both, or aborted on one
and refunded or aborted on the other), read back from the ledger, never from run_transfer's word.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import grpc

from benchmarks.xfer_private_flow import CASH_PEERS, PrivateFlow, terms_of
from dltmw.client import GatewayClient
from dltmw.client.transfer import Leg, dvp_terms, run_transfer

PEERS = {"trading": ["peer.exchange", "peer.brokera"], "cash": ["peer.bank", "peer.brokera"]}
SHORT_DEADLINE_S = 1
LONG_DEADLINE_S = 90
PRIVATE_LONG_DEADLINE_S = 45  # a private step fails fast while the orderer is down: the DvP
# then waits for its deadline and unwinds (refunded), so a shorter one keeps the run moving
ATTEMPTS = 40
FINAL = {("claimed", "claimed"), ("aborted", "aborted"), ("aborted", "refunded")}
FINAL |= {(b, a) for a, b in FINAL}


def accounts_of(slot: int) -> dict[str, tuple[str, str]]:
    """A slot's (payer, payee) accounts on each channel."""
    return {
        "trading": (f"A-sec-{slot}", f"B-sec-{slot}"),
        "cash": (f"B-cash-{slot}", f"A-cash-{slot}"),
    }


def legs_of(index: int, in_flight: int) -> dict[str, tuple[str, str, int]]:
    """DvP `index`: 1 security against 10 cash on slot `index % in_flight`'s accounts; every
    50th asks for more cash than there is (its cash lock is refused: aborted and refunded)."""
    cash = 10**12 if index % 50 == 49 else 10
    amounts = {"trading": 1, "cash": cash}
    return {c: (*pair, amounts[c]) for c, pair in accounts_of(index % in_flight).items()}


def read_journal(path: Path) -> tuple[dict[int, tuple[bytes, int]], dict[int, str]]:
    """(started: index -> (terms, deadline_s), ended: index -> outcome) from the journal (a
    torn last line, from a kill mid-write, is ignored: its DvP had not started)."""
    started: dict[int, tuple[bytes, int]] = {}
    ended: dict[int, str] = {}
    if not path.exists():
        return started, ended
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "terms" in entry:
            started[entry["i"]] = (bytes.fromhex(entry["terms"]), entry["deadline_s"])
        else:
            ended[entry["i"]] = entry["outcome"]
    return started, ended


class Journal:
    """Append-only, one fsynced line per event."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, entry: dict[str, object]) -> None:
        os.write(self.fd, (json.dumps(entry) + "\n").encode())
        os.fsync(self.fd)


async def _states(a: Leg, b: Leg, transfer_id: str) -> tuple[str, str]:
    ra = await a.gateway.evaluate(a.channel_id, "xfer", "status", transfer_id)
    rb = await b.gateway.evaluate(b.channel_id, "xfer", "status", transfer_id)
    return ra.payload.decode(), rb.payload.decode()


async def settle(a: Leg, b: Leg, terms: bytes, deadline_s: int) -> tuple[str, str]:
    """Drive one DvP until both records are final; retries what a killed orderer or a lagging
    peer made fail (bounded)."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    why = ""
    for attempt in range(ATTEMPTS):
        try:
            await run_transfer(a, b, terms, deadline_s, wait_max_s=LONG_DEADLINE_S + 5)
            states = await _states(a, b, transfer_id)
            if states in FINAL:
                return states
            why = f"records {states}"
        except (grpc.aio.AioRpcError, RuntimeError, TimeoutError, ConnectionError) as exc:
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
        await asyncio.sleep(min(0.2 * (attempt + 1), 3.0))
    raise RuntimeError(f"transfer {transfer_id[:12]} not settled after {ATTEMPTS} attempts: {why}")


async def settle_private(
    a: Leg, flow: PrivateFlow, index: int, in_flight: int, terms: bytes, deadline_s: int
) -> tuple[str, str]:
    """Drive one private-leg DvP until the public record is final and the run agrees with it
    (the private record is read from the recipients' stores by the acceptance checks);
    (public state, the run's outcome)."""
    transfer_id = hashlib.sha256(terms).hexdigest()
    leg = flow.leg(index, in_flight, legs_of(index, in_flight)["cash"][2])
    why = ""
    for attempt in range(ATTEMPTS):
        try:
            outcome = await flow.run(a, terms, deadline_s, leg, PRIVATE_LONG_DEADLINE_S + 5)
            state = (await a.gateway.evaluate("trading", "xfer", "status", transfer_id)).payload
            public = state.decode()
            ended = public in ("claimed", "aborted", "refunded")
            if ended and (public == "claimed") == (outcome == "claimed"):
                return public, outcome
            why = f"public {public}, run {outcome}"
        except (grpc.aio.AioRpcError, RuntimeError, TimeoutError, ConnectionError) as exc:
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
        await asyncio.sleep(min(0.2 * (attempt + 1), 3.0))
    raise RuntimeError(f"transfer {transfer_id[:12]} not settled after {ATTEMPTS} attempts: {why}")


async def coordinate(
    net: Path,
    journal_path: Path,
    count: int,
    in_flight: int,
    flow: str = "channel",
    canary: str = "",
) -> None:
    started, ended = read_journal(journal_path)
    journal = Journal(journal_path)
    nodes = _peers() + (CASH_PEERS if flow == "private" else [])
    conns = {n: await GatewayClient.connect(net, "trader.brokera", n) for n in set(nodes)}
    trader = conns["peer.brokera"]
    a, b = (Leg(c, trader, [(n, conns[n].channel) for n in PEERS[c]]) for c in PEERS)
    private = PrivateFlow(net, conns, journal_path, canary) if flow == "private" else None
    long_s = LONG_DEADLINE_S if private is None else PRIVATE_LONG_DEADLINE_S

    async def slot(w: int) -> None:
        mine = [i for i in range(w, count, in_flight) if i not in ended]
        mine.sort(key=lambda i: (i not in started, i))  # resume what was started first
        for i in mine:
            if i in started:
                terms, deadline = started[i]
                print(f"resume {i}", flush=True)
            else:
                short = i % 10 == 9
                deadline = int(time.time()) + (SHORT_DEADLINE_S if short else long_s)
                if private is None:
                    terms = dvp_terms(legs_of(i, in_flight), deadline, f"acc-{i}")
                else:
                    terms = terms_of(net, i, legs_of(i, in_flight), deadline, canary, in_flight)
                journal.write({"i": i, "terms": terms.hex(), "deadline_s": deadline})
            if private is None:
                sa, sb = await settle(a, b, terms, deadline)
            else:
                sa, sb = await settle_private(a, private, i, in_flight, terms, deadline)
            outcome = sa if sa == "claimed" else ("refunded" if "refunded" in (sa, sb) else sa)
            journal.write({"i": i, "outcome": outcome})
            print(f"done {i} {outcome}", flush=True)

    try:
        await asyncio.gather(*(slot(w) for w in range(in_flight)))
    finally:
        if private is not None:
            private.close()
            await private.privacy.close()  # closes the trader's connection too
        for c in conns.values():
            await c.close()


def _peers() -> list[str]:
    return sorted({n for ns in PEERS.values() for n in ns})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("net", type=Path)
    parser.add_argument("journal", type=Path)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--in-flight", type=int, required=True)
    parser.add_argument("--flow", choices=["channel", "private"], default="channel")
    parser.add_argument("--canary", default="")
    args = parser.parse_args()
    asyncio.run(
        coordinate(args.net, args.journal, args.count, args.in_flight, args.flow, args.canary)
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
