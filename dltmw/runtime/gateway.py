"""The gateway role: the client-facing API beside a peer (Fabric Gateway style).

Endorse asks every peer of the channel whose organisation the contract's endorsement policy
names, in parallel, verifies each endorsement as it arrives and feeds the endorsement-policy
handler (`EndorsementCollector`), which says SATISFIED, UNSATISFIABLE or PENDING. It stops at the
first decision, so a slow or dead endorser that is not needed costs nothing. Only a group of
byte-identical response payloads can satisfy the policy; if the groups differ and none suffices
the client gets ENDORSEMENT_MISMATCH. The client then signs the returned payload and Submits it;
the gateway forwards it to an orderer (batched, see `Broadcaster`) and CommitStatus waits on the
local peer's ledger.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from dltmw.core.errors import ClientError, PeerError, TransientError
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
from dltmw.runtime.broadcaster import Broadcaster
from dltmw.runtime.context import NodeContext, utc_now
from dltmw.runtime.peer import PeerChannel
from dltmw.v1 import (
    common_pb2,
    endorser_service_pb2,
    endorser_service_pb2_grpc,
    errors_pb2,
    proposal_pb2,
    transaction_pb2,
)

logger = logging.getLogger(__name__)
R = errors_pb2
ENDORSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class EndorseResult:
    """What Endorse returns: the payload for the client to sign and the contract's answer."""

    prepared_payload: bytes
    result: proposal_pb2.ContractResponse


class Gateway:
    """Endorse / Submit / CommitStatus / Events on behalf of clients."""

    def __init__(self, ctx: NodeContext, peers: dict[str, PeerChannel]) -> None:
        self.ctx = ctx
        self.peers = peers
        self._broadcasters: dict[str, Broadcaster] = {}

    async def close(self) -> None:
        """Close orderer streams."""
        for b in self._broadcasters.values():
            await b.close()

    def _candidates(self, peer: PeerChannel, orgs: frozenset[str]) -> list[Candidate]:
        out: list[Candidate] = []
        for node in peer.view.config.peers:
            if node.org_id not in orgs:
                continue
            who = peer.view.membership.identify(node.identity, utc_now())
            out.append(Candidate(node.node_id, Signer(who.identity_id, who.org_id, who.roles)))
        return out

    async def endorse(
        self, peer: PeerChannel, signed: proposal_pb2.SignedProposal, orgs_wanted: list[str]
    ) -> EndorseResult:
        """Gather endorsements that satisfy the policy; returns the payload to sign."""
        checked = await peer.admit(signed)
        policy = peer.view.policy_for(checked.invocation.contract)
        if policy is None:
            raise ClientError(R.ERROR_REASON_CONTRACT_NOT_FOUND, "contract not deployed")
        orgs = frozenset(orgs_wanted) or policy_orgs(policy)
        collector = EndorsementCollector(policy, self._candidates(peer, orgs))
        responses: dict[str, proposal_pb2.ProposalResponse] = {}
        tasks = {
            asyncio.create_task(self._ask(peer, node_id, checked)): node_id
            for node_id in collector.to_ask()
        }
        unreachable: set[str] = set()
        try:
            decision = collector.decision()
            pending = set(tasks)
            while decision.result is PolicyResult.PENDING and pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    node_id = tasks[task]
                    if isinstance(task.exception(), TransientError):
                        unreachable.add(node_id)
                    collector.step(self._verify(peer, node_id, task, responses))
                decision = collector.decision()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        all_unreachable = bool(unreachable) and len(unreachable) == len(decision.failures)
        return self._prepare(checked, decision, responses, all_unreachable)

    async def _ask(
        self, peer: PeerChannel, node_id: str, checked: CheckedProposal
    ) -> proposal_pb2.ProposalResponse:
        if node_id == self.ctx.node_id:
            return await peer.endorse_checked(checked)  # admitted once, by `endorse`
        signed = proposal_pb2.SignedProposal(
            proposal_bytes=checked.proposal_bytes, signature=checked.signature
        )
        channel = await self.ctx.channel_to(node_id)
        stub = endorser_service_pb2_grpc.EndorserServiceStub(channel)
        try:
            reply = await stub.ProcessProposal(
                endorser_service_pb2.ProcessProposalRequest(signed_proposal=signed),
                timeout=ENDORSE_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                await self.ctx.forget(node_id)
            raise TransientError(
                R.ERROR_REASON_PEER_UNAVAILABLE, f"{node_id}: {exc.code().name}: {exc.details()}"
            ) from exc
        return reply.proposal_response

    def _verify(
        self,
        peer: PeerChannel,
        node_id: str,
        task: asyncio.Task[proposal_pb2.ProposalResponse],
        responses: dict[str, proposal_pb2.ProposalResponse],
    ) -> Endorsed | Failed:
        exc = task.exception()
        if exc is not None:
            return Failed(node_id, str(exc))
        response = task.result()
        responses[node_id] = response
        if response.response.status != 200:
            return Failed(node_id, f"contract refused: {response.response.message}")
        expected = next(n.identity for n in peer.view.config.peers if n.node_id == node_id)
        e = response.endorsement
        if e.endorser != expected:
            return Failed(node_id, "endorsed with an identity that is not the node's")
        if node_id == self.ctx.node_id:
            return Endorsed(node_id, sha256(response.payload))  # our own signature
        try:
            peer.view.membership.verify(
                e.endorser, response.payload + e.endorser, e.signature, utc_now()
            )
        except IdentityError as err:
            return Failed(node_id, f"bad endorsement: {err}")
        return Endorsed(node_id, sha256(response.payload))

    def _prepare(
        self,
        checked: CheckedProposal,
        decision: Decision,
        responses: dict[str, proposal_pb2.ProposalResponse],
        all_unreachable: bool,
    ) -> EndorseResult:
        if decision.result is not PolicyResult.SATISFIED:
            refused = [r for r in responses.values() if r.response.status != 200]
            if refused:
                raise ClientError(R.ERROR_REASON_CONTRACT_FAILED, refused[0].response.message)
            if decision.mismatch:
                raise PeerError(
                    R.ERROR_REASON_ENDORSEMENT_MISMATCH,
                    "endorsers returned different results; retry",
                )
            if all_unreachable:
                raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, "; ".join(decision.failures))
            raise ClientError(
                R.ERROR_REASON_ENDORSEMENT_POLICY_UNSATISFIABLE,
                "endorsement policy cannot be satisfied: "
                + ("; ".join(decision.failures) or "no endorser available"),
            )
        chosen = [responses[n] for n in decision.node_ids]
        tx = transaction_pb2.Transaction(
            proposal_bytes=checked.proposal_bytes,
            response_payload=chosen[0].payload,
            endorsements=[r.endorsement for r in chosen],
        )
        payload = common_pb2.Payload(header=checked.header_bytes, data=tx.SerializeToString())
        return EndorseResult(payload.SerializeToString(), chosen[0].response)

    async def submit(self, peer: PeerChannel, envelope: bytes, tx_id: str) -> None:
        """Forward to the channel's orderer; returns once it durably accepted."""
        if await peer.ledger.tx_record(tx_id) is not None:
            raise ClientError(R.ERROR_REASON_DUPLICATE_TX_ID, f"tx {tx_id} is on the ledger")
        orderer_id = peer.view.orderer_ids()[0]
        broadcaster = self._broadcasters.get(orderer_id)
        if broadcaster is None:
            broadcaster = self._broadcasters[orderer_id] = Broadcaster(self.ctx, orderer_id)
        result = await broadcaster.submit(envelope)
        if not result.accepted:
            reason = result.reason or R.ERROR_REASON_INVALID_FIELD
            raise ClientError(reason, f"orderer refused: {result.message}")
