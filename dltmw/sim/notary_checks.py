"""Checkers of single-notary runs: what clients were answered against what the notary stored.

* **no state consumed twice**: among all transactions some client received a notary signature
  for, no input state appears twice; every signed transaction's inputs are recorded as consumed
  by it, and its signature is the one stored (and verifies as the notary's over the tx_id);
* **every retry gets the stored answer**: all final answers one transaction ever got — first
  tries, retries, answers to duplicated requests, retries after the notary crashed between its
  commit and its reply — agree: the same signature; or refusals for the same reason, each
  naming for a consumed state the hash of the consumer the notary stored (a later refusal may
  name more states: others got consumed meanwhile, and a consumed state stays consumed);
* **every transaction was answered** after the heal (liveness).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dltmw.core.utxo.model import Ref
from dltmw.ledger.notary_store import resolve

Verify = Callable[[str, bytes], bool]  # (tx_id, signature) -> is it the notary's?


@dataclass(frozen=True)
class Answer:
    """One final answer to one request: a signature, or a refusal with its conflicts."""

    signature: bytes = b""
    reason: str = ""
    conflicts: tuple[tuple[Ref, bytes], ...] = ()  # (state, SHA-256 of its consumer's tx_id)

    def __str__(self) -> str:
        if self.signature:
            return f"signed {self.signature.hex()[:12]}"
        named = ",".join(f"{r.tx_id[:6]}:{r.index}->{h.hex()[:8]}" for r, h in self.conflicts)
        return f"refused {self.reason} [{named}]"


@dataclass
class Attempted:
    """A transaction a client asked the notary to sign, and every final answer it got."""

    tx_id: str
    inputs: tuple[Ref, ...]
    answers: list[Answer] = field(default_factory=list)


@dataclass(frozen=True)
class Stored:
    """What the notary's spent-set file holds after the run."""

    spent: dict[Ref, str]
    signatures: dict[str, bytes]


def read_stored(path: Path) -> Stored:
    """Read the notary's spent-set file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        spent = {Ref.from_key(bytes(r)): t for r, t in conn.execute("SELECT ref, tx_id FROM spent")}
        rows = conn.execute("SELECT tx_id, signature FROM notarised")
        signatures = resolve(conn, {t: bytes(s) for t, s in rows})  # batch references read back
    finally:
        conn.close()
    return Stored(spent, signatures)


def check_no_double_spend(attempts: list[Attempted], stored: Stored, verify: Verify) -> list[str]:
    """No state is consumed by two signed transactions; signed means stored (see the doc)."""
    out: list[str] = []
    consumer: dict[Ref, str] = {}
    for tx in attempts:
        signatures = {a.signature for a in tx.answers if a.signature}
        if not signatures:
            continue
        for signature in sorted(signatures):
            if not verify(tx.tx_id, signature):
                out.append(f"forged: {tx.tx_id[:12]} got a signature that is not the notary's")
            if stored.signatures.get(tx.tx_id) != signature:
                out.append(f"unstored: {tx.tx_id[:12]} was answered a signature not stored")
        for ref in tx.inputs:
            first = consumer.setdefault(ref, tx.tx_id)
            if first != tx.tx_id:
                out.append(
                    f"double spend: {ref.tx_id[:8]}:{ref.index} signed for {first[:12]} "
                    f"and for {tx.tx_id[:12]}"
                )
            if stored.spent.get(ref) != tx.tx_id:
                out.append(f"unrecorded: {tx.tx_id[:12]} signed, its input not stored as spent")
    return out


def check_stored_answers(attempts: list[Attempted], stored: Stored) -> list[str]:
    """Every answer a transaction got agrees with the others and with what the notary stored."""
    out: list[str] = []
    for tx in attempts:
        if not tx.answers:
            out.append(f"unanswered: {tx.tx_id[:12]} never got a final answer")
            continue
        out += _agreeing(tx)
        for answer in tx.answers:
            for ref, named in answer.conflicts:
                holder = stored.spent.get(ref)
                if holder is None or hashlib.sha256(holder.encode()).digest() != named:
                    out.append(
                        f"wrong conflict: {tx.tx_id[:12]} was told {ref.tx_id[:8]}:{ref.index} "
                        f"is consumed by {named.hex()[:8]}, the notary stored "
                        f"{holder and holder[:12]}"
                    )
    return out


def _agreeing(tx: Attempted) -> list[str]:
    """The answers of one transaction, in the order they came, agree (see the module doc)."""
    first, named = tx.answers[0], set(tx.answers[0].conflicts)
    for later in tx.answers[1:]:
        same_kind = bool(later.signature) == bool(first.signature)
        if first.signature:
            agrees = later == first
        else:
            agrees = same_kind and later.reason == first.reason and named <= set(later.conflicts)
            named |= set(later.conflicts)
        if not agrees:
            return [f"changed answer: {tx.tx_id[:12]} got {first}, later {later}"]
    states = [ref for ref, _ in named]
    if len(states) != len(set(states)):
        return [f"changed answer: {tx.tx_id[:12]} was told two consumers of one state"]
    return []
