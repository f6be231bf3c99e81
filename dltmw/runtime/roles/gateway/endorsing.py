"""Gathering endorsements for many proposals at once (the gateway's Endorse, batched).

Per proposal the rules are the ones of Fabric's gateway: ask every peer of the channel whose
organisation the endorsement policy names, verify each endorsement, feed the policy handler
(`EndorsementCollector`: SATISFIED / UNSATISFIABLE / PENDING) and stop at the first decision;
only byte-identical response payloads can satisfy the policy together.

What is batched: the proposals that concurrent Endorse calls bring at one moment (see the
Coalescer in `Gateway.endorse`) are admitted together (signatures on the thread pool, one
duplicate-check hop), and each endorser is asked ONCE for all of them — the local peer in one
simulate-and-sign hop, a remote peer in one ProcessProposals message — whose endorsement
signatures are then verified together on the pool. Node answers are taken as they arrive; a
proposal whose decision is final ignores later answers, and nobody waits for an endorser once
no proposal of the batch still needs it. Per-proposal CPU is then a few dictionary operations
instead of a handful of tasks, futures and RPCs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dltmw.aio.clock import utc_now
from dltmw.core.errors import ClientError, DltmwError, PeerError, TransientError
from dltmw.core.handlers.endorsement import (
    Candidate,
    Decision,
    Endorsed,
    EndorsementCollector,
    Failed,
)
from dltmw.core.hashing import sha256
from dltmw.core.identity import IdentityError
from dltmw.core.policy import PolicyResult, Signer, policy_orgs
from dltmw.core.txcheck import CheckedProposal
from dltmw.runtime.context import NodeContext
from dltmw.runtime.roles.gateway.endorser_links import EndorserStream
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.v1 import common_pb2, errors_pb2, proposal_pb2, transaction_pb2

R = errors_pb2
ENDORSE_TIMEOUT_S = 10.0
Answer = proposal_pb2.ProposalResponse | BaseException
Request = tuple[proposal_pb2.SignedProposal, tuple[str, ...]]


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
    responses: dict[str, proposal_pb2.ProposalResponse] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)

    def step(self, node_id: str, answer: Answer, expected_identity: bytes) -> None:
        """Record one endorser's answer and re-decide."""
        if isinstance(answer, BaseException):
            if isinstance(answer, TransientError):
                self.unreachable.add(node_id)
            self.collector.step(Failed(node_id, str(answer)))
        else:
            self.responses[node_id] = answer
            if answer.response.status != 200:
                failed = Failed(node_id, f"contract refused: {answer.response.message}")
                self.collector.step(failed)
            elif answer.endorsement.endorser != expected_identity:
                self.collector.step(
                    Failed(node_id, "endorsed with an identity that is not the node's")
                )
            else:  # a signature this node made, or one `_ask_remote` verified
                self.collector.step(Endorsed(node_id, sha256(answer.payload)))
        self.decision = self.collector.decision()


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
        admitted = await peer.admit_many([signed for signed, _ in requests])
        results: list[EndorseResult | BaseException] = []
        jobs: dict[int, _Job] = {}
        candidates: dict[frozenset[str], list[Candidate]] = {}  # the same for the whole batch
        for index, (checked, (_, orgs)) in enumerate(zip(admitted, requests, strict=True)):
            results.append(checked if isinstance(checked, BaseException) else _UNDECIDED)
            if isinstance(checked, CheckedProposal):
                try:
                    jobs[index] = self._job(checked, orgs, candidates)
                except DltmwError as exc:
                    results[index] = exc
        await self._gather(list(jobs.values()))
        for index, job in jobs.items():
            try:
                results[index] = _prepare(job)
            except DltmwError as exc:
                results[index] = exc
        return results

    def _job(
        self,
        checked: CheckedProposal,
        orgs: tuple[str, ...],
        candidates: dict[frozenset[str], list[Candidate]],
    ) -> _Job:
        policy = self._peer.view.policy_for(checked.invocation.contract)
        if policy is None:
            raise ClientError(R.ERROR_REASON_CONTRACT_NOT_FOUND, "contract not deployed")
        wanted = frozenset(orgs) or policy_orgs(policy)
        if wanted not in candidates:
            candidates[wanted] = self._candidates(wanted)
        collector = EndorsementCollector(policy, candidates[wanted])
        return _Job(checked, collector, collector.decision())

    def _candidates(self, orgs: frozenset[str]) -> list[Candidate]:
        view = self._peer.view
        out: list[Candidate] = []
        for node in view.config.peers:
            if node.org_id in orgs:
                who = view.membership.identify(node.identity, utc_now())
                out.append(Candidate(node.node_id, Signer(who.identity_id, who.org_id, who.roles)))
        return out

    async def _gather(self, jobs: list[_Job]) -> None:
        """Ask each endorser once for all its proposals; step answers as node batches arrive."""
        by_node: dict[str, list[_Job]] = {}
        for job in jobs:
            if job.decision.result is PolicyResult.PENDING:
                for node_id in job.collector.to_ask():
                    by_node.setdefault(node_id, []).append(job)
        identity = {n.node_id: n.identity for n in self._peer.view.config.peers}
        tasks = {
            asyncio.create_task(self._ask(node_id, [j.checked for j in node_jobs])): node_id
            for node_id, node_jobs in by_node.items()
        }
        pending = set(tasks)
        try:
            while pending and any(j.decision.result is PolicyResult.PENDING for j in jobs):
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    node_id = tasks[task]
                    for job, answer in zip(by_node[node_id], task.result(), strict=True):
                        if job.decision.result is PolicyResult.PENDING:
                            job.step(node_id, answer, identity[node_id])
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _ask(self, node_id: str, checked: list[CheckedProposal]) -> list[Answer]:
        """Answers of one endorser, one per proposal; never raises."""
        try:
            if node_id == self._ctx.node_id:  # admitted once, by `endorse_many`
                return list(await self._peer.endorse_many(checked))
            return await self._ask_remote(node_id, checked)
        except DltmwError as exc:
            return [exc] * len(checked)

    async def _ask_remote(self, node_id: str, checked: list[CheckedProposal]) -> list[Answer]:
        signed = [
            proposal_pb2.SignedProposal(proposal_bytes=c.proposal_bytes, signature=c.signature)
            for c in checked
        ]
        answers = await self._stream_to(node_id).process_many(signed, ENDORSE_TIMEOUT_S)
        expected = next(n.identity for n in self._peer.view.config.peers if n.node_id == node_id)
        to_verify = [
            i
            for i, a in enumerate(answers)
            if not isinstance(a, BaseException)
            and a.response.status == 200
            and a.endorsement.endorser == expected
        ]
        membership = self._peer.view.membership

        def verify(i: int) -> None:
            a = answers[i]
            assert not isinstance(a, BaseException)
            e = a.endorsement
            try:
                membership.verify(e.endorser, a.payload + e.endorser, e.signature, utc_now())
            except IdentityError as err:  # fails this endorser, not "unreachable"
                raise PeerError(R.ERROR_REASON_BAD_SIGNATURE, f"bad endorsement: {err}") from None

        verdicts = await self._peer.offload(verify, to_verify)
        for i, verdict in zip(to_verify, verdicts, strict=True):
            if isinstance(verdict, BaseException):
                answers[i] = verdict
        return answers


class _Undecided(Exception):
    """Placeholder result of a proposal whose endorsement is still being gathered."""


_UNDECIDED = _Undecided()


def _prepare(job: _Job) -> EndorseResult:
    decision, responses = job.decision, job.responses
    if decision.result is not PolicyResult.SATISFIED:
        refused = [r for r in responses.values() if r.response.status != 200]
        if refused and len(refused) == len(responses):
            raise ClientError(R.ERROR_REASON_CONTRACT_FAILED, refused[0].response.message)
        # Some endorsers refused and others endorsed: contracts are deterministic, so they
        # simulated on different heights (one had not committed the latest block yet) — the
        # same signed proposal usually agrees a moment later, as for differing results.
        if refused or decision.mismatch:
            raise PeerError(
                R.ERROR_REASON_ENDORSEMENT_MISMATCH, "endorsers returned different results; retry"
            )
        all_unreachable = bool(job.unreachable) and len(job.unreachable) == len(decision.failures)
        if all_unreachable:
            raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, "; ".join(decision.failures))
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
