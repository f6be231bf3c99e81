"""The "single notary" handler: decides, in order, which transactions may consume their inputs.

A core like every other (`core/effects.py`). The runtime feeds admitted requests
(`core/notary.py`), each with the clock reading it took for it and its caller's token, together
with the durable spent rows they touch, which the driver loaded for them (`Decide`); `ready()`
hands back what was decided — states now consumed, tx_ids now signed with their signature
(`Spent`), which the runtime commits in ONE durable transaction — and then the decisions to
reply with. Requests decided in one step see each other's effects (a batch is decided in order).

The decision per request, in this order:
  1. tx_id already signed (earlier, or earlier in this batch) -> the SAME signature again
     (idempotent, also after a restart, because signatures are persisted with the spent rows);
  2. time window does not hold at `now_ns` -> TIME_WINDOW_INVALID;
  3. a reference input or an input already consumed -> INPUT_CONSUMED, with for each conflicting
     state only SHA-256 of the consuming tx_id;
  4. otherwise the inputs become consumed by tx_id, and the notary signs it — once per step for
     all the tx_ids it notarised in it: one signature over their Merkle root, each answer with
     its leaf proof (`core/notary_batch.py`).
The decision depends only on the ordered requests, their `now_ns` and the spent-set, so a notary
cluster replicates it by feeding every replica the same ordered batches with the same agreed
timestamp (the PBFT primary's, checked by the backups) — each replica then signs with its own key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from dltmw.core.effects import Effects, Token
from dltmw.core.merkle import Proof
from dltmw.core.notary import NotarisationAsk
from dltmw.core.notary_batch import SignedBatch, decode, sign_tree
from dltmw.core.utxo.model import Ref
from dltmw.v1 import errors_pb2

R = errors_pb2


class SpentView(Protocol):
    """Read access to the durable spent-set (what earlier, committed batches decided)."""

    def consumer_of(self, ref: Ref) -> str | None:
        """tx_id that consumed `ref`, or None."""

    def signature_of(self, tx_id: str) -> bytes | None:
        """The notary's stored attestation of `tx_id` (`notary_batch.encode`), or None."""


class Ask(NamedTuple):
    """An admitted request, the notary's clock reading for it, and a reply token. (This and
    `Decision` are NamedTuples, immutable like the frozen dataclasses elsewhere: one of each is
    built per request on the notary's hot path, at a sixth of a dataclass's cost.)"""

    ask: NotarisationAsk
    now_ns: int
    token: Token


@dataclass(frozen=True)
class Decide:
    """Input: admitted requests to decide in order, and what the durable spent-set holds about
    their inputs, references and tx_ids (loaded by the driver after earlier steps committed)."""

    asks: tuple[Ask, ...]
    view: SpentView


@dataclass(frozen=True)
class Conflict:
    """A state no longer available, naming only the hash of its consumer's tx_id."""

    ref: Ref
    consuming_tx_id_hash: bytes
    is_reference: bool


class Decision(NamedTuple):
    """The answer to one request: a signature (with its batch proof; none for a signature
    stored before batch signing), or a reason (ErrorReason) with conflicts."""

    tx_id: str
    signature: bytes = b""
    proof: Proof | None = None
    reason: int = 0
    message: str = ""
    conflicts: tuple[Conflict, ...] = ()


@dataclass(frozen=True)
class Spent:
    """Decided: states consumed and the batches signed (each once: signature and tx_ids, not an
    attestation per tx_id), to commit in one transaction; `sequence` is the notary cluster's
    decided batch (0 for a single notary)."""

    consumed: tuple[tuple[Ref, str], ...] = ()
    batches: tuple[SignedBatch, ...] = ()
    sequence: int = 0

    @property
    def tx_ids(self) -> list[str]:
        """Every tx_id signed, in order."""
        return [t for b in self.batches for t in b.tx_ids]

    def attestations(self) -> list[tuple[str, bytes]]:
        """(tx_id, stored attestation) of every tx_id signed (proofs rebuilt: for a view that
        keeps attestations per tx_id, as the simulator's and the cluster's layered view do)."""
        return [pair for b in self.batches for pair in b.attestations()]


NotaryEffects = Effects[None, Spent, None, Decision]
# sign_tree's shape: (tx_ids, sign) -> (signature, each tx_id's proof)
SignTree = Callable[[Sequence[str], Callable[[bytes], bytes]], tuple[bytes, list[Proof]]]
_SIGNED_BELOW = Decision("")  # a reply's place until its step's batch signature exists


def hash_tx_id(tx_id: str) -> bytes:
    """SHA-256 of a tx_id's UTF-8 text: what a conflict answer reveals."""
    return hashlib.sha256(tx_id.encode()).digest()


class SingleNotary:
    """The uniqueness decision over a spent-set (see module docstring): a
    `Core[Decide, NotaryEffects]`."""

    def __init__(self, sign: Callable[[bytes], bytes], tree_signer: SignTree | None = None) -> None:
        """`tree_signer` replaces `sign_tree` (the one step that makes a batch's signature and
        proofs): a seam for the simulator's byzantine cluster members only; None in production."""
        self._sign = sign
        self._tree_signer = tree_signer
        self._consumed: dict[Ref, str] = {}
        self._signed: dict[str, tuple[bytes, Proof]] = {}  # signed since `ready`, not stored
        self._batches: list[SignedBatch] = []
        self._replies: list[tuple[Token, Decision]] = []

    def step(self, message: Decide) -> None:
        """Decide the asks in order, then sign what was notarised in this step at once."""
        if not isinstance(message, Decide):
            raise TypeError(f"single notary cannot step {type(message).__name__}")
        fresh: dict[str, None] = {}  # tx_ids notarised in this step, in order
        pending: list[tuple[int, str]] = []  # (reply slot, tx_id) waiting for the signature
        replies = self._replies
        for ask in message.asks:
            decision = self._decide(ask.ask, ask.now_ns, message.view, fresh)
            if decision is None:
                pending.append((len(replies), ask.ask.tx_id))
                decision = _SIGNED_BELOW  # replaced once the batch is signed (below)
            replies.append((ask.token, decision))
        if not fresh:
            return
        tx_ids = tuple(fresh)
        signature, proofs = (self._tree_signer or sign_tree)(tx_ids, self._sign)
        self._batches.append(SignedBatch(signature, tx_ids))
        signed = self._signed
        for tx_id, proof in zip(tx_ids, proofs, strict=True):
            signed[tx_id] = (signature, proof)
        for at, tx_id in pending:  # answered from the proofs: nothing encoded or decoded
            replies[at] = (replies[at][0], Decision(tx_id, signature, signed[tx_id][1]))

    def tick(self, now: int) -> None:
        """Nothing is time-driven in a single notary."""

    def ready(self) -> NotaryEffects:
        """Drain: what was spent (commit it), then the decisions to reply with."""
        spent = Spent(tuple(self._consumed.items()), tuple(self._batches))
        out: NotaryEffects = Effects(
            decided=(spent,) if self._batches else (), replies=tuple(self._replies)
        )
        self._consumed, self._signed, self._batches, self._replies = {}, {}, [], []
        return out

    def _decide(
        self, ask: NotarisationAsk, now_ns: int, view: SpentView, fresh: dict[str, None]
    ) -> Decision | None:
        """The decision on `ask`, or None when it is notarised in this step (signed at its end)."""
        tx_id = ask.tx_id
        if tx_id in fresh:
            return None
        mine = self._signed.get(tx_id)
        if mine is not None:
            return Decision(tx_id, signature=mine[0], proof=mine[1])
        earlier = view.signature_of(tx_id)
        if earlier is not None:
            return signed(tx_id, earlier)
        if not ask.window.holds(now_ns):
            return Decision(
                tx_id,
                reason=R.ERROR_REASON_TIME_WINDOW_INVALID,
                message="the notary's time is outside the transaction's time window",
            )
        conflicts = [
            Conflict(ref, hash_tx_id(consumer), is_reference)
            for refs, is_reference in ((ask.references, True), (ask.inputs, False))
            for ref in refs
            if (consumer := self._consumed.get(ref) or view.consumer_of(ref)) is not None
        ]
        if conflicts:
            return Decision(
                tx_id,
                reason=R.ERROR_REASON_INPUT_CONSUMED,
                message=f"{len(conflicts)} state(s) already consumed",
                conflicts=tuple(conflicts),
            )
        for ref in ask.inputs:
            self._consumed[ref] = tx_id
        fresh[tx_id] = None
        return None


def signed(tx_id: str, stored: bytes) -> Decision:
    """The signed answer for `tx_id` from its stored attestation."""
    signature, proof = decode(stored)
    return Decision(tx_id, signature=signature, proof=proof)
