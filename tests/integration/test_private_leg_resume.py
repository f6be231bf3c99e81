"""`run_private_transfer` resumes after its coordinator is killed -9 (docs/cross-channel.md "A
private leg", "Resuming"), on real processes: the capital-market network, securities on
`trading`, cash private among BrokerA and BrokerB. A coordinator process
(`private_dvp_driver.py`) is killed after both locks, mid-claim (the public claim committed,
the private claim journaled but not yet submitted), and mid-refund (the deadline passed, the
public leg aborted, the private refund journaled only); a new run in another process with the
same journal ends each DvP claimed on both legs or refunded on both, and the totals are
conserved on every peer that holds them (the public leg on each `trading` peer, the private
leg at each recipient; the Bank, a non-recipient member of `cash`, holds nothing)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.client.private_transfer import run_private_transfer
from dltmw.client.step_journal import StepJournal
from dltmw.v1 import transaction_pb2
from tests.integration.private_dvp_parties import (
    BUYER,
    SELLER,
    TRADING,
    Parties,
    private_xfer_state,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = ROOT / "services" / "networks" / "capital-market.toml"
FAR = 2_000_000_000
STOP_WITHIN_S = 120.0


def _run_until_stopped(net: Path, journal: Path, salt: str, deadline: int, *flags: str) -> None:
    """Start a coordinator, wait (bounded) until it reports its stop point, kill -9 it."""
    command = [sys.executable, "-m", "tests.integration.private_dvp_driver", str(net)]
    command += [str(journal), salt, str(deadline), *flags]
    errors = journal.with_suffix(".stderr")
    with errors.open("w") as err:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        give_up = time.monotonic() + STOP_WITHIN_S
        assert proc.stdout is not None
        while time.monotonic() < give_up:
            line = proc.stdout.readline()
            if line.strip() == "STOPPED" or not line:
                break
        if line.strip() != "STOPPED":
            proc.wait(10)  # for its exit status
        why = f"exit {proc.poll()}: {errors.read_text()[-3000:]}"
        assert line.strip() == "STOPPED", f"the coordinator ended without stopping: {why}"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def _private_view(net: Path, node: str, transfer_id: str) -> tuple[int, int, str, str]:
    """(buyer, seller, record state, hold state) of the private leg in a node's private store."""
    state = private_xfer_state(net, node)

    def of(key: str) -> str:
        raw = state.get(key)
        return "absent" if raw is None else str(json.loads(raw)["state"])

    return (
        int(state["a/" + BUYER]),
        int(state["a/" + SELLER]),
        of("t/" + transfer_id),
        of("h/" + transfer_id),
    )


async def test_a_private_leg_dvp_resumes_after_the_coordinator_is_killed(network, tmp_path) -> None:
    net, _ = network(TOPOLOGY.read_text())
    parties = await Parties.connect(net)
    trader = parties.trader
    try:
        cash_genesis = (net / "channels" / "cash.block").read_bytes()
        admin = await GatewayClient.connect(net, "admin.brokera", "peer.brokera")
        try:
            await admin.submit_transaction("trading", "xfer", "trust", cash_genesis)
        finally:
            await admin.close()
        await trader.submit_transaction("trading", "xfer", "open", "A-sec", "1000")
        await trader.submit_transaction("trading", "xfer", "open", "B-sec", "0")
        for account, amount in ((BUYER, "1500"), (SELLER, "0")):  # three DvPs of 500
            opened = await parties.privacy.submit_private(
                "cash", ["BrokerB"], "xfer", "open", account, amount
            )
            assert opened.status.result == transaction_pb2.TX_VALIDATION_CODE_VALID

        async def public_view(transfer_id: str) -> list[tuple[int, int, str]]:
            """(A-sec, B-sec, record state) on every `trading` peer."""
            views = []
            for node in TRADING:
                gw = parties.conns[node]
                a = int((await gw.evaluate("trading", "xfer", "balance", "A-sec")).payload)
                b = int((await gw.evaluate("trading", "xfer", "balance", "B-sec")).payload)
                s = (await gw.evaluate("trading", "xfer", "status", transfer_id)).payload
                views.append((a, b, s.decode()))
            return views

        journal = tmp_path / "private.journal"
        expected = {"sec": (1000, 0), "cash": (1500, 0)}

        async def resume(salt: str, deadline: int) -> str:
            """A new run with the journal (this process: not the killed one); its outcome."""
            terms, leg = parties.dvp(salt, deadline)
            resumed = StepJournal(journal)
            try:
                done = await run_private_transfer(
                    parties.public,
                    leg,
                    terms,
                    parties.trading_genesis,
                    deadline,
                    wait_max_s=30,
                    journal=resumed,
                )
            finally:
                resumed.close()
            assert done.transfer_id == hashlib.sha256(terms).hexdigest()
            return done.outcome

        async def check(salt: str, deadline: int, outcome: str) -> None:
            tid = hashlib.sha256(parties.dvp(salt, deadline)[0]).hexdigest()
            sec, cash = expected["sec"], expected["cash"]
            if outcome == "claimed":
                sec, cash = (sec[0] - 10, sec[1] + 10), (cash[0] - 500, cash[1] + 500)
                expected["sec"], expected["cash"] = sec, cash
            public_state = "claimed" if outcome == "claimed" else "aborted"
            assert await public_view(tid) == [(*sec, public_state)] * len(TRADING)
            private_state = "claimed" if outcome == "claimed" else "refunded"
            for node in ("peer.brokera", "peer.brokerb"):  # every recipient, the same
                assert _private_view(net, node, tid) == (*cash, private_state, "spent"), node
            assert private_xfer_state(net, "peer.bank") == {}  # a non-recipient: nothing
            assert sum(sec) == 1000 and sum(cash) == 1500  # conserved

        # 1. killed after both locks, before any claim
        _run_until_stopped(net, journal, "locked-1", FAR, "--stop-at", "locked")
        assert await resume("locked-1", FAR) == "claimed"
        await check("locked-1", FAR, "claimed")

        # 2. killed mid-claim: the public claim committed, the private claim only journaled
        _run_until_stopped(net, journal, "midclaim-1", FAR, "--stop-at", "pclaim")
        tid = hashlib.sha256(parties.dvp("midclaim-1", FAR)[0]).hexdigest()
        assert {v[2] for v in await public_view(tid)} == {"claimed"}  # the kill came after it
        assert _private_view(net, "peer.brokera", tid)[2] == "locked"
        assert await resume("midclaim-1", FAR) == "claimed"
        await check("midclaim-1", FAR, "claimed")

        # 3. killed mid-refund: the public lock never happened, the deadline passed, the public
        # leg aborted, the private refund journaled only
        deadline = int(time.time()) + 25  # room for the driver to start and lock privately
        _run_until_stopped(
            net, journal, "refund-1", deadline, "--stop-at", "prefund", "--no-public-lock"
        )
        assert await resume("refund-1", deadline) == "refunded"
        await check("refund-1", deadline, "refunded")
    finally:
        await parties.close()
