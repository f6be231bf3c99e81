"""What the gateway tells the client when endorsement does not satisfy the policy
(dltmw.runtime.roles.gateway.endorsing._prepare): the contract's refusal only when every endorser
refused; a mix of refusals and endorsements means the endorsers simulated on different heights,
and the client should retry (ENDORSEMENT_MISMATCH), as for differing results. A refusal simulated
on a state older than a block the gateway knows committed (`known`) is not final either: read your
writes must never end in a CONTRACT_FAILED from an endorser that was behind."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dltmw.core.errors import ClientError, DltmwError, PeerError, TransientError
from dltmw.core.handlers.endorsement import Decision
from dltmw.core.policy import PolicyResult
from dltmw.runtime.roles.gateway.endorsing import _prepare
from dltmw.v1 import proposal_pb2


def _answer(status: int, block: int = 7) -> proposal_pb2.ProposalResponse:
    return proposal_pb2.ProposalResponse(
        response=proposal_pb2.ContractResponse(status=status, message=f"status {status}"),
        state_block_number=block,
    )


@pytest.mark.parametrize(
    ("statuses", "mismatch", "error", "reason", "known"),
    [
        ([400, 400], False, ClientError, "CONTRACT_FAILED", 7),
        ([400], False, ClientError, "CONTRACT_FAILED", 7),
        ([200, 400], False, PeerError, "ENDORSEMENT_MISMATCH", 7),
        ([200, 200], True, PeerError, "ENDORSEMENT_MISMATCH", 7),
        ([400], False, PeerError, "ENDORSEMENT_MISMATCH", 8),
        ([400, 400], False, PeerError, "ENDORSEMENT_MISMATCH", 8),
    ],
    ids=[
        "every-endorser-refused",
        "the-only-endorser-refused",
        "lagging-endorser-refused",
        "different-results",
        "the-only-refusal-is-from-behind-a-known-block",
        "every-refusal-is-from-behind-a-known-block",
    ],
)
def test_unsatisfied_endorsement_outcome(
    statuses: list[int], mismatch: bool, error: type[DltmwError], reason: str, known: int
) -> None:
    job: Any = SimpleNamespace(
        decision=Decision(PolicyResult.UNSATISFIABLE, mismatch=mismatch),
        responses={f"peer{i}": _answer(s) for i, s in enumerate(statuses)},
        unreachable=set(),
        behind=set(),
        known=known,
    )
    with pytest.raises(error) as raised:
        _prepare(job)
    assert raised.value.reason_name == reason


@pytest.mark.parametrize(
    ("behind", "reason"),
    [(set(), "PEER_UNAVAILABLE"), ({"peer1"}, "HEIGHT_NOT_REACHED")],
    ids=["endorsers-unreachable", "an-endorser-did-not-reach-the-clients-block"],
)
def test_unreachable_endorsers_are_a_retryable_outcome(behind: set[str], reason: str) -> None:
    job: Any = SimpleNamespace(
        decision=Decision(PolicyResult.UNSATISFIABLE, failures=("peer1: late",)),
        responses={},
        unreachable={"peer1"},
        behind=behind,
        known=7,
    )
    with pytest.raises(TransientError) as raised:
        _prepare(job)
    assert raised.value.reason_name == reason
