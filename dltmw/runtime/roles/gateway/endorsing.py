"""Gathering endorsements for many proposals at once (the gateway's Endorse, batched).

Per proposal the rules are the ones of Fabric's gateway: ask every peer of the channel whose
organisation the endorsement policy names, verify each endorsement, feed the policy handler
(`EndorsementCollector`: SATISFIED / UNSATISFIABLE / PENDING) and stop at the first decision;
only byte-identical response payloads can satisfy the policy together.

What is batched: the proposals that concurrent Endorse calls bring at one moment (see the
Coalescer in `Gateway.endorse`) are admitted together (signatures on the thread pool), and each
endorser is asked ONCE for all of them — the local peer in one read transaction that makes
admission's duplicate tx_id check and simulates and signs the rest, a remote peer in one
ProcessProposals message — whose endorsement signatures are then verified together on the
pool. Node answers are taken as they arrive; a proposal whose decision is final ignores later
answers, and nobody waits for an endorser once no proposal of the batch still needs it.
Per-proposal CPU is then a few dictionary operations instead of a handful of tasks, futures
and RPCs.

Admission's duplicate check in the local peer's endorsement (`_Job.final`): a lone proposal
costs the gateway's peer one read transaction instead of two (each re-reads sqlite's pages
after a commit: benchmarks/RESULTS.md, lanes lat15 and lat17). The remote asks are sent at
once, as before; a duplicate is known when the local answer comes, and it is final whatever
the others answered, so the gathering waits for that answer (the local peer's in-place
endorsement is the first to arrive anyway). A proposal whose policy does not ask the local peer
is checked for duplicates before any ask, as before (`PeerChannel.duplicates`).

Read your writes. A request may name a `min_block_number` (the highest block its client saw
committed); `Gateway.endorse` first waits (bounded) for the local peer to commit it, and every
endorser is asked to simulate on a state that includes it. Each answer names the block its state
ended with (`state_block_number`). A contract refusal is final only if it was simulated on the
newest state the gateway knew of for that proposal when the answer came (`_Job.known`: the
request's block, the local peer's last block, any other endorser's answer). A refusal from an
endorser that was behind is not fed to the policy handler: that endorser is asked again, once,
at that block, and its second answer is judged against the block it was asked for (not against
blocks committed meanwhile: under load the local peer moves on every few milliseconds, and a
genuine refusal — an overdraft — must still be final). A refusal below the block asked for (an
endorser that ignored it) counts as `stale`, and if it ends the gathering the client gets the
retryable ENDORSEMENT_MISMATCH, never a final CONTRACT_FAILED. (Before this, an endorser that had
not yet committed the block with the client's `open` refused the `deposit` that followed, and
that refusal, arriving first, made the AND policy unsatisfiable and the failure final.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dltmw.aio.clock import utc_now
from dltmw.core import endorsement_batch
from dltmw.core.contract import refusal_error
from dltmw.core.errors import ClientError, DltmwError, PeerError, TransientError
from dltmw.core.handlers.endorsement import (
    Candidate,
    Decision,
    Endorsed,
    EndorsementCollector,
    Failed,
)
from dltmw.core.hashing import sha256
from dltmw.core.identity import IdentityError, Membership
from dltmw.core.policy import PolicyResult, Signer, policy_orgs
from dltmw.core.txcheck import CheckedProposal
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.gateway.endorser_links import EndorserStream
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.v1 import common_pb2, errors_pb2, proposal_pb2, transaction_pb2

R = errors_pb2
ENDORSE_TIMEOUT_S = 10.0
Answer = proposal_pb2.ProposalResponse | BaseException
Request = tuple[proposal_pb2.SignedProposal, tuple[str, ...], int]  # (proposal, orgs, min block)


@dataclass(frozen=True)
class EndorseResult:
    """What Endorse returns: the payload for the client to sign and the contract's answer."""

    prepared_payload: bytes
    result: proposal_pb2.ContractResponse


@dataclass
class _Job:
    """One proposal being endorsed."""

    checked: CheckedProposal
    collector: EndorsementCollector
    decision: Decision
    min_block: int = 0  # the client's: every endorser's state must include it
    known: int = 0  # the newest block known committed (module docstring)
    responses: dict[str, proposal_pb2.ProposalResponse] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)
    behind: set[str] = field(default_factory=set)  # endorsers that did not reach min_block
    asked_again: dict[str, int] = field(default_factory=dict)  # endorser -> block asked for
    stale: set[str] = field(default_factory=set)  # refused below the block asked for
    denied: list[ClientError] = field(default_factory=list)  # endorsers that refused the creator
    final: ClientError | None = None  # admission's refusal (a duplicate tx_id), whatever else

    def refuse(self, error: ClientError) -> None:
        """Admission refused the proposal after the asks went out: no answer counts now."""
        self.final = error
        self.decision = Decision(PolicyResult.UNSATISFIABLE, failures=(str(error),))

    def step(
        self, node_id: str, answer: Answer, named_as: tuple[bytes, ...], local_block: int
    ) -> list[tuple[str, int]]:
        """Record one endorser's answer and re-decide; returns the endorsers to ask again and
        at which block (a refusal from behind; endorsements that differ because one endorser
        was behind: once per endorser)."""
        self.known = max(self.known, local_block)
        if isinstance(answer, BaseException):
            if isinstance(answer, TransientError):
                self.unreachable.add(node_id)
                if answer.reason == R.ERROR_REASON_HEIGHT_NOT_REACHED:
                    self.behind.add(node_id)
            elif isinstance(answer, ClientError):
                self.denied.append(answer)
            self.collector.step(Failed(node_id, str(answer)))
        else:
            self.known = max(self.known, answer.state_block_number)
            refused = answer.response.status != 200
            bar = self.asked_again.get(node_id)
            if refused and bar is None and answer.state_block_number < self.known:
                self.asked_again[node_id] = self.known
                return [(node_id, self.known)]
            if refused and bar is not None and answer.state_block_number < bar:
                self.stale.add(node_id)
            self.responses[node_id] = answer
            if refused:
                failed = Failed(node_id, f"contract refused: {answer.response.message}")
                self.collector.step(failed)
            elif answer.endorsement.endorser not in named_as:
                self.collector.step(
                    Failed(node_id, "endorsed with an identity that is not the node's")
                )
            else:  # a signature this node made, or one `_ask_remote` verified
                self.collector.step(Endorsed(node_id, sha256(answer.payload)))
        self.decision = self.collector.decision()
        if self.decision.result is PolicyResult.UNSATISFIABLE and self.decision.mismatch:
            return self._behind_again()
        return []

    def _behind_again(self) -> list[tuple[str, int]]:
        """Endorsements differ: the endorsers that simulated on an older block than the newest
        answer are asked again at that block (once each), and their answers no longer count.
        (A peer that missed a block on an idle channel endorsed on older state, every
        transaction mismatched, so no block was ever cut to show it the gap; asked at the newer
        block, it waits for it and re-dials a quiet Deliver stream, `peer/deliver_watch.py`.)
        Only on a mismatch, never for every answer from behind: under load the endorsers are
        always a block or two apart and their results still agree."""
        newest = max(r.state_block_number for r in self.responses.values())
        behind = [
            n
            for n, r in self.responses.items()
            if r.state_block_number < newest and n not in self.asked_again
        ]
        for node_id in behind:
            self.asked_again[node_id] = newest
            del self.responses[node_id]
            self.collector.forget(node_id)
        if behind:
            self.decision = self.collector.decision()
        return [(n, newest) for n in behind]


class BatchEndorser:
    """Endorsement of batches of proposals on one channel."""

    def __init__(
        self, ctx: NodeContext, peer: PeerChannel, stream_to: Callable[[str], EndorserStream]
    ) -> None:
        self._ctx = ctx
        self._peer = peer
        self._stream_to = stream_to

    async def endorse_many(
        self, requests: Sequence[Request]
    ) -> list[EndorseResult | BaseException]:
        """One result (or the error Endorse would raise) per request, in order."""
        peer = self._peer
        admitted = await peer.check_many([signed for signed, _, _ in requests])
        results: list[EndorseResult | BaseException] = []
        jobs: dict[int, _Job] = {}
        candidates: dict[frozenset[str], list[Candidate]] = {}  # the same for the whole batch
        for index, (checked, (_, orgs, min_block)) in enumerate(
            zip(admitted, requests, strict=True)
        ):
            results.append(checked if isinstance(checked, BaseException) else _UNDECIDED)
            if isinstance(checked, CheckedProposal):
                try:
                    jobs[index] = self._job(checked, orgs, candidates, min_block)
                except DltmwError as exc:
                    results[index] = exc
        await self._check_unasked(jobs)
        await self._gather(list(jobs.values()))
        for index, job in jobs.items():
            try:
                results[index] = _prepare(job)
            except DltmwError as exc:
                results[index] = exc
        return results

    async def _check_unasked(self, jobs: dict[int, _Job]) -> None:
        """Admission's duplicate check of the proposals whose policy does not ask the local
        peer (its read makes it for the others: module docstring), before any ask."""
        me = self._ctx.node_id
        unasked = [
            j
            for j in jobs.values()
            if j.decision.result is PolicyResult.PENDING and me not in j.collector.to_ask()
        ]
        if not unasked:
            return
        refusals = await self._peer.duplicates([j.checked for j in unasked])
        for job, refusal in zip(unasked, refusals, strict=True):
            if refusal is not None:
                job.refuse(refusal)

    def _job(
        self,
        checked: CheckedProposal,
        orgs: tuple[str, ...],
        candidates: dict[frozenset[str], list[Candidate]],
        min_block: int,
    ) -> _Job:
        # The committed definition's policy (admission resolved it on the local peer).
        policy = self._peer.lifecycle.view.policy_for(checked.invocation.contract)
        if policy is None:
            raise ClientError(R.ERROR_REASON_CONTRACT_NOT_FOUND, "contract not deployed")
        wanted = frozenset(orgs) or policy_orgs(policy)
        if wanted not in candidates:
            candidates[wanted] = self._candidates(wanted)
        collector = EndorsementCollector(policy, candidates[wanted])
        known = max(min_block, self._local_block())
        return _Job(checked, collector, collector.decision(), min_block, known)

    def _local_block(self) -> int:
        """The last block the local peer committed."""
        return self._peer.ledger.height - 1

    def _candidates(self, orgs: frozenset[str]) -> list[Candidate]:
        view = self._peer.view
        out: list[Candidate] = []
        for node in view.config.peers:
            if node.org_id in orgs:
                who = view.membership.identify(node.identity, utc_now())
                out.append(Candidate(node.node_id, Signer(who.identity_id, who.org_id, who.roles)))
        return out

    async def _gather(self, jobs: list[_Job]) -> None:
        """Ask each endorser once for all its proposals; step answers as node batches arrive
        (and ask an endorser that refused from behind again, at the newer block)."""
        by_node: dict[str, list[_Job]] = {}
        for job in jobs:
            if job.decision.result is PolicyResult.PENDING:
                for node_id in job.collector.to_ask():
                    by_node.setdefault(node_id, []).append(job)
        membership = self._peer.view.membership
        identity = {
            n.node_id: _named_as(membership, n.identity) for n in self._peer.view.config.peers
        }
        me = self._ctx.node_id
        tasks: dict[asyncio.Task[list[Answer]], tuple[str, list[_Job]]] = {}

        def ask(node_id: str, node_jobs: list[_Job], min_blocks: list[int], first: bool) -> None:
            checked = [j.checked for j in node_jobs]
            task = asyncio.create_task(self._ask(node_id, checked, min_blocks, first))
            tasks[task] = (node_id, node_jobs)

        for node_id, node_jobs in by_node.items():
            ask(node_id, node_jobs, [j.min_block for j in node_jobs], True)
        # The local peer's first answers carry admission's duplicate check: awaited even when
        # every proposal is decided before them (module docstring).
        checking = next((t for t, (n, _) in tasks.items() if n == me), None)
        try:
            while any(not t.done() for t in tasks) and (
                any(j.decision.result is PolicyResult.PENDING for j in jobs)
                or (checking is not None and not checking.done())
            ):
                running = [t for t in tasks if not t.done()]
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                again: dict[str, list[tuple[_Job, int]]] = {}
                for task in done:
                    node_id, node_jobs = tasks[task]
                    local_block = self._local_block()
                    for job, answer in zip(node_jobs, task.result(), strict=True):
                        if task is checking and _is_duplicate(answer):
                            job.refuse(answer)  # type: ignore[arg-type]
                        elif job.decision.result is PolicyResult.PENDING:
                            for who, block in job.step(
                                node_id, answer, identity[node_id], local_block
                            ):
                                again.setdefault(who, []).append((job, block))
                for node_id, asked in again.items():
                    ask(node_id, [j for j, _ in asked], [b for _, b in asked], False)
        finally:  # the asks still running (none when every answer came): a gather of done
            # tasks would still cost a loop turn and a callback per task
            running = [t for t in tasks if not t.done()]
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _ask(
        self, node_id: str, checked: list[CheckedProposal], min_blocks: list[int], first: bool
    ) -> list[Answer]:
        """Answers of one endorser, one per proposal; never raises. The local peer's first
        answers include admission's duplicate check (DUPLICATE_TX_ID); an ask again does not
        repeat it (the proposal was not on the ledger at its first)."""
        try:
            if node_id == self._ctx.node_id:  # checked once, by `endorse_many`
                return list(await self._peer.endorse_at(checked, min_blocks, first))
            return await self._ask_remote(node_id, checked, min_blocks)
        except DltmwError as exc:
            return [exc] * len(checked)

    async def _ask_remote(
        self, node_id: str, checked: list[CheckedProposal], min_blocks: list[int]
    ) -> list[Answer]:
        signed = [
            proposal_pb2.SignedProposal(
                proposal_bytes=c.proposal_bytes, signature=c.signature, batch_proof=c.batch_proof
            )
            for c in checked
        ]
        stream = self._stream_to(node_id)
        answers = await stream.process_many(signed, min_blocks, ENDORSE_TIMEOUT_S)
        # The channel's config may have changed while the endorser worked (its organisation
        # removed): then its answers count for nothing, like an unreachable endorser's.
        expected = next(
            (n.identity for n in self._peer.view.config.peers if n.node_id == node_id), None
        )
        if expected is None:
            gone = f"{node_id} is no longer a peer of the channel"
            return [TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, gone) for _ in answers]
        to_verify = [
            i
            for i, a in enumerate(answers)
            if not isinstance(a, BaseException)
            and a.response.status == 200
            and a.endorsement.endorser in _named_as(self._peer.view.membership, expected)
        ]
        # One check per distinct (signed data, signature): the endorsements of one batch share
        # their root's (core/endorsement_batch.py), so the pool verifies it once, not once per
        # thread that would miss the memo at the same moment.
        membership = self._peer.view.membership
        batches = self._peer.view.config.endorsement_batches
        now = utc_now()
        checks: dict[tuple[bytes, bytes], list[int]] = {}
        for i in to_verify:
            a = answers[i]
            assert not isinstance(a, BaseException)
            data = endorsement_batch.signed_data(a.endorsement, a.payload, batches)
            if data is None:
                answers[i] = PeerError(R.ERROR_REASON_BAD_SIGNATURE, _BAD_PROOF)
            else:
                checks.setdefault((data, a.endorsement.signature), []).append(i)

        def verify(check: tuple[bytes, bytes]) -> None:
            try:
                membership.verify(expected, check[0], check[1], now)
            except IdentityError as err:  # fails this endorser, not "unreachable"
                raise PeerError(R.ERROR_REASON_BAD_SIGNATURE, f"bad endorsement: {err}") from None

        unique = list(checks)
        verdicts = await self._peer.offload(verify, unique)
        for check, verdict in zip(unique, verdicts, strict=True):
            if isinstance(verdict, BaseException):
                for i in checks[check]:
                    answers[i] = verdict
        return answers


_BAD_PROOF = (
    "bad endorsement: a batch proof that cannot be right here (malformed, or the channel does"
    " not sign endorsements per batch)"
)


class _Undecided(Exception):
    """Placeholder result of a proposal whose endorsement is still being gathered."""


_UNDECIDED = _Undecided()


def _named_as(membership: Membership, identity: bytes) -> tuple[bytes, ...]:
    """The forms an endorser whose config identity is `identity` may sign as: its reference
    where the channel takes them, and its identity in full, which every channel takes — an
    endorser that has not yet applied the config block turning `identity_references` on
    still signs in full, and its endorsement is as valid after that block as before."""
    ref = membership.reference_of(identity)
    return (identity,) if ref == identity else (ref, identity)


def _is_duplicate(answer: Answer) -> bool:
    """The local peer's refusal of a proposal whose tx_id is on its ledger (`duplicate`)."""
    return isinstance(answer, ClientError) and answer.reason == R.ERROR_REASON_DUPLICATE_TX_ID


def _prepare(job: _Job) -> EndorseResult:
    if job.final is not None:
        raise job.final
    decision, responses = job.decision, job.responses
    if decision.result is not PolicyResult.SATISFIED:
        refused = [r for r in responses.values() if r.response.status != 200]
        if refused and len(refused) == len(responses) and not job.stale:
            raise refusal_error(refused[0].response)
        # A refusal below the block its endorser was asked for is not final either. Some
        # endorsers refused and others endorsed: contracts are deterministic, so they simulated
        # on different heights (one had not committed the latest block yet) — the same signed
        # proposal usually agrees a moment later, as for differing results.
        if refused or decision.mismatch:
            raise PeerError(
                R.ERROR_REASON_ENDORSEMENT_MISMATCH, "endorsers returned different results; retry"
            )
        if job.denied:  # an endorser refused the creator (revoked, not a member): final
            raise ClientError(job.denied[0].reason, str(job.denied[0]))
        all_unreachable = bool(job.unreachable) and len(job.unreachable) == len(decision.failures)
        if all_unreachable:
            reason = (
                R.ERROR_REASON_HEIGHT_NOT_REACHED if job.behind else R.ERROR_REASON_PEER_UNAVAILABLE
            )
            raise TransientError(reason, "; ".join(decision.failures))
        raise ClientError(
            R.ERROR_REASON_ENDORSEMENT_POLICY_UNSATISFIABLE,
            "endorsement policy cannot be satisfied: "
            + ("; ".join(decision.failures) or "no endorser available"),
        )
    chosen = [responses[n] for n in decision.node_ids]
    tx = transaction_pb2.Transaction(
        proposal_bytes=job.checked.proposal_bytes,
        response_payload=chosen[0].payload,
        endorsements=[r.endorsement for r in chosen],
    )
    payload = common_pb2.Payload(header=job.checked.header_bytes, data=tx.SerializeToString())
    return EndorseResult(payload.SerializeToString(), chosen[0].response)
