"""Scenario (b), one single notary, as whole simulated networks (tier 3).

The production notary node (servicer, role, store) on a simulated host; clients with the SDK race
to spend a few states while requests and answers get lost and duplicated, concurrent requests
overtake each other, and the notary is killed between a batch's commit and its replies (and
elsewhere) and restarted. Checkers: no state consumed twice, every retry got the stored answer,
every transaction answered. A failure prints the command that replays it.

Negative controls: a notary that forgets what it stored, and byzantine notaries whose batch
signatures must not verify (`sim/notary_byzantine.py`: a root signed outside the batch domain,
the root of another batch, a bent leaf proof, the proof of another batch) — the checker flags
them in every run.
"""

from __future__ import annotations

import sqlite3

import pytest

import dltmw.core.handlers.notary
import dltmw.ledger.notary_store
from dltmw.core.handlers.notary import Spent
from dltmw.sim.notary_byzantine import BEHAVIOURS
from dltmw.sim.scenarios import run_scenario

from .flow_runs import exercised, quiet_nodes, report, run_seeds, seeds

pytestmark = pytest.mark.soak

MARKS = {
    "killed between commit and reply": lambda r: r.counts.get("killed-after-notary", 0) > 0,
    "request lost": lambda r: r.counts.get("unary.request-lost", 0) > 0,
    "answer lost after the decision": lambda r: r.counts.get("unary.response-lost", 0) > 0,
    "request duplicated": lambda r: r.counts.get("unary.duplicated", 0) > 0,
    "request overtaken by a later one": lambda r: r.counts.get("unary.overtaken", 0) > 0,
    "answered transaction asked again": lambda r: r.counts.get("client-asked-again", 0) > 0,
}


def test_runs_are_safe_and_live() -> None:
    results = run_seeds("notary", seeds(200))
    assert all(r.ok for r in results), f"failing runs:\n{report(results)}"
    assert sum(r.summary["signed"] for r in results) >= 2 * len(results)  # spends went through
    shares = exercised(results, MARKS)
    assert all(share >= 0.9 for share in shares.values()), f"faults exercised: {shares}"


def _forgetting(keep: str):  # type: ignore[no-untyped-def]
    """A store write that keeps only `keep` ("spent" or "notarised") of a batch's effects."""

    def write(conn: sqlite3.Connection, spent: Spent, rows: list[tuple[bytes, str]]) -> None:
        if keep == "spent":
            conn.executemany("INSERT INTO spent(ref, tx_id) VALUES (?,?)", rows)
        else:
            dltmw.ledger.notary_store.write_batches(conn, spent)

    return write


@pytest.mark.parametrize(
    ("keep", "violation"),
    [
        pytest.param("notarised", "double spend", id="a-notary-that-forgets-the-spent-set"),
        pytest.param("spent", "changed answer", id="a-notary-that-forgets-its-signatures"),
    ],
)
def test_negative_control_a_forgetful_notary_is_caught(
    monkeypatch: pytest.MonkeyPatch, keep: str, violation: str
) -> None:
    monkeypatch.setattr(dltmw.ledger.notary_store, "_write", _forgetting(keep))
    results = run_seeds("notary", range(20), stop_after=20)
    caught = [r for r in results if any(v.startswith(violation) for v in r.violations)]
    assert len(caught) >= 10, f"only {len(caught)}/{len(results)} runs flagged {violation!r}"


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_negative_control_a_byzantine_batch_signature_is_caught(
    monkeypatch: pytest.MonkeyPatch, behaviour: str
) -> None:
    """The notary node signs its batches with a byzantine `sign_tree`: every run's checker
    calls answers "forged" (the client-side check of root signature and leaf proof refuses
    them), where the honest runs above have none."""
    monkeypatch.setattr(dltmw.core.handlers.notary, "sign_tree", BEHAVIOURS[behaviour]())
    results = run_seeds("notary", range(10), stop_after=10)
    caught = [r for r in results if any(v.startswith("forged") for v in r.violations)]
    assert len(caught) == len(results), f"{len(caught)}/{len(results)} runs flagged forged answers"


def test_a_run_replays_exactly() -> None:
    with quiet_nodes():
        first, again = (run_scenario("notary", 11, trace=True) for _ in range(2))
    assert first.trace == again.trace and len(first.trace) > 10
