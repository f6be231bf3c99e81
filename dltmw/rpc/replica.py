"""ReplicaService servicer: admission of PBFT-lite traffic between orderer replicas.

Every message of a batch is checked before any of it reaches the core — the caller's TLS
certificate is issued by an orderer organisation of the channel, each message parses, names a
replica of the channel and carries that replica's valid signature, and no view-bearing message
is from a view older than ours — so a bad batch is refused with a specific status and changes
nothing. The core re-checks everything anyway (it trusts no transport). Requests carried by
forwarded and pre-prepare messages are judged by the ordering rule on a worker thread before the
core sees them (`PbftOrderer.judge_requests`): the core then finds cached verdicts and an
inadmissible request is dropped there, counted and logged.

The servicer depends only on the protocols declared here; the node passes in the channels it
orders with PBFT-lite and the notary clusters it is a member of.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from google.protobuf.message import DecodeError

from dltmw.core.channel import ChannelView
from dltmw.core.errors import ClientError, DltmwError, PeerError
from dltmw.core.identity import Membership
from dltmw.rpc.guard import Ctx, check_tls_cert_org, streaming, tls_org_matches_memo, unary
from dltmw.rpc.tls import caller_tls_cert
from dltmw.v1 import errors_pb2, replica_pb2, replica_pb2_grpc

if TYPE_CHECKING:  # a solo orderer serves this service (refusing) without loading PBFT-lite
    from dltmw.core.pbft import PbftConfig

R = errors_pb2
VIEWED = ("pre_prepare", "prepare", "commit")
# Refusals that end an ExchangeStream (the caller or the channel, not one batch, is wrong).
ENDS_STREAM = frozenset(
    {
        R.ERROR_REASON_CHANNEL_NOT_FOUND,
        R.ERROR_REASON_TLS_IDENTITY_MISMATCH,
        R.ERROR_REASON_CERTIFICATE_REVOKED,
    }
)


ANSWER_EVERY_MAX = 64  # batches one ExchangeStream answer may stand for (`Answers`)


class PbftParticipant(Protocol):
    """What admission needs of a PBFT-lite replica hosted here (orderer channel, notary cluster)."""

    @property
    def config(self) -> PbftConfig:
        """Its group's parameters (n)."""

    @property
    def current_view(self) -> int:
        """Its current view."""

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool:
        """Does `signature` of group member `replica` verify over `data`?"""


class PbftOrderer(PbftParticipant, Protocol):
    """A channel this node orders as a PBFT-lite replica (`runtime/roles/orderer/pbft.py`)."""

    @property
    def view(self) -> ChannelView:
        """The channel's configuration (its orderer organisations)."""
        ...

    async def judge_requests(self, messages: Sequence[replica_pb2.SignedReplicaMessage]) -> None:
        """Judge the requests the messages carry, off the event loop, before the core sees
        them."""

    def offer(
        self,
        messages: list[replica_pb2.SignedReplicaMessage],
        signatures: list[replica_pb2.BlockSignature],
    ) -> None:
        """Queue checked messages and block signatures for the replica (all or nothing)."""

    def later_epoch(self, epoch: int) -> None:
        """A message of `epoch`, later than ours, was refused here (`_hint_later_epoch`)."""


class ClusterReplica(PbftParticipant, Protocol):
    """This node's replica of a notary cluster (`runtime/roles/notary/cluster.py`)."""

    @property
    def cluster_id(self) -> str:
        """The cluster's id (also its "channel" id on the Replica service)."""
        ...

    @property
    def membership(self) -> Membership:
        """The network's organisations and CAs."""
        ...

    @property
    def member_orgs(self) -> frozenset[str]:
        """Organisations of the cluster's members."""
        ...

    def offer(
        self,
        messages: list[replica_pb2.SignedReplicaMessage],
        signatures: list[replica_pb2.BlockSignature],
    ) -> None:
        """Queue checked messages for the replica (all or nothing)."""


def _check_message(orderer: PbftParticipant, i: int, env: replica_pb2.SignedReplicaMessage) -> bool:
    """Raise the reason message `i` of a batch is refused, if any; False if it is only late (a
    message of a view older than ours, see `_current`)."""
    if env.replica >= orderer.config.n:
        raise PeerError(R.ERROR_REASON_NOT_A_MEMBER, f"message {i}: no replica {env.replica}")
    if not env.signature:
        raise PeerError(R.ERROR_REASON_BAD_SIGNATURE, f"message {i} is unsigned")
    message = replica_pb2.ReplicaMessage()
    try:
        message.ParseFromString(env.payload)
    except DecodeError as exc:
        raise ClientError(R.ERROR_REASON_MALFORMED, f"message {i} does not parse") from exc
    kind = message.WhichOneof("body")
    if kind is None:
        raise ClientError(R.ERROR_REASON_MALFORMED, f"message {i} carries no body")
    if not orderer.verify(env.replica, env.payload, env.signature):
        raise PeerError(
            R.ERROR_REASON_BAD_SIGNATURE, f"message {i}: bad signature of replica {env.replica}"
        )
    if kind in VIEWED and message.epoch == orderer.config.epoch:  # views restart per epoch
        view: int = getattr(message, kind).view
        return view >= orderer.current_view
    return True


def _current(
    orderer: PbftParticipant, messages: Sequence[replica_pb2.SignedReplicaMessage]
) -> list[replica_pb2.SignedReplicaMessage]:
    """The messages of a batch to hand on: all of them, once each is checked (a bad one refuses
    the batch), less those of a view older than ours. A late vote is harmless and is dropped
    alone: refusing its whole batch also lost the checkpoints, state replies and relayed
    requests sent with it — all a replica alone in a higher view still lives on. A batch of
    nothing but late messages is refused STALE_VIEW, so the sender learns of our view."""
    # Each message handed on is copied out of the request: a protobuf sub-message keeps its
    # whole request's memory alive (one arena per parsed message), so a message the replica
    # holds for a while (a stored batch, a vote of a certificate) held up to a request's
    # `max_message_bytes` (a stalled replica's catch-up: ~10 MiB more at its peak,
    # benchmarks/RESULTS.md 2026-12-05 rss58).
    current = [
        replica_pb2.SignedReplicaMessage.FromString(env.SerializeToString())
        for i, env in enumerate(messages)
        if _check_message(orderer, i, env)
    ]
    if messages and not current:
        raise PeerError(
            R.ERROR_REASON_STALE_VIEW,
            f"every message is of a view older than view {orderer.current_view}",
        )
    return current


def _hint_later_epoch(
    orderer: PbftOrderer, messages: Sequence[replica_pb2.SignedReplicaMessage]
) -> None:
    """A batch refused for its signer: a replica of a later epoch signs with its index in a
    replica list we do not know yet (we have not committed the boundary block), so its
    messages fail here. Tell the orderer, which then fetches blocks at once instead of waiting
    out its backoff (`PbftOrdererCore._maybe_fetch`). Only on this refusal path: the messages
    are parsed again, never on the accepted path. The batch is refused all the same."""
    later = 0
    for env in messages:
        message = replica_pb2.ReplicaMessage()
        try:
            message.ParseFromString(env.payload)
        except DecodeError:
            continue
        later = max(later, message.epoch)
    if later > orderer.config.epoch:
        orderer.later_epoch(later)


class ReplicaServicer(replica_pb2_grpc.ReplicaServiceServicer):
    """Exchange for the PBFT-ordered channels and the notary-cluster replicas of this node
    (`channel_id` names the channel or the cluster; ids are distinct by construction)."""

    def __init__(
        self,
        orderers: Mapping[str, PbftOrderer],
        clusters: Mapping[str, ClusterReplica] | None = None,
    ) -> None:
        self._orderers = orderers
        self._clusters = clusters or {}

    @unary
    async def Exchange(
        self, request: replica_pb2.ExchangeRequest, context: Ctx
    ) -> replica_pb2.ExchangeResponse:
        """Check a batch of replica messages and hand it to the replica (all or nothing)."""
        return await self._admit(request, caller_tls_cert(context))

    @streaming
    async def ExchangeStream(
        self, requests: AsyncIterator[replica_pb2.ExchangeStreamRequest], context: Ctx
    ) -> AsyncIterator[replica_pb2.ExchangeStreamResponse]:
        """One link's batches on one stream, each checked as by Exchange and answered in order.

        A bad batch is answered with its reason and the stream goes on (a message of an older
        view still in flight during a view change is refused, which is no reason to tear the
        link down); a caller that is not (or no longer) a member, or a channel not replicated
        here, ends the stream with that status. The caller's certificate is read once (the
        transport's, for the stream's life); membership is checked for every batch against the
        configuration then in force (memoised per certificate, `rpc/guard.py`).

        Answers: one per batch, unless the opening request asks for one per `answer_every`
        batches (`Answers`)."""
        cert = caller_tls_cert(context)
        answers: Answers | None = None
        async for request in requests:
            if answers is None:
                answers = Answers(request.answer_every)
            try:
                done = await self._admit(request.batch, cert)
            except DltmwError as exc:
                if exc.reason in ENDS_STREAM:
                    raise
                yield answers.refused(R.ErrorReason.ValueType(exc.reason), exc.message)
            else:
                answer = answers.accepted(done.accepted)
                if answer is not None:
                    yield answer

    async def _admit(
        self, request: replica_pb2.ExchangeRequest, cert: bytes | None
    ) -> replica_pb2.ExchangeResponse:
        """Check the caller and every message of the batch, then hand the batch over whole
        (or raise why not: nothing of it reaches the replica)."""
        cluster = self._clusters.get(request.channel_id)
        if cluster is not None:
            _check_cluster_tls(cert, cluster)
            current = _current(cluster, request.messages)
            cluster.offer(current, list(request.block_signatures))
            return replica_pb2.ExchangeResponse(accepted=len(current))
        orderer = self._orderers.get(request.channel_id)
        if orderer is None:
            raise ClientError(
                R.ERROR_REASON_CHANNEL_NOT_FOUND,
                f"channel {request.channel_id!r} is not ordered by PBFT here",
            )
        check_tls_cert_org(cert, orderer.view.orderer_membership, None)
        try:
            current = _current(orderer, request.messages)
        except PeerError as exc:
            if exc.reason in (R.ERROR_REASON_BAD_SIGNATURE, R.ERROR_REASON_NOT_A_MEMBER):
                _hint_later_epoch(orderer, request.messages)
            raise
        for i, sig in enumerate(request.block_signatures):
            if sig.replica >= orderer.config.n:
                raise PeerError(R.ERROR_REASON_NOT_A_MEMBER, f"block signature {i}: no replica")
            if not orderer.verify(sig.replica, sig.block_hash, sig.signature):
                raise PeerError(R.ERROR_REASON_BAD_SIGNATURE, f"block signature {i} is invalid")
        await orderer.judge_requests(current)  # admission of carried requests, off-loop
        orderer.offer(current, list(request.block_signatures))
        return replica_pb2.ExchangeResponse(accepted=len(current) + len(request.block_signatures))


class Answers:
    """When an ExchangeStream answers, and what (`ExchangeStreamRequest.answer_every`).

    Each answer is a stream message both sides handle (a write here, a read and a wake-up at
    the sender), and PBFT-lite's batches are small and many (~11 per slot and replica at
    n = 4): one answer per batch doubled the link's stream messages. A sender that asks for it
    gets the opening batch answered at once (its stream is known to work), then one answer per
    `every` batches counting them; a refused batch is answered at once, with the accepted ones
    owed before it. The sender's window (`replica_link.WINDOW`) must exceed `every`, or it
    would wait for an answer that waits for its next batch: the sender chooses both."""

    def __init__(self, every: int) -> None:
        self.every = min(max(every, 1), ANSWER_EVERY_MAX)
        self._opened = False
        self._owed = 0
        self._accepted = 0

    def accepted(self, count: int) -> replica_pb2.ExchangeStreamResponse | None:
        """An accepted batch of `count` items: its answer, if one is due now."""
        self._owed += 1
        self._accepted += count
        if self._opened and self._owed < self.every:
            return None
        self._opened = True
        return self._answer()

    def refused(
        self, reason: R.ErrorReason.ValueType, detail: str
    ) -> replica_pb2.ExchangeStreamResponse:
        """A refused batch: answered now, with what was owed before it."""
        self._owed += 1
        self._opened = True
        answer = self._answer()
        answer.refused, answer.refused_detail = reason, detail
        return answer

    def _answer(self) -> replica_pb2.ExchangeStreamResponse:
        answer = replica_pb2.ExchangeStreamResponse(accepted=self._accepted)
        if self.every > 1:  # an older sender (every = 1) reads one answer per response
            answer.answers = self._owed
        self._owed = self._accepted = 0
        return answer


def _check_cluster_tls(cert: bytes | None, cluster: ClusterReplica) -> None:
    """The caller's TLS certificate must be issued by the organisation of a cluster member."""
    if cert is None or not any(
        tls_org_matches_memo(cert, cluster.membership, org) for org in cluster.member_orgs
    ):
        raise ClientError(
            R.ERROR_REASON_TLS_IDENTITY_MISMATCH,
            f"TLS client certificate is not a member's of notary cluster {cluster.cluster_id}",
        )
