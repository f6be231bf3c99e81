"""A recipient executes each private transaction once: its agreement's run serves its commit.

Why: with agreement before commit (`core/privacy/agreement.py`) every recipient runs each private
invocation twice — once to sign its agreement (`runtime/roles/privacy/agreement.py`, on the
committed private state, nothing written) and once more after the block commits
(`blocks.PrivateExecution`): payload read, box opened, AES-GCM decryption, invocation parsed,
contract simulated, both hashes computed, the same work for the same result in almost every
case (a fresh key, or a key no other transaction changed in between).

When the first run's result IS the commit's: a contract is deterministic and sees the private
state only through `StateReader.get` (and `range`), so a run that asks the same questions and
gets the same answers produces the same response, writes and hashes. A `PriorRun` keeps every
lookup the agreement run made (through `ReadOnce`, which sees each of them once: the contract's
reads and execute's own for the hashes, values AND versions) and is reused at commit only if:

* the stored payload bytes are exactly the ones the run opened (SHA-256 of the stored copy), so
  a copy altered or replaced since is opened again and refused there (TAMPERED) as before;
* the contract is the very object the run used (`contract_of` gives another one after the
  executor reloaded the deployed contracts);
* every lookup gives the same answer now, read through the executor's pending writes — values
  and versions, so a key written in between (even back to the same value) runs it again;
* the run made no range read: a key inserted into a range changes a range's answer without
  changing any point lookup, so such runs always execute again (as privacy-group runs, whose
  result also depends on the channel's parties: those are never recorded).

Only the writes' version differs (the agreement ran at no position, the commit writes at the
transaction's (block, tx index)); `held_to_agreement` then checks the result against the
agreement on the ledger exactly as for a run made at commit. A miss costs the run it always
cost, never a different result.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from dltmw.core.contract import Contract, StateReader
from dltmw.core.privacy.execution import PrivateOutcome
from dltmw.core.privacy.read_once import Found, ReadOnce
from dltmw.core.rwset import StateWrite, Version

Lookup = tuple[tuple[str, str], Found]


@dataclass(frozen=True)
class PriorRun:
    """An agreement's run of one payload, kept for its commit (see the module docstring)."""

    stored_digest: bytes  # SHA-256 of the stored payload bytes the run opened
    contract: Contract  # the contract object it ran
    lookups: tuple[Lookup, ...]  # every (namespace, key) it asked, with the answer
    outcome: PrivateOutcome  # writes at no position (the agreement's run)


def stored_digest(raw: bytes) -> bytes:
    """The digest that ties a run to the stored copy it opened."""
    return hashlib.sha256(raw).digest()


def prior_run(
    raw: bytes, contract: Contract | None, reader: ReadOnce, outcome: PrivateOutcome
) -> PriorRun | None:
    """What to keep of a run of the stored payload `raw` through `reader`, or None when its
    result may not be reused (no contract ran, a range read, a privacy group)."""
    if contract is None or reader.ranged or outcome.group:
        return None
    return PriorRun(stored_digest(raw), contract, reader.lookups(), outcome)


def reused(
    prior: PriorRun,
    raw: bytes,
    contract_of: Callable[[str], Contract | None],
    state: StateReader,
    version: Version,
) -> PrivateOutcome | None:
    """The prior run's outcome with its writes at `version` if it is what running the stored
    payload `raw` on `state` now would give (module docstring), else None: run it again."""
    if contract_of(prior.contract.name) is not prior.contract:
        return None
    if stored_digest(raw) != prior.stored_digest:
        return None
    for (namespace, key), found in prior.lookups:
        if state.get(namespace, key) != found:
            return None
    writes = tuple(StateWrite(w.namespace, w.key, w.value, version) for w in prior.outcome.writes)
    return dataclasses.replace(prior.outcome, writes=writes)
