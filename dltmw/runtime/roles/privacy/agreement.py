"""Agreement before commit, the runtime side: execute a held payload and sign, collect from
every recipient (docs/privacy.md "Agreement before commit"; the rule: `core/privacy/agreement.py`).

* `agree` / `agree_many` (a recipient, for the Agree / AgreeBatch node RPCs): open the payload and
  run its invocation on this node's committed private state WITHOUT writing, both on the store's
  reader thread (decryption off the event loop), and sign AGREE if the (pre-state, delta) hashes
  equal the requester's proposal, else DISAGREE with this node's own hashes. The payloads are
  read and run inside ONE read transaction (`PrivateStore.snapshot`), so a batch sees one
  committed state, as it did between the executor's block steps on the writer thread; but it
  no longer waits for the writer's group commits (their fsyncs), which under load were most of
  a run's time (benchmarks/RESULTS.md, branch priv7).
* `collect` (the client's node, CollectAgreements): run and sign its own AGREE, then ask every
  other recipient at once under ONE deadline. The asks to one recipient are gathered
  (`aio/coalesce.Coalescer`) into AgreeBatch calls: one signature, one verification and one call
  per batch instead of per transaction and recipient. Under ALL_RECIPIENTS a recipient that does not
  answer in time (or is down: its delivery is queued, `private_channel.py`) fails the collection
  with PRIVATE_AGREEMENT_TIMEOUT naming it (metadata `nodes`); nothing is ordered, and the
  client collects again with backoff until the queue delivered and it agreed
  (`client/privacy.PrivacyClient.collect_until`). Under a policy expression
  (`core/privacy/agreement_policy.py`) it ends as soon as the answers satisfy the policy and
  the rest answered, failed or had a short grace, and fails at once when the policy can no
  longer be met.
* On the Push (`PushBatch.agree_tx_ids`, branch priv8): a client that asks the agreements in its
  SendBatch has them asked on the Push that delivers the payload. Each recipient runs the payload
  once it stored it and answers the Push with its signed AGREE on its own hashes (`agree_pushed`:
  runs and signatures shared with the concurrent pushes and collections through the channel's
  coalescers), while the sender runs its own as soon as its own
  store committed (`Outgoing.stored`). The first attempt of such a collection takes those
  answers and asks by AgreeBatch only a recipient that gave none (an older release, a refusal,
  a down recipient whose delivery is queued); an answer on other hashes is that recipient's
  disagreement, and the next attempt asks by AgreeBatch as before. Saved per recipient and
  batch: one AgreeBatch round trip, its request signature and its verification.

Nothing here is trusted by the commit rule: every node re-checks every signature and hash.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from dltmw.aio.clock import utc_now
from dltmw.aio.coalesce import Coalescer
from dltmw.core.contract import Contract, StateReader
from dltmw.core.errors import ClientError, DltmwError, TransientError
from dltmw.core.policy import PolicyResult
from dltmw.core.privacy import agreement as ag
from dltmw.core.privacy import agreement_batch, conflict
from dltmw.core.privacy.agreement_policy import EXPRESSION, policy_result, requires_agreements
from dltmw.core.privacy.envelope import PayloadError, PrivacyKey, open_payload, recipients_of
from dltmw.core.privacy.execution import PrivateOutcome, execute
from dltmw.core.privacy.groups import Parties, execute_group, parties
from dltmw.core.privacy.reuse import PriorRun, prior_run
from dltmw.core.rwset import Version
from dltmw.ledger.private_store import PrivateTxn
from dltmw.runtime.context import NodeContext
from dltmw.runtime.metrics import reason_name
from dltmw.runtime.roles.privacy.links import forget_if_gone
from dltmw.runtime.roles.privacy.private_channel import Outgoing, PrivateChannel
from dltmw.runtime.roles.privacy.redelivery import GIVEN_UP_NAMES, Redelivery
from dltmw.v1 import (
    errors_pb2,
    privacy_manager_service_pb2_grpc,
    private_agreement_pb2,
    private_payload_pb2,
)

logger = logging.getLogger(__name__)
A = private_agreement_pb2
R = errors_pb2
AGREE_TIMEOUT_S = 10.0  # one deadline for every recipient of one collection
# Under a policy expression, once the AGREEs in hand satisfy it, the others get this much longer
# (a slow but live recipient is still included; a down one is not waited for).
SATISFIED_GRACE_S = 0.5
# A recipient (or this node) whose executor has not yet run the latest committed private
# transactions executes on an older pre-state and disagrees for that reason alone; under load
# that is common. A collection that is not unanimous is therefore run again, a bounded number
# of times with growing pauses (~3 s in all), before the disagreement is returned; a party whose
# state really differs (tampered) disagrees every time.
COLLECT_ATTEMPTS = 6
COLLECT_BACKOFF_S = 0.1
ContractOf = Callable[[str], Contract | None]
Hashed = conflict.Hashed
# a run's ((pre-state hash, delta hash), recipient keys, hashed keys, sender key)
Ran = tuple[tuple[bytes, bytes], list[bytes], Hashed, bytes]
# Asks to one recipient leave together (aio/coalesce.py): at most this many per AgreeBatch call,
# this many calls in flight per recipient (a slow batch does not hold up the next).
ASK_BATCH_MAX = 256
ASK_IN_FLIGHT = 4
# What a recipient of an older release answers for a payload it does not hold (no
# PAYLOAD_NOT_HELD yet): NOT_AUTHORIZED with exactly these words (its other NOT_AUTHORIZED
# refusals, e.g. "requester is not a recipient", say something else and queue nothing).
LEGACY_NOT_HELD = "this node does not hold that payload"
# (the PrivateChannel, its own runs' coalescer, its own agreements' signing coalescer)
_Runners = tuple[PrivateChannel, "Coalescer[bytes, Ran]", "Coalescer[bytes, A.PrivateAgreement]"]


class Agreements:
    """Signs this node's agreements and collects the other recipients'."""

    def __init__(self, ctx: NodeContext, key: PrivacyKey) -> None:
        self._ctx = ctx
        self._key = key
        # (channel, recipient node) -> its asks gathered into AgreeBatch calls
        self._batchers: dict[tuple[str, str], Coalescer[A.AgreeQuery, A.PrivateAgreement]] = {}
        # channel -> (its PrivateChannel, this node's own runs gathered into one hop, and its
        # own agreements gathered under one signature: `_sign_all`)
        self._runners: dict[str, _Runners] = {}

    async def _run(self, channel: PrivateChannel, contract_of: ContractOf, digest: bytes) -> Ran:
        """((pre-state hash, delta hash), recipient keys, the keys read and written as hashes,
        the sender's key) of a held payload, opened and run on the store's reader thread;
        concurrent runs of one channel share one read transaction and one hop (`_run_many`)."""
        return await (await self._runners_of(channel, contract_of))[1].call(digest)

    async def _runners_of(self, channel: PrivateChannel, contract_of: ContractOf) -> _Runners:
        """The channel's coalescers of own runs and own signatures (made on first use)."""
        current = self._runners.get(channel.channel_id)
        if current is None or current[0] is not channel:
            if current is not None:  # the channel was opened again: the old one's runs end
                await current[1].close()
                await current[2].close()
            runner = Coalescer(
                partial(self._run_many, channel, contract_of),
                batch_max=ASK_BATCH_MAX,
                name=f"agree-run-{channel.channel_id}",
                owner=self._ctx.tasks,  # a batching task that dies stops the node
            )
            signer: Coalescer[bytes, A.PrivateAgreement] = Coalescer(
                partial(self._sign_many, channel),
                batch_max=ASK_BATCH_MAX,
                name=f"agree-sign-{channel.channel_id}",
                owner=self._ctx.tasks,
            )
            current = self._runners[channel.channel_id] = (channel, runner, signer)
        return current

    async def _run_many(
        self, channel: PrivateChannel, contract_of: ContractOf, digests: Sequence[bytes]
    ) -> list[Ran | BaseException]:
        """`_run` of several payloads: read and run in one read transaction, one hop to the
        store's reader thread; a payload refused (not held, unreadable) fails only its own run.
        Each run is kept for the executor's commit (`prior_runs.py`), on the loop."""
        facts = parties(channel.view.config)  # once per batch: O(channel peers) to build
        kept: list[tuple[bytes, PriorRun | None]] = []

        def run_all(state: PrivateTxn) -> list[Ran | BaseException]:
            held = state.held(list(set(digests)))
            out: list[Ran | BaseException] = []
            for digest in digests:
                try:
                    raw = held.get(digest)
                    ran, prior = self._open_and_run(contract_of, digest, raw, facts, state)
                    out.append(ran)
                    kept.append((digest, prior))
                except ClientError as exc:
                    out.append(exc)
            return out

        ran = await channel.store.snapshot(run_all)
        for digest, prior in kept:
            channel.prior_runs.keep(digest, prior)
        return ran

    def _open_and_run(
        self,
        contract_of: ContractOf,
        digest: bytes,
        raw: bytes | None,
        facts: Parties,
        state: PrivateTxn,
    ) -> tuple[Ran, PriorRun | None]:
        """`_run` on the store's reader thread (blocking): decrypt, then execute on `state`
        without writing; with the run as kept for the commit (None: not reusable)."""
        if raw is None:
            raise ClientError(R.ERROR_REASON_PAYLOAD_NOT_HELD, LEGACY_NOT_HELD)
        try:
            payload = private_payload_pb2.EncryptedPayload.FromString(raw)
            plaintext = open_payload(payload, self._key, digest)
            invocation = private_payload_pb2.PrivateInvocation.FromString(plaintext)
        except PayloadError as exc:
            raise ClientError(exc.reason, f"payload {digest.hex()} refused: {exc}") from exc
        except DecodeError as exc:
            raise ClientError(R.ERROR_REASON_MALFORMED, "payload is not an invocation") from exc
        keys = recipients_of(payload)
        outcome, hashed = _hashes(
            contract_of,
            invocation,
            state,
            keys,
            facts,
            payload.sender_public_key,
        )
        prior = prior_run(raw, invocation, contract_of(invocation.contract), outcome)
        hashes = (outcome.pre_state_hash, outcome.state_hash)
        return (hashes, keys, hashed, payload.sender_public_key), prior

    def _sign_all(
        self, channel: PrivateChannel, bodies: Sequence[bytes]
    ) -> list[A.PrivateAgreement]:
        """This node's signed agreements over `bodies`, one signature per batch where the
        channel allows it (`core/privacy/agreement_batch.py`)."""
        batches = channel.view.config.private_agreement_batches
        return agreement_batch.sign(self._ctx.signer, channel.view.membership, bodies, batches)

    async def _sign_many(
        self, channel: PrivateChannel, bodies: Sequence[bytes]
    ) -> list[A.PrivateAgreement | BaseException]:
        """`_sign_all` of this node's own agreements of concurrent collections (a Coalescer)."""
        return list(self._sign_all(channel, bodies))

    async def agree(
        self,
        channel: PrivateChannel,
        contract_of: ContractOf,
        query: A.AgreeQuery,
        requester_key: bytes,
    ) -> A.PrivateAgreement:
        """This node's signed verdict on the requester's proposal (Agree)."""
        ran = await self._run(channel, contract_of, query.payload_hash)
        return self._sign_all(channel, [self._verdict(channel, query, ran, requester_key)])[0]

    async def agree_many(
        self,
        channel: PrivateChannel,
        contract_of: ContractOf,
        queries: Sequence[A.AgreeQuery],
        requester_key: bytes,
    ) -> list[A.AgreeResult]:
        """`agree` for a batch (AgreeBatch): the payloads read in one store call, opened and run
        in one hop to the store's thread (one committed state for the batch, as for one item),
        signed together (`_sign_all`); an item refused (not held, not a recipient) is refused
        alone."""
        ran = await self._run_many(channel, contract_of, [q.payload_hash for q in queries])
        outcomes: list[bytes | ClientError] = []  # a body to sign, or the item's refusal
        for query, one in zip(queries, ran, strict=True):
            try:
                if isinstance(one, BaseException):
                    raise one
                outcomes.append(self._verdict(channel, query, one, requester_key))
            except ClientError as exc:
                outcomes.append(exc)
        bodies = [o for o in outcomes if isinstance(o, bytes)]
        return _results(outcomes, self._sign_all(channel, bodies))

    async def agree_pushed(
        self,
        channel: PrivateChannel,
        contract_of: ContractOf,
        asked: Sequence[tuple[bytes, str]],
        requester_key: bytes,
    ) -> list[A.AgreeResult]:
        """This node's agreements on (payload hash, tx_id) pairs just pushed here and stored
        (`PushBatch.agree_tx_ids`): each run on the committed private state as for AgreeBatch,
        but with no proposal to compare with — the sender runs its own at the same time — so
        each is an AGREE on this node's OWN hashes (the sender compares; a mismatch is this
        node's disagreement there). The runs and the signatures go through the channel's
        coalescers, shared with the concurrent pushes of every sender and this node's own
        collections: one hop and ONE signature for all that is ready at once. Signed per push
        instead, a transaction with 10 recipients carried ~3.1 distinct signatures for every
        node to verify against ~2.5 from AgreeBatch's coalesced answers (benchmarks/RESULTS.md,
        branch priv8)."""
        if not asked or not requires_agreements(channel.view.config):
            return []
        _, runner, signer = await self._runners_of(channel, contract_of)
        # Futures, not a coroutine (so a task) per item: gather wraps each coroutine in a task.
        ran = await asyncio.gather(*(runner.submit(d) for d, _ in asked), return_exceptions=True)
        outcomes: list[bytes | ClientError] = []
        for (digest, tx_id), one in zip(asked, ran, strict=True):
            try:
                if isinstance(one, BaseException):
                    raise one  # a refusal is this item's; anything else is this node's fault
                own, keys, hashed, sender = one
                if not requester_key or requester_key not in keys:
                    raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "requester is not a recipient")
                outcomes.append(
                    ag.agreement_body(
                        channel.channel_id, tx_id, digest, own, keys, ag.AGREE, hashed, sender
                    )
                )
            except ClientError as exc:
                outcomes.append(exc)
        bodies = [o for o in outcomes if isinstance(o, bytes)]
        return _results(outcomes, await asyncio.gather(*(signer.submit(b) for b in bodies)))

    def _verdict(
        self, channel: PrivateChannel, query: A.AgreeQuery, ran: Ran, requester_key: bytes
    ) -> bytes:
        """AGREE if this node's run gives the requester's hashes, else DISAGREE: the body to
        sign (`_sign_all`)."""
        own, keys, hashed, sender = ran
        if not requester_key or requester_key not in keys:
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, "requester is not a recipient")
        verdict = ag.verdict_on(own, (query.pre_state_hash, query.delta_hash))
        if verdict == ag.DISAGREE:
            requester = channel.node_of_key(requester_key)
            logger.warning(
                "disagreeing with %s on payload %s (tx %s): this node's private state gives "
                "another result",
                requester.node_id if requester is not None else "?",
                query.payload_hash.hex(),
                query.tx_id,
            )
        return ag.agreement_body(
            channel.channel_id, query.tx_id, query.payload_hash, own, keys, verdict, hashed, sender
        )

    async def collect_many(
        self,
        channel: PrivateChannel,
        contract_of: ContractOf,
        items: Sequence[tuple[bytes, str]],
        sending: Sequence[Outgoing | None] = (),
    ) -> list[A.CollectAgreementsResult]:
        """`collect` for each (payload hash, tx_id) of a client's batch, all at once (their own
        runs and their asks to each recipient are batched below); an item that fails (a
        recipient did not answer, a payload not sent here, its send failed) fails alone.
        `sending`: the items' sends in progress, when they are sent in the same call."""
        sends = list(sending) or [None] * len(items)
        outcomes = await asyncio.gather(
            *(
                self.collect(channel, contract_of, digest, tx_id, send)
                for (digest, tx_id), send in zip(items, sends, strict=True)
            ),
            return_exceptions=True,
        )
        results: list[A.CollectAgreementsResult] = []
        for outcome in outcomes:
            if isinstance(outcome, DltmwError):
                results.append(
                    A.CollectAgreementsResult(reason=outcome.reason, message=outcome.message)  # type: ignore[arg-type]
                )
            elif isinstance(outcome, BaseException):
                raise outcome  # not a refusal: a fault of this node (surfaced, never an answer)
            else:
                results.append(A.CollectAgreementsResult(response=outcome))
        return results

    async def collect(
        self,
        channel: PrivateChannel,
        contract_of: ContractOf,
        digest: bytes,
        tx_id: str,
        sending: Outgoing | None = None,
    ) -> A.CollectAgreementsResponse:
        """Every recipient's signed agreement, this node's first (CollectAgreements); run again
        while a party lags (see COLLECT_ATTEMPTS), so a disagreement returned is a lasting one.
        With `sending` (the payload's send in progress, its Push asking the agreements) the
        first attempt runs as soon as the payload is stored here and takes each recipient's
        answer to the Push (`_pushed`); a later attempt asks by AgreeBatch, as without."""
        if not requires_agreements(channel.view.config):
            return A.CollectAgreementsResponse(agreed=True)  # the channel requires none
        if sending is None:  # (a payload being sent now has no delivery given up)
            await _refuse_given_up(channel, digest)
        out = A.CollectAgreementsResponse()
        for attempt in range(COLLECT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(COLLECT_BACKOFF_S * 2 ** (attempt - 1))
            first = sending if attempt == 0 else None
            out = await self._collect_once(channel, contract_of, digest, tx_id, first)
            if out.agreed:
                break
        return out

    async def _collect_once(
        self,
        channel: PrivateChannel,
        contract_of: ContractOf,
        digest: bytes,
        tx_id: str,
        sending: Outgoing | None,
    ) -> A.CollectAgreementsResponse:
        if sending is not None:  # the own run reads the payload: once stored here, no sooner
            either: set[asyncio.Future[Any]] = {sending.stored, sending.done}
            await asyncio.wait(either, return_when=FIRST_COMPLETED)
            if sending.done.done():
                sending.done.result()  # raises when the send failed (so does the collection)
        try:
            own, keys, hashed, sender = await self._run(channel, contract_of, digest)
        except ClientError as exc:
            if exc.reason != R.ERROR_REASON_PAYLOAD_NOT_HELD:
                raise
            # CollectAgreements is a client RPC: a payload not held here is one this node did
            # not send, NOT_AUTHORIZED as before (PAYLOAD_NOT_HELD is the node-to-node answer)
            raise ClientError(R.ERROR_REASON_NOT_AUTHORIZED, exc.message) from exc
        body = ag.agreement_body(
            channel.channel_id, tx_id, digest, own, keys, ag.AGREE, hashed, sender
        )
        # Signed with the concurrent collections' own agreements (one signature per batch).
        mine = await (await self._runners_of(channel, contract_of))[2].call(body)
        pushed: dict[bytes, tuple[A.PrivateAgreement, A.PrivateAgreementBody]] = {}
        if sending is not None:
            await sending.done  # every recipient answered its Push (raises: the send failed)
            pushed = _pushed(channel, sending, tx_id, digest)
        others = [k for k in keys if k != self._key.public_key]
        if pushed and all(k in pushed for k in others):
            return _answered_on_push(mine, [pushed[k] for k in others], own)
        asks: dict[asyncio.Future[A.PrivateAgreement], bytes] = {}
        loop = asyncio.get_running_loop()
        for k in others:
            if k in pushed:  # answered on the Push: no AgreeBatch to this recipient
                answered: asyncio.Future[A.PrivateAgreement] = loop.create_future()
                answered.set_result(pushed[k][0])
                asks[answered] = k
            else:
                asks[asyncio.ensure_future(self._ask(channel, k, digest, tx_id, own))] = k
        try:
            theirs, missing = await self._gather(channel, keys, sender, own, asks)
        finally:
            for task in asks:
                task.cancel()
            await asyncio.gather(*asks, return_exceptions=True)
        out = A.CollectAgreementsResponse(agreements=[mine, *theirs])
        for key in missing:
            node = channel.node_of_key(key)
            out.unanswered.append(node.node_id if node is not None else key.hex()[:16])
        bodies = [A.PrivateAgreementBody.FromString(a.body) for a in out.agreements]
        out.agreed = all(
            b.verdict == ag.AGREE and (b.pre_state_hash, b.delta_hash) == own for b in bodies
        )
        return out

    async def _gather(
        self,
        channel: PrivateChannel,
        keys: list[bytes],
        sender: bytes,
        own: tuple[bytes, bytes],
        asks: dict[asyncio.Future[A.PrivateAgreement], bytes],
    ) -> tuple[list[A.PrivateAgreement], list[bytes]]:
        """The answers, in recipient order, and the recipients left out. Under ALL_RECIPIENTS
        every recipient must answer within AGREE_TIMEOUT_S (the first failure fails it). Under a
        policy expression the collection ends as soon as every recipient answered or failed
        (a down recipient fails fast), or the policy is met and SATISFIED_GRACE_S passed for the
        rest, or it can no longer be met (PRIVATE_AGREEMENT_TIMEOUT naming who is missing)."""
        config = channel.view.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + AGREE_TIMEOUT_S
        answers: dict[bytes, A.PrivateAgreement] = {}
        failures: dict[bytes, BaseException] = {}
        pending = set(asks)
        expression = config.private_agreement == EXPRESSION
        while pending:
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, deadline - loop.time()), return_when=FIRST_COMPLETED
            )
            if not done:
                break
            for task in done:
                error = task.exception()
                if error is None:
                    answers[asks[task]] = task.result()
                elif not expression:
                    raise error
                else:
                    failures[asks[task]] = error
            if not expression:
                continue  # every recipient's answer is awaited
            agreed = {self._key.public_key} | {k for k, a in answers.items() if _agrees(a, own)}
            outstanding = {asks[t] for t in pending}
            result = policy_result(config, keys, sender, agreed, outstanding)
            if result is PolicyResult.UNSATISFIABLE:
                break  # not even with every outstanding answer: stop waiting now
            if result is PolicyResult.SATISFIED:
                deadline = min(deadline, loop.time() + SATISFIED_GRACE_S)
        missing = [k for k in keys if k != self._key.public_key and k not in answers]
        agreed = {self._key.public_key} | {k for k, a in answers.items() if _agrees(a, own)}
        disagreed = len(agreed) <= len(answers)  # some answer is not an AGREE on these hashes
        if missing and (
            not expression
            or (
                not disagreed
                and policy_result(config, keys, sender, agreed) is not PolicyResult.SATISFIED
            )
        ):
            names = [self._name(channel, k, failures.get(k)) for k in missing]
            raise TransientError(
                R.ERROR_REASON_PRIVATE_AGREEMENT_TIMEOUT,
                f"the agreement policy is not met without {', '.join(names)}"
                if expression
                else f"not every recipient agreed within {AGREE_TIMEOUT_S}s",
                {"nodes": ",".join(sorted(n.split(" ")[0] for n in names))},
            )
        return [answers[k] for k in keys if k in answers], missing

    @staticmethod
    def _name(channel: PrivateChannel, key: bytes, error: BaseException | None) -> str:
        node = channel.node_of_key(key)
        name = node.node_id if node is not None else key.hex()[:16]
        return f"{name} ({error})" if error is not None else f"{name} (no answer in time)"

    async def _ask(
        self,
        channel: PrivateChannel,
        key: bytes,
        digest: bytes,
        tx_id: str,
        own: tuple[bytes, bytes],
    ) -> A.PrivateAgreement:
        """One recipient's agreement, asked together with this node's other concurrent asks
        to that recipient (one AgreeBatch call, one signature: `_ask_batch`)."""
        node = channel.node_of_key(key)
        if node is None:
            raise ClientError(
                R.ERROR_REASON_INVALID_FIELD, "a recipient key is not in the channel config"
            )
        route = (channel.channel_id, node.node_id)
        batcher = self._batchers.get(route)
        if batcher is None:
            batcher = self._batchers[route] = Coalescer(
                partial(self._ask_batch, *route),
                batch_max=min(ASK_BATCH_MAX, self._ctx.limits.items_per_request_max),
                name=f"agree-{node.node_id}",
                max_concurrent=ASK_IN_FLIGHT,
                owner=self._ctx.tasks,
            )
        query = A.AgreeQuery(
            payload_hash=digest, tx_id=tx_id, pre_state_hash=own[0], delta_hash=own[1]
        )
        return await batcher.call(query)

    async def close(self) -> None:
        """Stop the batched asks (their callers get CancelledError; idempotent)."""
        for batcher in self._batchers.values():
            await batcher.close()
        for _, runner, signer in self._runners.values():
            await runner.close()
            await signer.close()
        self._batchers.clear()
        self._runners.clear()

    async def _ask_batch(
        self, channel_id: str, node_id: str, queries: Sequence[A.AgreeQuery]
    ) -> list[A.PrivateAgreement | BaseException]:
        """AgreeBatch to `node_id`: each answer, or the refusal of that item alone; a failed
        call fails every item (PRIVATE_AGREEMENT_TIMEOUT, as a failed Agree)."""
        batch = A.AgreeBatchQuery(
            channel_id=channel_id, requester=self._ctx.signer.identity_bytes, queries=queries
        )
        batch.timestamp.FromDatetime(utc_now())
        data = batch.SerializeToString()
        request = A.AgreeBatchRequest(query=data, signature=self._ctx.signer.sign(data))
        try:
            link = await self._ctx.channel_to(node_id)
        except TransientError as exc:
            return [_not_agreed(node_id, str(exc))] * len(queries)
        stub = privacy_manager_service_pb2_grpc.PrivacyManagerServiceStub(link)
        try:
            reply = await stub.AgreeBatch(request, timeout=AGREE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # a recipient of an older release
                return list(
                    await asyncio.gather(
                        *(self._ask_one(stub, channel_id, node_id, q) for q in queries),
                        return_exceptions=True,
                    )
                )
            # Down, or restarted at another address: the next ask re-resolves it. Without
            # this, a recipient back on a new port (and pushed nothing since) was asked on the
            # dead channel for ever — a pending recipient could never agree. Only that channel,
            # and not for an answer such as INTERNAL (`links.py`: the pushes sharing it go on).
            await forget_if_gone(self._ctx, node_id, link, exc)
            return [_not_agreed(node_id, f"{exc.code().name}: {exc.details()}")] * len(queries)
        redelivery = self._redelivery(channel_id)
        if redelivery is not None:  # it answered: deliveries owed to it are due now
            redelivery.heard_from(node_id)
        if len(reply.results) != len(queries):
            return [_not_agreed(node_id, "answered another number of proposals")] * len(queries)
        out: list[A.PrivateAgreement | BaseException] = []
        not_held: list[bytes] = []
        for query, result in zip(queries, reply.results, strict=True):
            if result.HasField("agreement"):
                out.append(result.agreement)
            else:
                if _not_held(result):
                    not_held.append(query.payload_hash)
                out.append(_not_agreed(node_id, f"{reason_name(result.reason)}: {result.message}"))
        if not_held and redelivery is not None:
            # A recipient that does not hold a payload this node sent gets it again by queued
            # delivery: a recovering node sets aside what it cannot place yet, so without this,
            # a collection waiting for its agreement waited for a push that never came (found by
            # the simulator, scenario private: a store lost after the push). Handed to the
            # redelivery task, which checks and records them in one store transaction: not
            # awaited here, where every other ask of this batch waits on this one.
            redelivery.not_held(node_id, not_held)
        return out

    def _redelivery(self, channel_id: str) -> Redelivery | None:
        """The queued delivery of a channel this node collected on (None: none yet)."""
        runners = self._runners.get(channel_id)
        return runners[0].redelivery if runners is not None else None

    async def _ask_one(
        self,
        stub: privacy_manager_service_pb2_grpc.PrivacyManagerServiceAsyncStub,
        channel_id: str,
        node_id: str,
        query: A.AgreeQuery,
    ) -> A.PrivateAgreement:
        """One proposal by the single Agree call: what a recipient without AgreeBatch (an older
        release, during a rolling upgrade) still answers."""
        single = A.AgreeQuery()
        single.CopyFrom(query)
        single.channel_id, single.requester = channel_id, self._ctx.signer.identity_bytes
        single.timestamp.FromDatetime(utc_now())
        data = single.SerializeToString()
        request = A.AgreeRequest(query=data, signature=self._ctx.signer.sign(data))
        try:
            reply = await stub.Agree(request, timeout=AGREE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise _not_agreed(node_id, f"{exc.code().name}: {exc.details()}") from exc
        return reply.agreement


async def _refuse_given_up(channel: PrivateChannel, digest: bytes) -> None:
    """Refuse to collect for a payload whose delivery to some recipient this node gave up
    (EXPIRED, RECIPIENT_REMOVED, ABANDONED: `redelivery.py`), at once: PRIVATE_DELIVERY_GIVEN_UP
    naming the nodes and states. Without it a client resuming such a transaction got
    PRIVATE_AGREEMENT_TIMEOUT on every attempt and waited out its whole deadline (branch
    priv58). Refused under every policy, not only where the given-up agreement is required: a
    recipient named by the agreements waits for the payload before executing anything later
    (`executor.py`), and nobody pushes it any more. One exception, under a policy expression:
    a node the config in force no longer names as a recipient of the payload — it left the
    channel, or its privacy key changed (`PrivateChannel.still_recipient`) — executes nothing
    of it and waits for nothing, so it does not block a collection the policy can meet without
    it (as before; review58 found the changed key refused). Nothing changes on the node."""
    redelivery = channel.redelivery
    given = await redelivery.given_up_of(digest) if redelivery is not None else {}
    if given and channel.view.config.private_agreement == EXPRESSION:
        raw = await channel.store.payload(digest)
        if raw is not None:  # (a payload not held here is refused by the collection itself)
            given = {n: state for n, state in given.items() if channel.still_recipient(raw, n)}
    if not given:
        return
    nodes = sorted(given)
    states = [GIVEN_UP_NAMES.get(given[n], str(given[n])) for n in nodes]
    raise ClientError(
        R.ERROR_REASON_PRIVATE_DELIVERY_GIVEN_UP,
        f"the delivery of payload {digest.hex()[:16]}.. was given up for "
        + ", ".join(f"{n} ({s})" for n, s in zip(nodes, states, strict=True))
        + ": this node does not order it",
        {"nodes": ",".join(nodes), "state": ",".join(states)},
    )


def _not_held(result: A.AgreeResult) -> bool:
    """Does this refusal say the recipient does not hold the payload (and only that)?"""
    if result.reason == R.ERROR_REASON_PAYLOAD_NOT_HELD:
        return True
    return result.reason == R.ERROR_REASON_NOT_AUTHORIZED and result.message == LEGACY_NOT_HELD


def _not_agreed(node_id: str, detail: str) -> TransientError:
    return TransientError(
        R.ERROR_REASON_PRIVATE_AGREEMENT_TIMEOUT,
        f"recipient {node_id} did not agree: {detail}",
        {"node": node_id, "nodes": node_id},  # `nodes` as when several are missing
    )


def _results(
    outcomes: Sequence[bytes | ClientError], signed: Sequence[A.PrivateAgreement]
) -> list[A.AgreeResult]:
    """One AgreeResult per outcome: the next signed agreement for a body, else the refusal."""
    agreements = iter(signed)
    return [
        A.AgreeResult(agreement=next(agreements))
        if isinstance(o, bytes)
        else A.AgreeResult(reason=o.reason, message=o.message)  # type: ignore[arg-type]
        for o in outcomes
    ]


def _pushed(
    channel: PrivateChannel, sending: Outgoing, tx_id: str, digest: bytes
) -> dict[bytes, tuple[A.PrivateAgreement, A.PrivateAgreementBody]]:
    """The agreements the recipients answered on the Push, with their parsed bodies, by their
    privacy keys: only those naming this transaction and payload (anything else is not an
    answer to this question, and that recipient is asked by AgreeBatch; the commit rule checks
    everything again anyway)."""
    out: dict[bytes, tuple[A.PrivateAgreement, A.PrivateAgreementBody]] = {}
    # node id -> privacy key, the first entry as a scan finds it: one pass over the peers per
    # collection, not one per answer (10 answers x 11 peers with 10 recipients)
    key_of: dict[str, bytes] = {}
    for n in channel.view.config.peers:
        key_of.setdefault(n.node_id, n.privacy_public_key)
    for node_id, result in sending.answers.items():
        key = key_of.get(node_id)
        if key is None or not result.HasField("agreement"):
            continue  # a refusal (e.g. the payload could not be run there): asked again
        try:
            body = A.PrivateAgreementBody.FromString(result.agreement.body)
        except DecodeError:
            continue  # a faulty answer: that recipient is asked by AgreeBatch
        if (body.channel_id, body.tx_id, body.payload_hash) == (channel.channel_id, tx_id, digest):
            out[key] = (result.agreement, body)
    return out


def _answered_on_push(
    mine: A.PrivateAgreement,
    theirs: Sequence[tuple[A.PrivateAgreement, A.PrivateAgreementBody]],
    own: tuple[bytes, bytes],
) -> A.CollectAgreementsResponse:
    """The collection when every other recipient answered on the Push (the common case): the
    response `_gather` would give — their answers in recipient order, none missing — without
    a future, a wait and a deadline per recipient, and `agreed` from the bodies `_pushed`
    parsed (this node's own is an AGREE on `own` by construction). Those per-recipient
    futures, their wait and the gather after it were ~45 % of a collection's own cost on the
    loop: 50 -> 28 µs per collection of 3 parties, runs and signing stood in
    (benchmarks/RESULTS.md, branch priv12)."""
    return A.CollectAgreementsResponse(
        agreements=[mine, *(a for a, _ in theirs)],
        agreed=all(_agrees_body(body, own) for _, body in theirs),
    )


def _agrees(agreement: A.PrivateAgreement, own: tuple[bytes, bytes]) -> bool:
    """An AGREE on this node's (pre-state, delta) hashes."""
    return _agrees_body(A.PrivateAgreementBody.FromString(agreement.body), own)


def _agrees_body(body: A.PrivateAgreementBody, own: tuple[bytes, bytes]) -> bool:
    """`_agrees` of a parsed body."""
    return body.verdict == ag.AGREE and (body.pre_state_hash, body.delta_hash) == own


def _hashes(
    contract_of: ContractOf,
    invocation: private_payload_pb2.PrivateInvocation,
    state: StateReader,
    recipient_keys: list[bytes],
    channel: Parties,
    sender_key: bytes,
) -> tuple[PrivateOutcome, Hashed]:
    """The outcome of running `invocation` on `state` (its pre-state and delta hashes), nothing
    written, and the keys it read (with versions) and wrote, hashed for its group or recipient
    set."""
    at = Version(0, 0)
    if invocation.group:
        outcome = execute_group(
            contract_of, invocation, state, at, channel, sender_key, recipient_keys
        )
    else:
        outcome = execute(contract_of, invocation, state, at)
    hashed = conflict.outcome_hashed(recipient_keys, invocation.contract, outcome)
    return outcome, hashed
