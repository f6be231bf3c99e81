"""`Client`: a typed, fail-over client of the Gateway API for programs that embed dltmw.

It wraps `client.gateway.GatewayClient` (which signs proposals and envelopes and drives the
Transact stream) with what an embedding program needs:
- typed results (`sdk/results.py`) and typed exceptions (`sdk/errors.py`): no protobuf message
  and no `grpc.aio.AioRpcError` reaches the caller;
- fail-over across the gateways of its profile (`sdk/profile.py`): a gateway that is
  unreachable or stopping (an `Unavailable` answer) is left for the next one, and the step in
  progress is repeated there with the SAME proposal or envelope bytes (the proposal, hence the
  tx id, is made once per `submit`), so a transaction keeps its tx id across a fail-over;
  its signature may differ (see below), which changes nothing there: every duplicate check keys
  on the tx id, never on the signature — the gateway refuses a tx id already on its ledger
  (DUPLICATE_TX_ID, read as "already submitted": the client waits for its commit), and one
  ordered twice anyway (the first gateway's orderer took it before failing) is marked
  DUPLICATE_TXID in the later block and never applied; the commit status is the first's;
- an outcome it cannot know said so: once the envelope was handed to a gateway's order step,
  a lost gateway or the deadline is `CommitUnknown` (tx id, payload), never a plain
  `Unavailable` the caller would answer with a second `submit` (a second transaction);
  `resume_submit(error)` offers the same transaction again and returns its commit;
- a transaction's handle (`submit_async` -> `sdk/submitted.Submitted`): its tx id before it
  is ordered, the ordering in a task of the client, so a caller that cancels its wait (its
  own timeout) keeps the tx id and the transaction goes on; `commit_status` by tx id;
- the client's signatures per Transact request: when pipelined, a transaction's proposal and
  envelope go unsigned into the gateway connection's Transact stream, which signs ONE Merkle
  root over each request's proposals and one over its envelopes (`client/creator_signing.py`,
  `core/creator_batch.py`), so nodes verify one creator signature per request instead of two per
  transaction. The profile does not say which channels take such proofs
  (`ChannelConfig.creator_batches`), so the client presumes every channel does; a channel that
  does not refuses the proof at admission (CREATOR_BATCH_REFUSED: nothing endorsed or ordered)
  and the item is sent again signed alone, as is everything of that channel from then on. One
  `CreatorSigner` serves every gateway connection of the `Client`, so what it learnt survives a
  fail-over. A step repeated on another gateway is signed again (with its new request's root);
  private transactions' envelopes are signed alone (`submit_private`);
- transient failures retried by gRPC's own retry policy (exponential backoff with jitter, on
  UNAVAILABLE, for the Gateway service's calls) before they count as a fail-over, all within
  the call's deadline, which the gateways not yet tried share equally (`_attempt`; not the
  order step, whose answer is the commit);
- the read-your-writes mark (the highest block seen committed per channel) carried from one
  gateway to the next;
- identity references (`client/creator_reference.py`): the client names itself by its ~40-byte
  reference on a channel once one of its transactions sent in full committed there, endorser
  and private transactions alike. The profile does not say which channels take references
  (`ChannelConfig.client_identity_references`), so the client presumes every channel does; a
  refusal (UNKNOWN_IDENTITY_REFERENCE, MALFORMED, or such a commit code) changed nothing, and
  `submit` does the transaction again in full under a new tx id (a `submit_async` handle ends
  with the refusal instead: its tx id never changes); a channel that refused twice (or
  said MALFORMED once, after a fail-over too, where the transaction itself is `CommitUnknown`)
  gets the creator in full from then on. One `CreatorReferences` serves
  every gateway connection of the `Client`, like its `CreatorSigner`: a fail-over neither
  forgets the reference nor changes a transaction's creator (its proposal bytes are made once).
A `Client` is an async context manager; `close()` closes its connection and stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dltmw.aio.batched_stream import Reconnect
from dltmw.aio.tasks import STOP_WAIT_S, was_asked_to_cancel
from dltmw.client.creator_reference import UNKNOWN_REFERENCE, CreatorReferences
from dltmw.client.creator_signing import CreatorSigner
from dltmw.client.gateway import MAX_MESSAGE_BYTES, GatewayClient
from dltmw.client.privacy import PrivacyClient, PrivateSubmitted
from dltmw.client.private_pending import PrivateAgreementPending
from dltmw.net.addressbook import AddressBook
from dltmw.rpc.tls import secure_channel
from dltmw.sdk.errors import (
    AgreementPending,
    AlreadyExists,
    CommitFailed,
    CommitUnknown,
    Error,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unavailable,
    from_rpc_error,
)
from dltmw.sdk.profile import GatewayEndpoint, Profile
from dltmw.sdk.results import (
    Block,
    Committed,
    EventFilter,
    TxStatus,
    block_of,
    code_name,
    status_of,
)
from dltmw.sdk.submitted import Endorsed, Submitted
from dltmw.v1 import gateway_service_pb2

G = gateway_service_pb2
logger = logging.getLogger(__name__)
T = TypeVar("T")
# what a transaction calls: (channel id, contract, function, args)
_Call = tuple[str, str, str, Sequence[str | bytes]]
# After a fail-over in ordering, a gateway whose peer has not yet committed the block that
# registered this client's reference is asked again after this long (`_order`).
REFERENCE_LAG_S = 0.05
# How long `_order` waits for a commit status after a refusal that may answer a later copy of a
# transaction already committed (a committed one is answered at once; the wait is for nothing).
STATUS_PROBE_S = 1.0
STATUS_WAIT_S = 1.0  # `commit_status`'s default wait for a commit not seen yet
STATUS_RTT_S = 0.1  # the least a status query is given (one round trip)
ALIVE_TIMEOUT_S = 1.0  # a gateway silent on a status query must answer a health check by then
ATTEMPT_MIN_S = 0.1  # the least one gateway's attempt at a step is given (`_attempt`)
FRAMING_BYTES = 16 * 1024  # room in a gateway request beside one item (its fields, a proof)
RESOLVE_TIMEOUT_S = 1.0  # per gateway: a stopped node has withdrawn its address
# gRPC's retry policy (gRFC A6): up to 4 attempts, backoff 50 ms x 2^n (jittered), capped at 1 s.
RETRY_POLICY = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "dltmw.v1.GatewayService"}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
CHANNEL_OPTIONS = (("grpc.enable_retries", 1), ("grpc.service_config", RETRY_POLICY))


# How a client makes its channel to a gateway: `rpc/tls.secure_channel`'s signature
# (address, server name, TLS material, message limit, extra=options).
ChannelMaker = Callable[..., grpc.aio.Channel]


class Client:
    """A client identity using the gateways of its profile (module docstring)."""

    def __init__(
        self,
        profile: Profile,
        deadline_s: float = 60.0,
        pipelined: bool = True,
        channels: ChannelMaker = secure_channel,
    ) -> None:
        """`channels` makes the channel to a gateway (`rpc/tls.secure_channel`; an embedded
        network's in-process transport passes its own)."""
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.profile = profile
        self.deadline_s = deadline_s
        self._pipelined = pipelined
        self._channels = channels
        self._signer = profile.signer()
        # one signer for every gateway connection: which channels refused batch proofs
        self.signing = CreatorSigner(self._signer, presuming=pipelined)
        # and one choice of creator (in full / by reference) per channel: module docstring
        self.references = CreatorReferences(self._signer.identity_bytes, presuming=True)
        self._tls = profile.tls_material()
        self._next = 0  # index of the gateway to try next
        self._gateway: GatewayClient | None = None
        self.gateway_name = ""  # the gateway in use ("" before the first call)
        self.gateway_address = ""  # and where it was reached
        self._seen: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._privacy: dict[int, PrivacyClient] = {}  # of the gateway in use
        self.reconnect = Reconnect()  # the backoff between rounds of dialling every gateway
        self._tasks: set[asyncio.Task[Committed]] = set()  # `submit_async`'s, in progress
        self._closing = False  # `close()` was called: no new transaction
        self._busy: dict[GatewayClient, int] = {}  # calls in flight per gateway
        # gateways left while slow, closed when their last call ends (`_fail_over`)
        self._left: dict[GatewayClient, PrivacyClient | None] = {}
        # their closes, run apart from the call that ended last (`_release`); `close()` waits
        self._closers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Client:
        await self._current()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the transactions still in progress (their handles' `committed()` raises
        `CommitUnknown`: they may be ordered) — every one, started before or while it closes
        (`submit_async` refuses new ones from now on), all cancelled at once and waited for
        together within one bound (`STOP_WAIT_S`; one that does not end is logged) — then
        close the connection to the gateway in use."""
        self._closing = True
        loop = asyncio.get_running_loop()
        end = loop.time() + STOP_WAIT_S
        while (tasks := _running(self._tasks)) and loop.time() < end:  # (bounded: STOP_WAIT_S)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=max(0.0, end - loop.time()))
        for task in _running(self._tasks):  # (one ended in the last turn is not named)
            logger.warning("transaction %s: did not stop within %s s", task.get_name(), STOP_WAIT_S)
        gateway, self._gateway = self._gateway, None
        privacy, self._privacy = self._privacy, {}
        left, self._left = self._left, {}
        for old, its_privacy in left.items():
            self._close_apart(old, its_privacy)
        if closers := _running(self._closers):  # (bounded: STOP_WAIT_S)
            await asyncio.wait(closers, timeout=STOP_WAIT_S)
        for closer in _running(self._closers):
            logger.warning("%s: did not close within %s s", closer.get_name(), STOP_WAIT_S)
        for p in privacy.values():
            await p.close()  # closes the gateway connection too
        if gateway is not None and not privacy:
            await gateway.close()

    def seen_block(self, channel_id: str) -> int:
        """The highest block of `channel_id` this client saw committed (read your writes)."""
        current = self._gateway.seen_block(channel_id) if self._gateway else 0
        return max(current, self._seen.get(channel_id, 0))

    async def submit(
        self, channel_id: str, contract: str, function: str, *args: str | bytes
    ) -> Committed:
        """Endorse, order and commit one transaction; returns once it committed VALID:
        `submit_async` and `Submitted.committed`. A creator reference refused before anything
        was applied (at admission, or its commit code: module docstring) is done again here in
        full, as a second transaction under a new tx id — only here, where the caller holds no
        tx id: a `submit_async` handle's tx id never changes (it ends with that refusal).

        Raises `CommitFailed` if it committed with another code, `CommitUnknown` if it was
        handed on to be ordered but its commit was not seen (`resume_submit` finishes it; a
        second `submit` would be a second transaction), or the typed error of the step that
        refused it (nothing was ordered; `metadata["tx_id"]` names the transaction refused).
        Cancelling it once the transaction was endorsed cancels the wait, not the transaction:
        the log names its tx id (a warning at the cancel, its outcome when it ends); a caller
        with its own timeout uses `submit_async` and keeps the handle."""
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        call = (channel_id, contract, function, args)
        submitted = await self._submit_async(deadline, call, None)
        try:
            return await _waited(submitted)
        except CommitUnknown:
            raise  # (it may be ordered: never redone under a new tx id)
        except Error:
            if not submitted.reference_refused:
                raise
        # the reference was refused and nothing was applied: again, in full (a new tx id)
        again = await self._submit_async(deadline, call, self.references.full)
        return await _waited(again)

    async def submit_async(
        self, channel_id: str, contract: str, function: str, *args: str | bytes
    ) -> Submitted:
        """Endorse one transaction and hand it on to be ordered; returns its handle at once
        (`sdk/submitted.py`: `tx_id`, `result`, `committed()`, `status()`), before it is
        ordered. The ordering and the wait for the commit run in a task of this client, within
        `deadline_s` from this call; cancelling a wait on the handle never cancels them, and
        the handle keeps the tx id (Fabric Gateway's `submit_async`), which never changes. A
        creator reference refused after the hand-off ends the handle with that definite
        refusal (`CommitFailed` with the reference's code, or the admission's typed error):
        nothing was applied, and only then does the caller submit again (`submit` does so
        itself). Raises the typed error of an endorsement refused (nothing ordered;
        `metadata["tx_id"]` names the proposal), and `InvalidRequest` (CLOSED) once the client
        was closed."""
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        return await self._submit_async(deadline, (channel_id, contract, function, args), None)

    async def _submit_async(self, deadline: float, call: _Call, creator: bytes | None) -> Submitted:
        """`submit_async` within `deadline`, as `creator` (None: the channel's choice; a
        reference refused at endorsement is done again in full, nothing having changed)."""
        if self._closing:
            raise _closed()
        channel_id, refs = call[0], self.references
        chosen = refs.creator(channel_id) if creator is None else creator
        try:
            endorsed = await self._endorse_as(deadline, call, chosen)
        except Error as error:
            if not refs.refused_reason(channel_id, chosen, error.reason):
                raise
            # refused at endorsement: nothing was changed; again, in full
            endorsed = await self._endorse_as(deadline, call, refs.full)
        if self._closing:  # (closed while it was endorsed: nothing ordered)
            raise _naming(_closed(), endorsed.tx_id)
        submitted = Submitted(channel_id, endorsed, self.commit_status)
        task = asyncio.create_task(self._finish(deadline, submitted), name=endorsed.tx_id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        submitted.start(task)
        return submitted

    async def commit_status(
        self, channel_id: str, tx_id: str, wait_s: float = STATUS_WAIT_S
    ) -> TxStatus | None:
        """The commit status of `tx_id` on `channel_id` at a gateway's peer (the gateway's
        CommitStatus; any validation code). A committed transaction is answered at once; one
        not committed within `wait_s` (at least one round trip, `STATUS_RTT_S`) at a gateway
        that answers a health check is None — not (yet) on the ledger. None is never final: a
        transaction handed on may still commit (only its handle's outcome, or `resume_submit`
        after a `CommitUnknown`, settles it). A gateway that is unreachable, or silent on the
        query and on a health check (a hung process), is left for the next (`Unavailable`
        when none answers); a malformed tx id or an unknown channel is the gateway's typed
        refusal."""
        if wait_s < 0:
            raise InvalidRequest(
                f"wait_s {wait_s} is negative", "INVALID_FIELD", "INVALID_ARGUMENT"
            )
        status = await self._status(channel_id, tx_id, wait_s)
        return None if status is None else status_of(tx_id, status)

    async def resume_submit(self, unknown: CommitUnknown) -> Committed:
        """Finish a transaction whose commit `submit` did not see (`CommitUnknown`): offer the
        SAME transaction (tx id) again, failing over between gateways, and wait for its commit.
        A copy already ordered is refused (DUPLICATE_TX_ID) or committed as DUPLICATE_TXID and
        never applied, and the first copy's commit is what is returned: the transaction is
        applied at most once. Raises `CommitUnknown` again if its commit is still not seen
        within `deadline_s` (a gateway's refusal, its `reason`, with no commit of the tx id
        found at its peer), `CommitFailed` if it committed with another code than VALID (a
        creator reference refused at commit: nothing applied, `submit` it again), and
        `InvalidRequest` for another client's transaction (this client signs it again)."""
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        channel_id, refs = unknown.channel_id, self.references
        if unknown.creator not in (refs.full, refs.reference):
            raise InvalidRequest(
                f"transaction {unknown.tx_id} was made by another client", code="INVALID_ARGUMENT"
            )
        endorsed = Endorsed(unknown.tx_id, unknown.payload, unknown.result, unknown.creator)
        # (handed on before: a refused reference is waited out, not redone)
        status = await self._order(deadline, channel_id, endorsed, handed=[True])
        if not refs.refused_code(channel_id, unknown.creator, status.result):
            refs.committed(channel_id, unknown.creator, status.result)
        return self._outcome(channel_id, unknown.tx_id, status, unknown.result)

    def _outcome(
        self, channel_id: str, tx_id: str, status: G.CommitStatusResponse, result: bytes
    ) -> Committed:
        """`Committed` for a VALID commit status, else `CommitFailed`."""
        self._observe(channel_id, status.block_number)
        code = code_name(status.result)
        if code != "VALID":
            raise CommitFailed(tx_id, code, status.block_number)
        return Committed(tx_id, status.block_number, status.tx_index, result)

    async def _endorse_as(self, deadline: float, call: _Call, creator: bytes) -> Endorsed:
        """Endorse the transaction `call` names with `creator`, failing over between gateways
        with the SAME proposal bytes (hence tx id); an error names the tx id."""
        channel_id, contract, function, args = call
        first = await self._current()
        proposal_bytes, tx_id = first.proposal_bytes(channel_id, contract, function, args, creator)
        try:
            _fits("proposal", proposal_bytes)
            endorsed = await self._attempt(
                deadline, lambda gw: gw.endorse_batched(channel_id, proposal_bytes)
            )
            payload = endorsed.prepared_payload
            _fits("transaction", payload)
        except Error as error:
            raise _naming(error, tx_id) from None
        return Endorsed(tx_id, payload, endorsed.result.payload, creator)

    async def _finish(self, deadline: float, submitted: Submitted) -> Committed:
        """The task of `submit_async`: order the endorsed transaction and wait for its commit.
        A creator reference refused (at admission, or at commit) ends it with that refusal,
        `submitted.reference_refused` set: the tx id never changes (`submit` redoes it)."""
        channel_id, refs = submitted.channel_id, self.references
        endorsed = submitted.endorsed
        try:
            status = await self._order(deadline, channel_id, endorsed, [])
        except CommitUnknown:
            raise  # (it may be ordered: never redone under a new tx id)
        except Error as error:
            if refs.refused_reason(channel_id, endorsed.creator, error.reason):
                submitted.reference_refused = True  # refused at admission: nothing changed
            raise _naming(error, endorsed.tx_id) from None
        submitted.final = status_of(endorsed.tx_id, status)
        if refs.refused_code(channel_id, endorsed.creator, status.result):
            submitted.reference_refused = True  # (nothing applied)
        else:
            refs.committed(channel_id, endorsed.creator, status.result)
        return self._outcome(channel_id, endorsed.tx_id, status, endorsed.result)

    async def _order(
        self, deadline: float, channel_id: str, endorsed: Endorsed, handed: list[bool]
    ) -> G.CommitStatusResponse:
        """Order the signed transaction `payload` and wait for its commit, failing over between
        gateways with the same envelope. `handed` gains an entry per order step tried.

        Once a step was tried, a failure is not "nothing changed": the gateway may have handed
        the envelope to an orderer before it failed or was too slow, and after a fail-over a
        refusal by the next gateway says nothing of what the first one did. So an `Unavailable`
        or `Overloaded` after a step (a lost gateway, the deadline; an orderer the gateway
        widened or failed over to, refusing for load after the first took the envelope — the
        gateway returns the last trouble, `orderer_choice`), a failure without an ErrorInfo
        reason (no node's refusal — every refusal names its reason — but, say, a stream broken
        as UNKNOWN), or any failure after a fail-over, is
        `CommitUnknown` (the tx id and payload, for `resume_submit`) — never a plain error the
        caller would answer by submitting again under a new tx id (review58: the same intent
        ordered twice). A refusal after an earlier step (a fail-over, a resume) may answer a
        copy that committed meanwhile — the gateway checks an envelope (its timestamp window,
        its reads) before it looks for its tx id — so the commit status is looked up first
        (`STATUS_PROBE_S`) and returned if the transaction committed.

        A creator reference refused in a step after a fail-over means this gateway's peer may
        only lag behind the block that registered it: the same envelope is offered again after
        `REFERENCE_LAG_S`, until the deadline (a copy already ordered is refused
        DUPLICATE_TX_ID or marked DUPLICATE_TXID; the commit status is the first's)."""

        tx_id, payload = endorsed.tx_id, endorsed.payload

        async def order_and_commit(gw: GatewayClient) -> G.CommitStatusResponse:
            handed.append(True)
            while True:  # (bounded by `_attempt`'s deadline)
                try:
                    return await gw.order_batched(channel_id, tx_id, payload)
                except grpc.aio.AioRpcError as exc:
                    error = from_rpc_error(exc)
                    if isinstance(error, AlreadyExists):
                        break  # already submitted (a retry, or the orderer took it): wait
                    if len(handed) < 2 or error.reason != UNKNOWN_REFERENCE:
                        raise
                await asyncio.sleep(REFERENCE_LAG_S)  # this gateway's peer catches up
            return await gw.commit_status(channel_id, tx_id)

        try:
            return await self._attempt(deadline, order_and_commit, share=False)
        except Error as error:
            if len(handed) > 1 and not isinstance(error, Unavailable):
                status = await self._probe_status(channel_id, tx_id)
                if status is not None:
                    return status  # a copy committed: the refusal answered a later one
            lost = isinstance(error, Unavailable | Overloaded)  # (taken by an orderer maybe)
            if handed and (lost or len(handed) > 1 or not error.reason):
                if error.reason == "MALFORMED":  # the channel takes no references (any more):
                    # later transactions go in full; this one may be ordered all the same
                    self.references.refused_reason(channel_id, endorsed.creator, error.reason)
                e = endorsed
                raise CommitUnknown(
                    error, channel_id, tx_id, e.payload, e.result, e.creator
                ) from None
            raise  # a node's refusal of the step (it carries its reason): nothing was ordered

    async def _probe_status(self, channel_id: str, tx_id: str) -> G.CommitStatusResponse | None:
        """The commit status of `tx_id` if a gateway knows it within `STATUS_PROBE_S` (a
        committed transaction is answered at once), else None."""
        try:
            return await self._status(channel_id, tx_id, STATUS_PROBE_S)
        except Error:
            return None

    async def _status(
        self, channel_id: str, tx_id: str, wait_s: float
    ) -> G.CommitStatusResponse | None:
        """`commit_status` on the wire's terms: None when no commit came within `wait_s` (a
        gateway's WAIT_TIMEOUT alike) from a gateway that is alive — its CommitStatus waits
        for the commit, so silence is "not yet" only if it answers a health check
        (`_alive`); one that does not, or is unreachable, is left for the next one (each gets
        at least `STATUS_RTT_S`; `Unavailable` when none answers). None is never final: the
        transaction may commit later. The gateway in use is not failed over for a status that
        is merely not there yet.

        A wait longer than the gateway call's own timeout (`GatewayClient.commit_status`: 60 s)
        ends that call with DEADLINE_EXCEEDED, which is no sign of a lost gateway: one that
        answers a health check is asked again for the rest of the wait (each query having spent
        at least `STATUS_RTT_S`: bounded by the wait), not failed over (review of sdk60b)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + max(wait_s, STATUS_RTT_S)
        last: Error = Unavailable("no gateway answered", code="UNAVAILABLE")
        tried = 0
        while tried < len(self.profile.gateways):  # (re-queries bounded by `end`: docstring)
            gateway = await self._current()
            asked = loop.time()
            self._busy[gateway] = self._busy.get(gateway, 0) + 1
            try:
                async with asyncio.timeout(max(STATUS_RTT_S, end - loop.time())):
                    status = await gateway.commit_status(channel_id, tx_id)
            except TimeoutError:
                if await self._alive(gateway):
                    return None  # it answers: the commit is not there (yet)
                last = Unavailable(
                    f"{self.gateway_name or 'the gateway'} answered neither the commit status"
                    " nor a health check",
                    code="DEADLINE",
                )
            except asyncio.CancelledError:
                if was_asked_to_cancel():
                    raise
                last = _cut_under()
            except grpc.aio.AioRpcError as exc:
                last = from_rpc_error(exc)
                if last.reason == "WAIT_TIMEOUT":
                    return None
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and await self._alive(gateway):
                    now = loop.time()  # (its call's own timeout, before `end`: docstring)
                    if now - asked >= STATUS_RTT_S and end - now >= STATUS_RTT_S:
                        continue  # the same gateway, for the rest of the wait
                    return None
                if not isinstance(last, Unavailable):
                    raise last from None
            else:
                self._observe(channel_id, status.block_number)
                return status
            finally:
                self._release(gateway)
            tried += 1
            await self._fail_over(gateway)
        raise last

    async def _alive(self, gateway: GatewayClient) -> bool:
        """Does `gateway` answer a health check (SERVING) within `ALIVE_TIMEOUT_S`?"""
        try:
            reply = await health_pb2_grpc.HealthStub(gateway.channel).Check(
                health_pb2.HealthCheckRequest(), timeout=ALIVE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return False
        except asyncio.CancelledError:
            if was_asked_to_cancel():
                raise
            return False  # (its connection was closed by another call's fail-over)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def evaluate(
        self, channel_id: str, contract: str, function: str, *args: str | bytes
    ) -> bytes:
        """A read-only call on a gateway's peer (at least at the block this client last saw)."""
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        result = await self._attempt(
            deadline, lambda gw: gw.evaluate(channel_id, contract, function, *args)
        )
        return bytes(result.payload)

    async def blocks(
        self,
        channel_id: str,
        start_block: int = 0,
        filters: Sequence[EventFilter] = (),
        private_transactions: bool = False,
    ) -> AsyncGenerator[Block, None]:
        """Committed blocks of `channel_id` from `start_block` on, as they commit.

        A gateway that becomes unreachable (stopped, restarted, killed) is left for the next one
        of the profile, dialled again after a jittered backoff when all were tried, and the
        stream resumes after the last block delivered: never a block twice, none skipped. It
        gives up (`Unavailable`) only after `deadline_s` without any gateway answering. The
        stream counts as a call in flight on its gateway (`_busy`: a gateway left while slow
        is not closed under it), and a stream cancelled under the consumer's task (its
        channel closed by another call's fail-over, `aio/tasks.was_asked_to_cancel`) is a lost
        gateway like any other: it resumes on the next.

        With `filters`, the node reports only the VALID transactions with a wanted event (and,
        with `private_transactions`, every VALID private transaction); every block still comes,
        possibly empty, and each transaction keeps its index in the block."""
        if start_block < 0:
            raise InvalidRequest(
                f"start_block {start_block} is negative", "INVALID_FIELD", "INVALID_ARGUMENT"
            )
        wire = [G.EventFilter(contract=f.contract, names=f.names) for f in filters]
        loop = asyncio.get_running_loop()
        next_block = start_block
        failures = 0
        since = loop.time()  # last moment a gateway answered
        while True:
            try:
                gateway = await self._current()
                self._busy[gateway] = self._busy.get(gateway, 0) + 1
                try:
                    events = gateway.events(channel_id, next_block, wire, private_transactions)
                    async with aclosing(events):  # the caller stopping closes the stream
                        async for response in events:
                            failures, since = 0, loop.time()
                            block = block_of(channel_id, response)
                            self._observe(channel_id, block.number)
                            next_block = block.number + 1
                            yield block
                finally:
                    self._release(gateway)
                return
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                if not isinstance(error, Unavailable):
                    raise error from None
                await self._fail_over(gateway)
            except asyncio.CancelledError:
                if was_asked_to_cancel():
                    raise  # (the consumer's own cancel)
                await self._fail_over(gateway)  # cut under it: resume on the next gateway
            except Unavailable as error:  # no gateway has an address (all stopped)
                if loop.time() - since >= self.deadline_s:
                    raise
            if loop.time() - since >= self.deadline_s:
                raise Unavailable(
                    f"no gateway answered for {self.deadline_s} s", code="UNAVAILABLE"
                )
            failures += 1
            if failures >= len(self.profile.gateways):
                await asyncio.sleep(self.reconnect.delay_s(failures))

    async def private(self) -> PrivacyClient:
        """The privacy client of the gateway in use (its node's privacy manager): private
        transactions are sent through, and read from, the client's own organisation's node."""
        gateway = await self._current()
        privacy = self._privacy.get(id(gateway))
        if privacy is None:
            self._privacy = {
                id(gateway): (privacy := PrivacyClient(gateway, pending_deadline_s=self.deadline_s))
            }
        return privacy

    async def submit_private(
        self,
        channel_id: str,
        recipients: Sequence[str],
        contract: str,
        function: str,
        *args: str | bytes,
    ) -> Committed:
        """A private transaction (Quorum/Tessera style): the invocation goes encrypted to the
        `recipients` organisations only, the ledger orders just its payload hash; returns once
        that committed VALID (its payload is the hash). A recipient that is down gets the
        payload by its node's queued delivery; its agreement is waited for up to `deadline_s`,
        then `AgreementPending` (nothing ordered; `resume_private` finishes the same
        transaction)."""
        privacy = await self.private()
        try:
            done = await privacy.submit_private(channel_id, recipients, contract, function, *args)
        except PrivateAgreementPending as pending:
            raise _agreement_pending(pending) from None
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return self._private_outcome(channel_id, done)

    async def resume_private(self, pending: AgreementPending) -> Committed:
        """Finish the private transaction of an `AgreementPending` (from `submit_private` of
        this client): collect its agreements again, waiting up to `deadline_s`, and submit it
        under the same tx id — the payload is not sent again. Raises `AgreementPending` again
        if a recipient still has not agreed."""
        if pending.nonce is None:
            raise ValueError("this AgreementPending names no nonce: it was not this SDK's")
        privacy = await self.private()
        try:
            done = await privacy.resume_private(
                pending.channel_id,
                pending.payload_hash,
                pending.nonce,
                self.deadline_s,
                pending.creator,
            )
        except PrivateAgreementPending as still:
            raise _agreement_pending(still) from None
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return self._private_outcome(pending.channel_id, done)

    async def abandon_private(self, pending: AgreementPending) -> int:
        """Give up the private transaction of an `AgreementPending` instead of resuming it: its
        node stops pushing the payload to the recipients still owed it (ABANDONED in the
        sender's view, `dltmw private pending`); nothing is ordered. Returns how many
        deliveries were given up; `NotFound` when none was still owed (every recipient got it:
        resume it, or leave it unordered)."""
        privacy = await self.private()
        try:
            return await privacy.abandon_delivery(pending.channel_id, pending.payload_hash)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    def _private_outcome(self, channel_id: str, done: PrivateSubmitted) -> Committed:
        """The typed result of a private transaction's commit (its payload hash as result)."""
        return self._outcome(channel_id, done.tx_id, done.status, done.payload_hash)

    async def receive_private(self, channel_id: str, payload_hash: bytes) -> bytes | None:
        """The plaintext of a private payload if this client's organisation is a recipient;
        None if it is not (its node holds no copy: it sees only the hash on the ledger) — or
        if a payload owed to its node has not been delivered yet (ask again). `PayloadPurged`
        (the purge's tx id and block) when its node held it and a purge removed it: it will
        never be readable there again."""
        privacy = await self.private()
        try:
            return await privacy.receive(channel_id, payload_hash)
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            if isinstance(error, NotFound | PermissionDenied):
                return None
            raise error from None

    async def _attempt(
        self,
        deadline: float,
        call: Callable[[GatewayClient], Awaitable[T]],
        share: bool = True,
    ) -> T:
        """`call` on the gateway in use; on `Unavailable`, once on each other gateway.

        The per-attempt budget (`share`): what is left of the caller's deadline is shared
        equally by the gateways not yet tried in this call (at least `ATTEMPT_MIN_S` each) —
        with two, the first gets half and the second what is left — so a gateway that hangs
        (a stalled process, a network that drops silently) cannot spend the whole deadline and
        leave the others none. A slow gateway is then left at its share like a lost one (the
        step is repeated on the next with the same bytes, hence tx id), but not closed while
        other calls are in flight on it (`_fail_over`): a slow gateway may be healthy. The
        order step goes without a share (`_order`): it includes the wait for the commit,
        which a healthy gateway may take long to answer, and after it a fail-over is
        `CommitUnknown` anyway.

        A call cancelled under this task (its channel closed by another call's fail-over:
        `aio/tasks.py`'s stray cancellation, the task itself not cancelled) is `Unavailable`."""
        loop = asyncio.get_running_loop()
        last: Error | None = None
        count = len(self.profile.gateways)
        for tried in range(count):
            if loop.time() >= deadline:
                break
            gateway = await self._current()
            left_s = deadline - loop.time()
            budget_s = max(ATTEMPT_MIN_S, left_s / (count - tried)) if share else left_s
            slow = False
            self._busy[gateway] = self._busy.get(gateway, 0) + 1
            try:  # (a timeout scope, not `wait_for`: no extra task and loop turn per call)
                async with asyncio.timeout(budget_s):
                    return await call(gateway)
            except grpc.aio.AioRpcError as exc:
                last = from_rpc_error(exc)
            except TimeoutError:
                slow = True
                last = Unavailable(
                    f"no answer within {budget_s:.2f} s, {self.gateway_name or 'the gateway'}'s"
                    f" share of the {self.deadline_s} s deadline",
                    code="DEADLINE",
                )
            except asyncio.CancelledError:
                if was_asked_to_cancel():
                    raise
                last = _cut_under()
            finally:
                self._release(gateway)
            if not last.retryable or not isinstance(last, Unavailable):
                raise last from None
            if slow and loop.time() >= deadline:
                break  # nothing left to try elsewhere: a slow gateway is not left for it
            await self._fail_over(gateway, slow=slow)
        raise last or Unavailable("deadline passed before the call", code="DEADLINE")

    def _release(self, gateway: GatewayClient) -> None:
        """One call in flight on `gateway` ended; close it if it was left while slow and this
        was its last call (`_fail_over`). The close runs apart (`_close_apart`), not in the
        caller's task: this is called from `finally` blocks, where a close awaited would add
        its time to an unrelated call, replace its result by the close's failure, and — the
        caller cancelled during it — leak the connection (in neither `_left` nor `_gateway`)."""
        busy = self._busy[gateway] - 1
        if busy:
            self._busy[gateway] = busy
            return
        del self._busy[gateway]
        if gateway in self._left:
            self._close_apart(gateway, self._left.pop(gateway))

    def _close_apart(self, gateway: GatewayClient, privacy: PrivacyClient | None) -> None:
        """Close `gateway` in a task of this client (kept until it ends; `close()` waits for
        it); a failure is logged — the connection was left already, nothing waits on it."""
        closer = asyncio.create_task(_close(gateway, privacy), name=f"close of {gateway!r}")
        self._closers.add(closer)
        closer.add_done_callback(self._closed_apart)

    def _closed_apart(self, closer: asyncio.Task[None]) -> None:
        self._closers.discard(closer)
        if not closer.cancelled() and (error := closer.exception()) is not None:
            logger.warning("closing a gateway left while slow failed: %r", error)

    async def _current(self) -> GatewayClient:
        """The gateway in use, connecting to the next reachable one if there is none.

        The lock serialises connecting only: a gateway in use is returned without it (three
        times per transaction, each an acquire and release on the one event loop)."""
        gateway = self._gateway
        if gateway is not None:
            return gateway
        if self._closing:  # a call cut under it by `close()` must not dial a gateway nobody closes
            raise _closed()
        async with self._lock:
            if self._gateway is not None:
                return self._gateway
            if self._closing:
                raise _closed()
            problems: list[str] = []
            for _ in range(len(self.profile.gateways)):
                endpoint = self.profile.gateways[self._next % len(self.profile.gateways)]
                self._next += 1
                address = await _address(endpoint)
                if address is None:
                    problems.append(f"{endpoint.name}: no published address")
                    continue
                channel = self._channels(
                    address, endpoint.name, self._tls, MAX_MESSAGE_BYTES, extra=CHANNEL_OPTIONS
                )
                gateway = GatewayClient(
                    self._signer,
                    channel,
                    self._pipelined,
                    signing=self.signing,
                    references=self.references,
                )
                for channel_id, block in self._seen.items():
                    gateway.observe_block(channel_id, block)
                self._gateway, self.gateway_name = gateway, endpoint.name
                self.gateway_address = address
                return gateway
            raise Unavailable("no gateway reachable: " + "; ".join(problems), code="UNAVAILABLE")

    async def _fail_over(self, failed: GatewayClient, slow: bool = False) -> None:
        """Leave `failed` (if still in use) for the next gateway of the profile. A gateway
        left because it was `slow` (a share's timeout, `_attempt`) may be healthy: with other
        calls in flight on it (its shared Transact stream), it is closed only when the last of
        them ends (`_release`), not under them."""
        async with self._lock:
            if self._gateway is not failed:
                return
            for channel_id in list(self._seen):
                self._observe(channel_id, failed.seen_block(channel_id))
            self._gateway = None
            privacy = self._privacy.pop(id(failed), None)
            if slow and self._busy.get(failed):
                self._left[failed] = privacy
                return
        await _close(failed, privacy)

    def _observe(self, channel_id: str, block: int) -> None:
        if block > self._seen.get(channel_id, 0):
            self._seen[channel_id] = block


def _running(tasks: set[asyncio.Task[T]]) -> set[asyncio.Task[T]]:
    """The tasks of `tasks` not yet done (a task done in this turn is still in its set: its
    done-callback that removes it runs in a later turn)."""
    return {task for task in tasks if not task.done()}


def _naming(error: Error, tx_id: str) -> Error:
    """`error`, naming the transaction it happened to in its metadata (`tx_id`): a caller
    that retries by a new `submit` can still say which proposal failed, and one that lost the
    outcome knows what to look for (`Client.commit_status`)."""
    error.metadata.setdefault("tx_id", tx_id)
    return error


async def _close(gateway: GatewayClient, privacy: PrivacyClient | None) -> None:
    """Close a gateway connection (through its privacy client if it has one)."""
    await (privacy.close() if privacy is not None else gateway.close())


def _cut_under() -> Unavailable:
    """A call of the gateway cancelled although its task was not (`aio/tasks.py`: another
    call's fail-over closed the channel under it): the gateway is taken as lost."""
    return Unavailable(
        "the call was cancelled under this task (its channel closed)", code="CANCELLED"
    )


def _closed() -> InvalidRequest:
    """What a transaction started after `Client.close()` raises (nothing was sent)."""
    return InvalidRequest("the client was closed", reason="CLOSED", code="FAILED_PRECONDITION")


async def _waited(submitted: Submitted) -> Committed:
    """`submitted.committed()` for `Client.submit`; a cancelled wait (the caller's own timeout)
    is logged with the tx id, which the caller loses with its frame: the transaction goes on,
    and `Submitted` logs its outcome when it ends (nobody waits for it any more)."""
    try:
        return await submitted.committed()
    except asyncio.CancelledError:
        if not submitted.done():
            logger.warning(
                "submit of transaction %s on %s cancelled after it was endorsed: it goes on"
                " (Client.commit_status names its fate)",
                submitted.tx_id,
                submitted.channel_id,
            )
        raise


def _fits(what: str, data: bytes) -> None:
    """Refuse, before anything is sent, an item the gateway connection could not carry: grpc's
    asyncio client reports an over-size write as INTERNAL "Internal error from Core", which
    the SDK takes for a lost stream (`errors._LOST_STREAM`) and would fail over on, breaking
    each gateway's shared Transact stream (review58)."""
    if len(data) > MAX_MESSAGE_BYTES - FRAMING_BYTES:
        raise LimitExceeded(
            f"the {what} is {len(data)} bytes; at most {MAX_MESSAGE_BYTES - FRAMING_BYTES} fit"
            " a gateway request",
            reason="MESSAGE_TOO_LARGE",
            code="RESOURCE_EXHAUSTED",
        )


async def _address(endpoint: GatewayEndpoint) -> str | None:
    if endpoint.address:
        return endpoint.address
    assert endpoint.address_book is not None  # the profile's validator guarantees one
    return await AddressBook(endpoint.address_book).resolve(endpoint.name, RESOLVE_TIMEOUT_S)


def _agreement_pending(pending: PrivateAgreementPending) -> AgreementPending:
    """The SDK's typed `AgreementPending` for the client's error (same transaction, nodes)."""
    error = from_rpc_error(pending)
    return AgreementPending(
        error.message,
        error.metadata,
        pending.channel_id,
        pending.payload_hash,
        pending.tx_id,
        pending.nonce,
        pending.creator,
    )
