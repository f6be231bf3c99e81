"""Checkers of private-payload runs: what each node's private store and files hold afterwards.

* **recipients agree**: every VALID private transaction on the ledger (its first occurrence) was
  executed by every recipient — EXECUTED or CONTRACT_FAILED, never NOT_HELD or TAMPERED — with
  the same private-state hash everywhere, and the recipients' private states are equal. STALE
  (agreement before commit: the agreed pre-state changed before the transaction ran, e.g. the
  same payload ordered again before the first ordering executed) counts as an outcome, so it
  passes only when EVERY recipient recorded it (docs/privacy.md "Agreement before commit");
* **what was agreed is what ran** (agreement before commit): a VALID private transaction's
  agreements all name one (pre-state, delta), and every recipient whose record is of that
  transaction executed it to exactly that delta or found it STALE;
* **non-recipients hold nothing readable**: a node that was never a recipient recorded NOT_HELD
  for every private transaction, holds no private state, and not one byte of its files (sqlite
  files with their -wal and -shm) contains a plaintext marker of the run, raw or hex; nor does
  any public ledger file (blocks, world state) of any node.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dltmw.core.privacy.execution import CONTRACT_FAILED, EXECUTED, NOT_HELD, STALE
from dltmw.sim.ledger_checks import VALID, Chain

RAN = frozenset({EXECUTED, CONTRACT_FAILED, STALE})


@dataclass(frozen=True)
class PrivateView:
    """One node's private store after the run."""

    node: str
    records: dict[bytes, tuple[int, bytes]]  # payload hash -> (status, state hash)
    state: dict[tuple[str, str], bytes]
    payloads: int = 0  # encrypted payloads held
    executed_as: dict[bytes, str] = field(default_factory=dict)  # payload hash -> its tx_id


def read_private(node: str, path: Path) -> PrivateView:
    """Read a node's private store file (absent: an empty view)."""
    if not path.exists():
        return PrivateView(node, {}, {})
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ptxs = conn.execute("SELECT payload_hash, status, state_hash, tx_id FROM ptxs").fetchall()
        records = {bytes(h): (int(s), bytes(sh)) for h, s, sh, _ in ptxs}
        executed_as = {bytes(h): str(t) for h, _, _, t in ptxs}
        rows = conn.execute("SELECT namespace, key, value FROM pstate")
        state = {(n, k): bytes(v) for n, k, v in rows}
        payloads = int(conn.execute("SELECT COUNT(*) FROM payloads").fetchone()[0])
    finally:
        conn.close()
    return PrivateView(node, records, state, payloads, executed_as)


def private_hashes(chain: Chain) -> list[bytes]:
    """Payload hashes of the committed private transactions (VALID, first occurrence of their
    tx_id), in ledger order."""
    out, seen = [], set()
    for tx in chain.txs:
        if tx.private_hash and tx.code == VALID and tx.tx_id not in seen:
            seen.add(tx.tx_id)
            out.append(tx.private_hash)
    return out


def check_recipients_agree(hashes: Iterable[bytes], recipients: Sequence[PrivateView]) -> list[str]:
    """Every recipient ran every private transaction, with the same outcome, to one state."""
    out: list[str] = []
    for digest in hashes:
        outcomes = {}
        for view in recipients:
            record = view.records.get(digest)
            if record is None or record[0] not in RAN:
                status = "no record" if record is None else f"status {record[0]}"
                out.append(f"not executed: {view.node} has {status} for {digest.hex()[:12]}")
            else:
                outcomes[view.node] = record
        if len(set(outcomes.values())) > 1:
            out.append(f"diverged: recipients' outcomes of {digest.hex()[:12]} differ")
    first = recipients[0]
    for view in recipients[1:]:
        if view.state != first.state:
            diff = sorted(set(view.state.items()) ^ set(first.state.items()))[:2]
            out.append(f"states differ: {view.node} and {first.node}: {diff}")
    return out


def check_agreed(chain: Chain, recipients: Sequence[PrivateView]) -> list[str]:
    """What was agreed is what ran (module docstring)."""
    out: list[str] = []
    for tx in chain.txs:
        if tx.code != VALID or not tx.private_hash or not tx.agreed:
            continue
        if len(set(tx.agreed)) > 1:
            out.append(f"agreement broken: VALID {tx.tx_id[:8]} carries differing results")
            continue
        delta = tx.agreed[0][1]
        for view in recipients:
            record = view.records.get(tx.private_hash)
            if record is None or view.executed_as.get(tx.private_hash) != tx.tx_id:
                continue
            if record[0] in RAN - {STALE} and record[1] != delta:
                out.append(f"not as agreed: {view.node} ran {tx.tx_id[:8]} to another result")
    return out


def check_nothing_readable(
    hashes: Iterable[bytes], outsider: PrivateView, files: Iterable[Path], markers: Iterable[bytes]
) -> list[str]:
    """The non-recipient recorded hashes only, and no file shows a plaintext marker."""
    out: list[str] = []
    for digest in hashes:
        record = outsider.records.get(digest)
        if record is not None and record[0] != NOT_HELD:
            out.append(
                f"outsider ran: {outsider.node} has status {record[0]} for {digest.hex()[:12]}"
            )
    if outsider.state:
        out.append(
            f"outsider state: {outsider.node} holds private state {sorted(outsider.state)[:2]}"
        )
    needles = [n for m in markers for n in (m, m.hex().encode())]
    for path in files:
        data = path.read_bytes()
        if any(needle in data for needle in needles):
            out.append(f"leak: plaintext marker found in {path.name} of {path.parent.parent.name}")
    return out
