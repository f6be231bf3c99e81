"""Asking a notary cluster for its verdict: members until f+1 of them agree, every signature
verified. The fan-out lives here, below both of its users — the SDK (`client/notary_cluster.py`)
and a vault node's flows (`runtime/roles/vault/flows.py`), which pass their own way to call a
member — and the pure verdict over the answers in `core/notary_cluster.verdict`.

The members and their identities come from the caller's network map (written by `dltmw init`,
trusted like the CA roots), never from a responder. By default a call goes to f+1 members at
once (rotating, so load spreads): the first is asked to order it, the f others to attest it
(`NotariseRequest.ordered_elsewhere`: each answers from its own decision of the first one's
wrap, and orders it itself only after a bound), so the cluster orders the transaction once and
the call still waits for one round of ordering only. Every member asked later — in place of one
that gave no answer, or beside a silent one — is asked to order it. With `attest=False` the
first f+1 all order it (each decision is idempotent: the same answers, f+1 times the cluster's
work; what members too old to know the flag do anyway). With `relay=True` it
goes to one member first, which orders it, and once that one answered to f more — by then they
have usually applied the decision and answer from their stores, so the cluster orders each
transaction about once instead of f+1 times (more throughput, one more round trip). When an
answer is missing (member down, timeout) or does not match, further members are asked one by
one, up to all n. A member that stays silent does not hold the call: every `hedge_s` without
any answer one more member is asked as well (a replica alone in a view change, or far behind,
would otherwise keep every call that asks it waiting for its full deadline, although f+1 others
answer at once). The outcome is returned as soon as f+1 members agree; asks still running are
cancelled. A signature counts only if its signer is the member asked and it verifies over the
tx_id (or over its batch's root, through the proof it came with); a refusal counts only with
its ErrorInfo reason and conflicts, and only as one of the answers a notary gives about a
transaction (ABORTED: an input is consumed; FAILED_PRECONDITION: the time window or a
reference); any other failure is no answer, and another member is asked.
"""

from __future__ import annotations

import asyncio
from asyncio import FIRST_COMPLETED
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dltmw.aio.clock import utc_now
from dltmw.core.errors import ClientError, DltmwError
from dltmw.core.identity import Membership
from dltmw.core.notary_batch import proof_of_pb
from dltmw.core.notary_cluster import ReplicaAnswer, Verdict, verdict
from dltmw.core.utxo.verify import check_notary_signature
from dltmw.net.netmap import NetworkMap
from dltmw.rpc.status import CODE_OF_REASON
from dltmw.v1 import errors_pb2, notarisation_pb2

ANSWERING = {grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION}
# Longer than a cluster needs to replace a failed primary (its request timeout plus one view
# change, 2 s + 2 s at its 50 ms tick), so hedging adds load only when a member is stuck.
HEDGE_S = 5.0


class ClusterUnavailable(Exception):
    """Fewer than f+1 members gave matching answers."""


def refusal_of(replica: int, error: grpc.aio.AioRpcError) -> ReplicaAnswer | None:
    """A member's refusal as an answer (reason and conflict hashes), or None if it carries
    no ErrorInfo (then it is not an answer about the transaction)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason, hashes = 0, []
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        conflict = notarisation_pb2.NotarisationConflict()
        if detail.Unpack(info):
            reason = errors_pb2.ErrorReason.Value(f"ERROR_REASON_{info.reason}")
        elif detail.Unpack(conflict):
            hashes.append(conflict.consuming_tx_id_hash)
    return ReplicaAnswer(replica, reason=reason, conflict_hashes=tuple(hashes)) if reason else None


# (member, signed request, ordered_elsewhere) -> the member's response (unary: a refusal is an
# AioRpcError), or its stream result (a refusal is the result's reason)
def result_refusal(
    replica: int, result: notarisation_pb2.NotarisationResult
) -> ReplicaAnswer | None:
    """A member's refusal in a stream result, as `refusal_of` reads it from a unary call's
    status: an answer only for the reasons a notary gives about a transaction (the status codes
    of ANSWERING), with the conflicts it names; any other refusal (overloaded, shutting down,
    a bad request) is no answer."""
    if CODE_OF_REASON.get(result.reason) not in ANSWERING:
        return None
    hashes = tuple(c.consuming_tx_id_hash for c in result.response.conflicts)
    return ReplicaAnswer(replica, reason=result.reason, conflict_hashes=hashes)


Call = Callable[
    [str, notarisation_pb2.NotarisationRequest, bool],
    Awaitable[notarisation_pb2.NotarisationResponse | notarisation_pb2.NotarisationResult],
]


@dataclass(frozen=True)
class Cluster:
    """One notary cluster as the network map describes it: member node ids and identities."""

    cluster_id: str
    members: tuple[str, ...]
    identities: tuple[bytes, ...]
    membership: Membership

    @staticmethod
    def of(netmap: NetworkMap, cluster_id: str) -> Cluster:
        """The cluster `cluster_id` of the map; KeyError if the map has none of that id."""
        if cluster_id not in netmap.clusters:
            raise KeyError(f"no notary cluster {cluster_id!r} in the network map")
        members = netmap.clusters[cluster_id]
        identities = tuple(netmap.identity_of(m) for m in members)
        return Cluster(cluster_id, members, identities, netmap.membership())

    @property
    def f(self) -> int:
        """Faulty members tolerated: n = 3f+1."""
        return (len(self.members) - 1) // 3


async def ask_member(
    cluster: Cluster,
    call: Call,
    replica: int,
    request: notarisation_pb2.NotarisationRequest,
    tx_id: str,
    ordered_elsewhere: bool = False,
) -> ReplicaAnswer | None:
    """One member's answer, verified; None when it gave none (down, overloaded, bogus).
    `ordered_elsewhere`: the member is asked to attest what another member orders."""
    try:
        reply = await call(cluster.members[replica], request, ordered_elsewhere)
    except grpc.aio.AioRpcError as error:
        return refusal_of(replica, error) if error.code() in ANSWERING else None
    except (ConnectionError, OSError, TimeoutError, DltmwError):
        return None
    if isinstance(reply, notarisation_pb2.NotarisationResult):
        if reply.reason:
            return result_refusal(replica, reply)
        reply = reply.response
    member = cluster.identities[replica]
    signature = reply.notary_signature
    if reply.tx_id != tx_id or signature.signer != member:
        return None
    proof = proof_of_pb(reply.batch_proof) if reply.HasField("batch_proof") else None
    try:
        check_notary_signature(
            tx_id, member, signature.signature, proof, cluster.membership, utc_now()
        )
    except ClientError:
        return None
    return ReplicaAnswer(replica, signature=signature.signature, proof=proof)


def _agreeing(answers: Sequence[ReplicaAnswer]) -> int:
    """The largest number of answers that agree (signatures, or one refusal with its conflicts)."""
    signed = sum(1 for a in answers if a.signature and not a.reason)
    refusals = Counter((a.reason, a.conflict_hashes) for a in answers if a.reason)
    return max(signed, *refusals.values(), 0)


async def gather_verdict(
    cluster: Cluster,
    call: Call,
    request: notarisation_pb2.NotarisationRequest,
    start: int = 0,
    relay: bool = False,
    hedge_s: float = HEDGE_S,
    attest: bool = True,
) -> Verdict:
    """The cluster's verdict on one signed request, asking members through `call` (module
    docstring). Enough members are kept asked for the answers still missing — f+1 at once, or
    one then f with `relay`; of the first f+1, all but the first are asked to attest (`attest`,
    module docstring); a member that gave no answer is replaced at once, and each `hedge_s`
    without any answer writes off the oldest silent ask and asks one more, up to all n. Shared by
    the SDK client and by vault nodes (which pass their own cached channels).
    ClusterUnavailable if no f+1 members agree."""
    tx_id = notarisation_pb2.NotarisationPayload.FromString(request.payload).tx_id
    n, f = len(cluster.members), cluster.f
    order = [(start + k) % n for k in range(n)]
    answers: list[ReplicaAnswer] = []
    tasks: list[asyncio.Task[ReplicaAnswer | None]] = []  # in the order asked
    late: set[asyncio.Task[ReplicaAnswer | None]] = set()  # silent for a hedge: written off

    def ask(count: int) -> None:
        for replica in order[len(tasks) : len(tasks) + max(0, count)]:
            # the first wave's members after the first attest; the first and every later one order
            attesting = attest and not relay and 0 < len(tasks) <= f
            asked = ask_member(cluster, call, replica, request, tx_id, attesting)
            tasks.append(asyncio.ensure_future(asked))

    ask(1 if relay else f + 1)
    try:
        while asking := [t for t in tasks if not t.done()]:  # at most n asks and n hedges
            timeout = hedge_s if len(tasks) < n else None
            await asyncio.wait(asking, timeout=timeout, return_when=FIRST_COMPLETED)
            done = [t for t in asking if t.done()]  # each task is read once: then not asking
            if not done:  # the oldest ask not yet written off
                late.update([t for t in asking if t not in late][:1])
            answers.extend(a for t in done if (a := t.result()) is not None)
            outcome = verdict(answers, f)
            if outcome is not None:
                return outcome
            need = 1 if relay and not answers else f + 1 - _agreeing(answers)
            ask(need - sum(1 for t in tasks if not t.done() and t not in late))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    raise ClusterUnavailable(
        f"notary cluster {cluster.cluster_id}: no f+1 matching answers from {n} members"
    )
