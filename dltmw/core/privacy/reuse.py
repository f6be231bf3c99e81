"""The agreement run's outcome reused at commit: each private payload run once per party, not twice.

Every recipient runs a payload twice: at agreement (`runtime/roles/privacy/agreement.py`: open
it, execute on the committed private state, sign the hashes) and again at commit (the executor,
`blocks.py`), which decrypts and executes it anew on the state then. That second run was the
largest private-specific cost of a peer (21.6 % of its GIL time with 2 recipients,
benchmarks/RESULTS.md, branch priv10). A `PriorRun` keeps what the first run produced; at commit
`reuse` hands back the very outcome `execution.execute` would give, without decrypting or
executing, when nothing the run depended on changed — else None, and the executor runs the
payload as before.

Why the reused outcome is IDENTICAL to a re-execution (the argument the checks below rest on):

* Same input. The cache is keyed by the payload hash and holds the SHA-256 of the exact stored
  bytes the run opened: the commit's copy must be those bytes (so the same plaintext, the same
  invocation; this node's key opened both). The contract must be the same deployed object
  (`contract_of(name) is contract`: an executor restarted with other definitions re-runs).
* Same reads. A contract sees only (`core/contract.py` `Context`): the args, the values `get`
  returns, the entries `range` returns and, for `add`, the key's current value. Private execution
  passes no transaction info (no tx_id, creator, timestamp or height: `tx=None`), no wall-clock
  limit, and a contract cannot see versions. Every `get` and `add` key is in the run's touched
  keys, so if their values now hash to the run's pre-state hash, a deterministic contract makes
  the same first read with the same answer, hence the same next one, and so on: same response,
  same writes, same deltas (`deltas.apply` reads the same values). A `range` read is NOT covered:
  a key inserted into the range since (a phantom) is in no touched set, so a run that did any
  range read is never kept. A refused run (CONTRACT_FAILED) records no read set at all (its
  pre-state hash covers nothing), so only EXECUTED runs are kept.
* Same context. A privacy-group invocation (`groups.py`) also depends on the membership record,
  the channel's parties and the payload's recipients: not kept (runs as before).
* What differs is the writes' version (the commit's block and index): rebuilt here, as
  `execute` does.

Then `blocks.held_to_agreement` judges the reused outcome exactly as a re-executed one (STALE on
another pre-state than agreed, TAMPERED on another delta). Pure: the executor's input carries
the runs (`PrivateBlock.prior`); the runtime keeps them in a bounded map (`executor.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from dltmw.core.contract import Contract, StateReader
from dltmw.core.privacy.execution import EXECUTED, PrivateOutcome, pre_state_hash
from dltmw.core.rwset import StateWrite, Version
from dltmw.v1 import private_payload_pb2, proposal_pb2


@dataclass(frozen=True)
class PriorRun:
    """What one agreement run of a payload produced, kept for its commit (see module doc)."""

    raw_hash: bytes  # SHA-256 of the stored payload bytes the run opened
    contract_name: str  # as the invocation names it (what `contract_of` is asked)
    contract: Contract  # the deployed object that ran (identity compared at commit)
    namespace: str
    touched: tuple[str, ...]  # every key read or written: the pre-state hash's keys
    pre_state_hash: bytes
    state_hash: bytes
    response: proposal_pb2.ContractResponse
    writes: tuple[tuple[str, bytes | None], ...]  # (key, value or None: delete), in order


def raw_digest(raw: bytes) -> bytes:
    """The identity of the exact stored bytes of a payload."""
    return hashlib.sha256(raw).digest()


def prior_run(
    raw: bytes,
    invocation: private_payload_pb2.PrivateInvocation,
    contract: Contract | None,
    outcome: PrivateOutcome,
) -> PriorRun | None:
    """The run of `invocation` (opened from `raw`, run by `contract`) worth keeping, or None
    when a commit could not reuse it exactly: not EXECUTED, a privacy-group invocation, or a
    run that did a range read (module docstring)."""
    if contract is None or invocation.group or outcome.status != EXECUTED or outcome.ranged:
        return None
    return PriorRun(
        raw_digest(raw),
        invocation.contract,
        contract,
        contract.name,
        tuple(key for key, _ in outcome.touched),
        outcome.pre_state_hash,
        outcome.state_hash,
        outcome.response,
        tuple((w.key, w.value) for w in outcome.writes),
    )


def reuse(
    prior: PriorRun,
    raw: bytes,
    contract_of: Callable[[str], Contract | None],
    state: StateReader,
    version: Version,
) -> PrivateOutcome | None:
    """The outcome executing the payload `raw` on `state` would give, from `prior`; None when
    anything it depended on differs (then the caller executes)."""
    ns = prior.namespace
    if contract_of(prior.contract_name) is not prior.contract:
        return None
    if raw_digest(raw) != prior.raw_hash:
        return None
    before: dict[str, bytes | None] = {}
    for key in prior.touched:
        found = state.get(ns, key)
        before[key] = found[0] if found else None
    if pre_state_hash(ns, before) != prior.pre_state_hash:
        return None  # a key it read or wrote changed since: run it again
    writes = tuple(StateWrite(ns, key, value, version) for key, value in prior.writes)
    return PrivateOutcome(EXECUTED, prior.response, writes, prior.state_hash, prior.pre_state_hash)
