"""Which orderer takes a transaction: the first, from the last one that worked, that accepts it.

With several orderers of a channel (PBFT-lite replicas, JetStream orderers) any one of them can
order a transaction, so one that cannot must not fail the submission while another can. Two kinds
of "cannot" move the gateway on to the next orderer:
- the link to it fails (TransientError from the Broadcast stream: down, restarting, overloaded);
- it answers, but refuses with a reason that is about *it*, not about the transaction
  (`NEXT_ORDERER`): a PBFT-lite replica removed from (or not yet in) the set in force, or a
  JetStream orderer cut off from the majority of its nats-servers, both ORDERING_UNAVAILABLE.
Any other refusal is the transaction's own (malformed, duplicate, not admitted) and is final: the
next orderer would refuse it alike. When every orderer was tried, the last trouble is raised as
a TransientError, so the client retries later (UNAVAILABLE), never a final refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from dltmw.core.errors import TransientError
from dltmw.v1 import errors_pb2, orderer_service_pb2

Result = orderer_service_pb2.BroadcastResult
R = errors_pb2

NEXT_ORDERER = frozenset({R.ERROR_REASON_ORDERING_UNAVAILABLE})


async def first_accepting(
    orderers: Sequence[str], start: int, submit: Callable[[str], Awaitable[Result]]
) -> tuple[int, Result]:
    """Submit to `orderers` in turn from index `start` until one accepts or refuses the
    transaction itself; that orderer's index and result. Raises TransientError when none could
    take it (each orderer is asked once)."""
    if not orderers:
        raise TransientError(R.ERROR_REASON_ORDERING_UNAVAILABLE, "the channel names no orderer")
    trouble: TransientError | None = None
    for attempt in range(len(orderers)):
        index = (start + attempt) % len(orderers)
        orderer_id = orderers[index]
        try:
            result = await submit(orderer_id)
        except TransientError as exc:
            trouble = exc
            continue
        if not result.accepted and result.reason in NEXT_ORDERER:
            trouble = TransientError(
                result.reason,
                f"orderer {orderer_id} cannot order now: {result.message}",
            )
            continue
        return index, result
    assert trouble is not None
    raise trouble
