"""The private executor of one channel: private transactions, executed in block order.

It follows the peer's COMMITTED blocks (`PeerChannel.committed_blocks`, the same feed as the
gateway's Events), so it needs no hook inside the commit path: the public commit never waits for
private work, and private execution can always be redone from the public ledger. For each VALID
PRIVATE_TRANSACTION envelope it takes the payload hash, looks the payload up in the private store
and records one of (`core/privacy/execution.py`):

* EXECUTED / CONTRACT_FAILED — this node is a recipient: payload verified against the ledger's
  hash, decrypted, the invocation run against the private state, writes applied;
* NOT_HELD — no payload: this node is not a recipient (it records the hash only) or lost its
  store (Recover fetches the payloads and re-derives);
* TAMPERED — the stored copy does not match the ledger's hash or does not authenticate; refused,
  logged (by hash), and reported by PrivateStateHash / ValidatePrivateState.

A block's private effects and the cursor (next block to look at) are one store transaction, so
after a crash execution resumes exactly where it stopped. Blocks without private transactions
write nothing (they are simply looked at again after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from google.protobuf.message import DecodeError

from dltmw.aio.tasks import cancel_and_wait
from dltmw.contracts import builtin_contract
from dltmw.core.contract import Contract
from dltmw.core.errors import TransientError
from dltmw.core.privacy.envelope import PayloadError, PrivacyKey, open_payload
from dltmw.core.privacy.execution import CONTRACT_FAILED, NOT_HELD, TAMPERED, execute, state_hash
from dltmw.core.rwset import StateWrite, Version
from dltmw.core.txcheck import private_payload_hash
from dltmw.ledger.private_store import PrivateStore, PrivateTxn, PrivateTxRecord
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    errors_pb2,
    private_payload_pb2,
    proposal_pb2,
    transaction_pb2,
)

logger = logging.getLogger(__name__)
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
PRIVATE = common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION

PrivateTxRef = tuple[int, str, bytes]  # (tx_index, tx_id, payload_hash)


def private_txs(block: block_pb2.Block) -> list[PrivateTxRef]:
    """The VALID private transactions of a committed block."""
    out: list[PrivateTxRef] = []
    codes = block.metadata.validation_codes
    for index, raw in enumerate(block.data.envelopes):
        if index >= len(codes) or codes[index] != VALID:
            continue
        try:
            payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(raw).payload)
            header = common_pb2.Header.FromString(payload.header)
        except DecodeError:
            continue
        if header.type != PRIVATE:
            continue
        digest = private_payload_hash(payload.data)
        if digest is not None:
            out.append((index, header.tx_id, digest))
    return out


class PrivateExecutor:
    """Executes one channel's private transactions after their blocks commit."""

    def __init__(self, key: PrivacyKey, peer: PeerChannel, store: PrivateStore) -> None:
        self._key = key
        self._peer = peer
        self._store = store
        deployed = {c.name for c in peer.view.config.contracts}
        self._contracts = {n: c for n in deployed if (c := builtin_contract(n)) is not None}
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self.height = 0  # every block below it has been looked at

    def _contract_of(self, name: str) -> Contract | None:
        return self._contracts.get(name)

    async def start(self) -> None:
        """Resume after the last executed block."""
        self.height = await self._store.cursor()
        name = f"private-{self._peer.view.channel_id}"
        self._task = self._peer.ctx.tasks.forever(name, self._run)  # resumes at self.height

    async def stop(self) -> None:
        """Stop (idempotent); an in-flight block finishes or rolls back as a whole."""
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        async for block in self._peer.committed_blocks(self.height):
            items = private_txs(block)
            number = block.header.number
            if items:
                await self._store.transaction(partial(self._execute, number=number, items=items))
            async with self._progress:
                self.height = number + 1
                self._progress.notify_all()

    async def wait_for(self, height: int, timeout_s: float) -> None:
        """Wait until every block below `height` has been looked at."""
        async with self._progress:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self.height >= height), timeout_s
                )
        if self.height < height:
            raise TransientError(
                errors_pb2.ERROR_REASON_WAIT_TIMEOUT,
                f"private execution reached {self.height}, not {height}, in {timeout_s}s",
            )

    def _execute(self, txn: PrivateTxn, number: int, items: list[PrivateTxRef]) -> None:
        """On the store thread, inside one transaction: every private tx of block `number`."""
        for index, tx_id, digest in items:
            status, writes, outcome_hash = self._one(txn, number, index, digest)
            txn.apply(writes)
            txn.record(digest, PrivateTxRecord(tx_id, number, index, status, outcome_hash))
        txn.set_cursor(number + 1)

    def _one(
        self, txn: PrivateTxn, number: int, index: int, digest: bytes
    ) -> tuple[int, tuple[StateWrite, ...], bytes]:
        raw = txn.payload(digest)
        if raw is None:
            return NOT_HELD, (), b""
        try:
            payload = private_payload_pb2.EncryptedPayload.FromString(raw)
            plaintext = open_payload(payload, self._key, digest)
        except (DecodeError, PayloadError) as exc:
            reason = exc.reason_name if isinstance(exc, PayloadError) else "MALFORMED"
            if reason == "NOT_AUTHORIZED":
                return NOT_HELD, (), b""
            logger.error(
                "private payload %s of block %d refused: %s (differs from the ledger's hash "
                "or fails authentication)",
                digest.hex(),
                number,
                reason,
            )
            return TAMPERED, (), b""
        try:
            invocation = private_payload_pb2.PrivateInvocation.FromString(plaintext)
        except DecodeError:
            response = proposal_pb2.ContractResponse(status=400, message="not a PrivateInvocation")
            return CONTRACT_FAILED, (), state_hash(CONTRACT_FAILED, response, "", {})
        outcome = execute(self._contract_of, invocation, txn, Version(number, index))
        return outcome.status, outcome.writes, outcome.state_hash
