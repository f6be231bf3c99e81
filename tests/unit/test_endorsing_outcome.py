"""What the gateway tells the client when endorsement does not satisfy the policy
(dltmw.runtime.roles.gateway.endorsing._prepare): the contract's refusal only when every endorser
refused; a mix of refusals and endorsements means the endorsers simulated on different heights,
and the client should retry (ENDORSEMENT_MISMATCH), as for differing results."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dltmw.core.errors import ClientError, DltmwError, PeerError
from dltmw.core.handlers.endorsement import Decision
from dltmw.core.policy import PolicyResult
from dltmw.runtime.roles.gateway.endorsing import _prepare
from dltmw.v1 import proposal_pb2


def _answer(status: int) -> proposal_pb2.ProposalResponse:
    return proposal_pb2.ProposalResponse(
        response=proposal_pb2.ContractResponse(status=status, message=f"status {status}")
    )


@pytest.mark.parametrize(
    ("statuses", "mismatch", "error", "reason"),
    [
        ([400, 400], False, ClientError, "CONTRACT_FAILED"),
        ([400], False, ClientError, "CONTRACT_FAILED"),
        ([200, 400], False, PeerError, "ENDORSEMENT_MISMATCH"),
        ([200, 200], True, PeerError, "ENDORSEMENT_MISMATCH"),
    ],
    ids=[
        "every-endorser-refused",
        "the-only-endorser-refused",
        "lagging-endorser-refused",
        "different-results",
    ],
)
def test_unsatisfied_endorsement_outcome(
    statuses: list[int], mismatch: bool, error: type[DltmwError], reason: str
) -> None:
    job: Any = SimpleNamespace(
        decision=Decision(PolicyResult.UNSATISFIABLE, mismatch=mismatch),
        responses={f"peer{i}": _answer(s) for i, s in enumerate(statuses)},
        unreachable=set(),
    )
    with pytest.raises(error) as raised:
        _prepare(job)
    assert raised.value.reason_name == reason
