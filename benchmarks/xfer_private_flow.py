"""The private-leg variant of the acceptance run (`xfer_acceptance --flow private`): securities
on `trading` in clear, cash on `cash` as private transactions among BrokerA and BrokerB
(docs/cross-channel.md "A private leg"); the Bank is a `cash` member and no recipient.

Shared by the coordinator (which drives DvPs with `run_private_transfer` and a step journal next
to its terms journal) and the acceptance script (set-up, checks). Everything a DvP needs is
derived from its index, the slot count and the run's canary, so the terms journal stays the
channel run's (terms, deadline); the private leg's details are rebuilt from the index. The
canary is in the private account names: the checks find it in the recipients' files and in no
file of the Exchange's peer, the orderer or the Bank's peer.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.private_transfer import PrivateLeg, private_terms, run_private_transfer
from dltmw.client.step_journal import StepJournal
from dltmw.client.transfer import Leg
from dltmw.core.block import block_hash
from dltmw.core.private_leg import details_bytes
from dltmw.v1 import block_pb2, transaction_pb2

RECIPIENTS = ["BrokerA", "BrokerB"]
RECIPIENT_PEERS = ["peer.brokera", "peer.brokerb"]
OUTSIDERS = ["peer.bank", "peer.exchange", "orderer.exchange"]  # never hold the private leg
CASH_PEERS = ["peer.brokera", "peer.brokerb"]  # their attestations prove a private step


def cash_accounts(slot: int, canary: str) -> tuple[str, str]:
    """A slot's private (payer, payee) cash accounts; the canary is in their names."""
    return f"B-cash-{slot}-{canary}", f"A-cash-{slot}-{canary}"


def details_of(index: int, in_flight: int, canary: str, cash: int) -> bytes:
    """DvP `index`'s private leg: `cash` from the slot's payer to its payee."""
    payer, payee = cash_accounts(index % in_flight, canary)
    return details_bytes(payer, payee, cash, f"acc-{index}")


def terms_of(
    net: Path, index: int, legs: dict[str, tuple[str, str, int]], deadline: int, canary: str, w: int
) -> bytes:
    """Canonical terms of DvP `index` (the public leg from `legs["trading"]`)."""
    trust = block_hash(block_pb2.Block.FromString(trading_genesis(net)))
    details = details_of(index, w, canary, legs["cash"][2])
    public = ("trading", *legs["trading"])
    return private_terms(public, "cash", details, RECIPIENTS, trust, deadline, f"acc-{index}")


def trading_genesis(net: Path) -> bytes:
    return (net / "channels" / "trading.block").read_bytes()


async def open_private_accounts(net: Path, in_flight: int, canary: str, opening: int) -> None:
    """Every slot's private cash accounts, at both recipients."""
    trader = await GatewayClient.connect(net, "trader.brokera", "peer.brokera")
    async with PrivacyClient(trader) as privacy:  # closes the trader's connection too
        for w in range(in_flight):
            for account in cash_accounts(w, canary):
                done = await privacy.submit_private(
                    "cash", ["BrokerB"], "xfer", "open", account, str(opening)
                )
                if done.status.result != transaction_pb2.TX_VALIDATION_CODE_VALID:
                    raise SystemExit(f"opening {account}: {done.status.result}")


class PrivateFlow:
    """The coordinator's side: one trader, a step journal, a `settle` per DvP."""

    def __init__(
        self, net: Path, conns: dict[str, GatewayClient], journal: Path, canary: str
    ) -> None:
        self.net, self.canary = net, canary
        self.conns = conns
        self.privacy = PrivacyClient(conns["peer.brokera"])
        self.steps = StepJournal(journal.with_suffix(".steps"))

    def leg(self, index: int, in_flight: int, cash: int) -> PrivateLeg:
        peers = [(n, self.conns[n].channel) for n in CASH_PEERS]
        details = details_of(index, in_flight, self.canary, cash)
        return PrivateLeg("cash", self.privacy, ["BrokerB"], peers, details)

    async def run(
        self, public: Leg, terms: bytes, deadline: int, leg: PrivateLeg, wait_max_s: float
    ) -> str:
        """One run of the DvP; its outcome (the coordinator reads the public record too)."""
        done = await run_private_transfer(
            public, leg, terms, trading_genesis(self.net), deadline, wait_max_s, self.steps
        )
        return done.outcome

    def close(self) -> None:
        self.steps.close()


def private_state(data_dir: Path) -> dict[str, str]:
    """The private `xfer` keys of a node's private store, as text (read-only; WAL allows it)."""
    path = data_dir / "cash.private.sqlite"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, value FROM pstate WHERE namespace = 'xfer'").fetchall()
    finally:
        db.close()
    return {str(k): bytes(v).decode() for k, v in rows}


def check_private(
    data_dirs: dict[str, Path], terms: list[bytes], canary: str, in_flight: int, opening: int
) -> tuple[list[str], list[str]]:
    """(failures, the private record state of each DvP) over the recipients' private stores:
    they agree; every record ended (claimed, refunded or aborted) and no hold is left `held`;
    the slots' accounts hold the opening total; the Bank's peer holds no private `xfer` state."""
    failures: list[str] = []
    ids = [hashlib.sha256(t).hexdigest() for t in terms]
    seen: list[str] | None = None
    for node in RECIPIENT_PEERS:
        state = private_state(data_dirs[node])
        records = [state.get("t/" + i) for i in ids]
        states = ["absent" if r is None else str(json.loads(r)["state"]) for r in records]
        if seen is not None and states != seen:
            failures.append(f"{node} disagrees with another recipient on the private records")
        seen = seen or states
        failures += [f"{node}: DvP {k} private record {s}" for k, s in enumerate(states)
                     if s not in ("claimed", "refunded", "aborted")]  # fmt: skip
        holds = [state.get("h/" + i) for i in ids]
        held = [k for k, h in enumerate(holds) if h and json.loads(h)["state"] == "held"]
        failures += [f"{node}: DvP {k} still holds its cash" for k in held]
        total = sum(
            int(state["a/" + a]) for w in range(in_flight) for a in cash_accounts(w, canary)
        )
        if total != opening * 2 * in_flight:
            failures.append(f"{node}: private cash holds {total}, opened {opening * 2 * in_flight}")
    if private_state(data_dirs["peer.bank"]):
        failures.append("the Bank's peer (no recipient) holds private xfer state")
    return failures, seen or []


def canary_scan(data_dirs: dict[str, Path], logs: Path, canary: str) -> list[str]:
    """Failures: the canary (in the private account names) in a non-recipient's files or log,
    or in none of the recipients' (the scan's positive control)."""

    def holds(root: Path) -> bool:
        files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else [root]
        return any(canary.encode() in p.read_bytes() for p in files if p.exists())

    failures = [f"private canary in {n}'s files" for n in OUTSIDERS if holds(data_dirs[n])]
    failures += [f"private canary in {n}'s log" for n in OUTSIDERS if holds(logs / f"{n}.out")]
    if not all(holds(data_dirs[n]) for n in RECIPIENT_PEERS):
        failures.append("the scan found no private canary at a recipient (scan broken)")
    return failures
