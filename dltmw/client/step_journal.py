"""The journal of a private leg's steps: what a new process needs to finish a DvP another one
started (docs/cross-channel.md "A private leg", "Resuming").

Why a journal at all: a public `xfer` record names the tx_id of every step, so `run_transfer`
resumes from the ledger alone. A private record cannot (private execution sees no header), and
no RPC returns private state to a client. So the driver writes down, before it submits a private
step, the one thing that identifies it: the tx_id, fixed by the nonce (`compute_tx_id(nonce,
creator)`), with the payload hash its recipients executed. A new run asks the ledger about each
written attempt: committed VALID and EXECUTED here -> the step is done; committed otherwise ->
it did nothing; not committed -> it is submitted again under the SAME nonce, so the old
envelope, if it still reaches the orderer, and the new one are one transaction (the second is a
duplicate tx_id and never executes). Hence writing the attempt before submitting: a crash after
the write and before the submit only leaves an attempt the next run submits.

Format (JSON lines, append-only, each line fsynced; a torn last line — a kill mid-write — is
skipped: its step was never submitted):

    {"id": TRANSFER_ID, "step": "plock", "nonce": HEX, "hash": HEX}

`id` is the transfer id (hex SHA-256 of the terms: the terms themselves are the caller's, as
for `run_transfer`), `step` the `xfer` function, `nonce` the envelope nonce, `hash` the private
payload hash. One file may hold many transfers. Without a path the journal lives in memory
(one process, no resume).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Attempt:
    """One submitted (or about to be submitted) private step."""

    step: str
    nonce: bytes
    payload_hash: bytes


class StepJournal:
    """Attempts per transfer id, read at open, appended (fsynced) as they are made."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._attempts: dict[str, list[Attempt]] = {}
        self._fd: int | None = None
        if path is None:
            return
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    attempt = Attempt(
                        str(entry["step"]),
                        bytes.fromhex(entry["nonce"]),
                        bytes.fromhex(entry["hash"]),
                    )
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line: that step was never submitted
                self._attempts.setdefault(str(entry["id"]), []).append(attempt)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def attempts(self, transfer_id: str, step: str) -> list[Attempt]:
        """The attempts of `step` for a transfer, oldest first."""
        return [a for a in self._attempts.get(transfer_id, []) if a.step == step]

    def write(self, transfer_id: str, attempt: Attempt) -> None:
        """Record an attempt durably BEFORE its envelope is submitted (module docstring)."""
        if self._fd is not None:
            entry = {
                "id": transfer_id,
                "step": attempt.step,
                "nonce": attempt.nonce.hex(),
                "hash": attempt.payload_hash.hex(),
            }
            # a torn earlier line (a kill mid-write) must not swallow this one
            os.write(self._fd, ("\n" + json.dumps(entry, separators=(",", ":")) + "\n").encode())
            os.fsync(self._fd)
        self._attempts.setdefault(transfer_id, []).append(attempt)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
