"""Asking a notary cluster (`rpc/cluster_verdict.gather_verdict`): a silent member never holds
the call. Run on the simulator's virtual-time loop, so the deadlines cost no real time and the
order of events is exact."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import grpc
import pytest

from dltmw.core.identity import IdentityError
from dltmw.rpc.cluster_verdict import HEDGE_S, Cluster, ClusterUnavailable, gather_verdict
from dltmw.sim import vloop
from dltmw.v1 import errors_pb2 as R
from dltmw.v1 import notarisation_pb2

MEMBERS = ("m0", "m1", "m2", "m3")  # n = 4, f = 1
DEADLINE_S = 30.0  # the SDK's RPC deadline


class Keys:
    """Stand-in membership: member `m`'s signature over data is b"m:" + data."""

    def verify(self, identity: bytes, data: bytes, signature: bytes, _now: datetime) -> None:
        if signature != identity + b":" + data:
            raise IdentityError("BAD_SIGNATURE", "bad signature")


CLUSTER = Cluster("notaries", MEMBERS, tuple(m.encode() for m in MEMBERS), Keys())  # type: ignore[arg-type]
REQUEST = notarisation_pb2.NotarisationRequest(
    payload=notarisation_pb2.NotarisationPayload(tx_id="tx1").SerializeToString()
)


class Members:
    """Members answering after `delay_s` each (None: silent until the RPC deadline)."""

    def __init__(self, delay_s: dict[str, float | None]) -> None:
        self.delay_s = delay_s
        self.asked: list[tuple[float, str]] = []
        self.attesting: list[str] = []  # members asked to attest (ordered_elsewhere)
        self.cancelled: list[str] = []

    async def call(
        self, member: str, request: notarisation_pb2.NotarisationRequest, attest: bool = False
    ) -> notarisation_pb2.NotarisationResponse:
        loop = asyncio.get_running_loop()
        self.asked.append((loop.time(), member))
        if attest:
            self.attesting.append(member)
        delay = self.delay_s.get(member, 0.01)
        try:
            await asyncio.sleep(DEADLINE_S if delay is None else delay)
        except asyncio.CancelledError:
            self.cancelled.append(member)
            raise
        if delay is None:
            raise DeadlineExceeded()
        out = notarisation_pb2.NotarisationResponse(tx_id="tx1")
        out.notary_signature.signer = member.encode()
        out.notary_signature.signature = member.encode() + b":tx1"
        return out


class DeadlineExceeded(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        empty = grpc.aio.Metadata()
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, empty, empty, "deadline")


def _run(
    members: Members, start: int = 0, relay: bool = False, attest: bool = True
) -> tuple[Any, float]:
    async def main() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            outcome: Any = await gather_verdict(
                CLUSTER, members.call, REQUEST, start, relay, attest=attest
            )
        except ClusterUnavailable as exc:
            outcome = exc
        return outcome, loop.time() - began

    return vloop.run(0, main)


def test_all_answer_f_plus_1_are_asked_and_suffice() -> None:
    members = Members({})
    outcome, took = _run(members)
    assert sorted(outcome.signatures) == [0, 1] and took < 1.0
    assert [m for _, m in members.asked] == ["m0", "m1"]


def test_the_first_member_orders_and_the_f_others_of_the_first_wave_attest() -> None:
    """The cluster orders a notarisation once: of the f+1 asked at once, only the first is asked
    to order; with `attest=False` (or members too old for the flag) every one orders."""
    members = Members({})
    _run(members, start=2)
    assert [m for _, m in members.asked] == ["m2", "m3"] and members.attesting == ["m3"]
    every = Members({})
    _run(every, attest=False)
    assert [m for _, m in every.asked] == ["m0", "m1"] and every.attesting == []


def test_a_member_asked_in_place_of_a_silent_one_orders_the_request() -> None:
    """The ordering member m0 is silent: the member asked after a hedge must order it itself
    (were it to attest, nobody would order the request until the attesters' own bound)."""
    members = Members({"m0": None})
    outcome, took = _run(members)
    assert sorted(outcome.signatures) == [1, 2] and took < HEDGE_S + 1.0
    assert [m for _, m in members.asked] == ["m0", "m1", "m2"] and members.attesting == ["m1"]


def test_relay_asks_every_member_to_order() -> None:
    members = Members({})
    _run(members, relay=True)
    assert [m for _, m in members.asked] == ["m0", "m1"] and members.attesting == []


def test_a_silent_member_among_the_first_asked_costs_one_hedge_not_the_deadline() -> None:
    """m1 is alone in a view change (or far behind): it answers nothing before the deadline.
    Without hedging, every call starting at m0 or m1 took the full 30 s deadline."""
    members = Members({"m1": None})
    outcome, took = _run(members)
    assert outcome.signed and sorted(outcome.signatures) == [0, 2]
    assert HEDGE_S <= took < HEDGE_S + 1.0 < DEADLINE_S
    assert [m for _, m in members.asked] == ["m0", "m1", "m2"]
    assert members.cancelled == ["m1"]  # nothing keeps running after the verdict


def test_relay_with_a_silent_first_member_moves_on_after_a_hedge() -> None:
    members = Members({"m1": None})
    outcome, took = _run(members, start=1, relay=True)
    assert sorted(outcome.signatures) == [2, 3]
    assert HEDGE_S <= took < HEDGE_S + 1.0


def test_a_member_giving_no_answer_is_replaced_at_once() -> None:
    """m1 refuses the connection: m2 is asked then, not after m0 answered."""
    members = Members({"m0": 0.5})

    async def refusing(
        member: str, request: notarisation_pb2.NotarisationRequest, attest: bool
    ) -> notarisation_pb2.NotarisationResponse:
        if member == "m1":
            raise ConnectionError("refused")
        return await members.call(member, request, attest)

    async def main() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        outcome = await gather_verdict(CLUSTER, refusing, REQUEST)
        return outcome, loop.time()

    outcome, took = vloop.run(0, main)
    assert sorted(outcome.signatures) == [0, 2] and took < 1.0


def test_too_few_answers_is_unavailable_within_the_deadline() -> None:
    members = Members({"m1": None, "m2": None, "m3": None})
    outcome, took = _run(members)
    assert isinstance(outcome, ClusterUnavailable)
    assert [m for _, m in members.asked] == ["m0", "m1", "m2", "m3"]
    assert took <= 3 * HEDGE_S + DEADLINE_S


@pytest.mark.parametrize("start", range(4))
def test_every_start_with_one_silent_member_answers_within_one_hedge(start: int) -> None:
    outcome, took = _run(Members({"m1": None}), start=start)
    assert outcome.signed and 1 not in outcome.signatures and took < HEDGE_S + 1.0


def test_stream_results_count_like_unary_answers() -> None:
    """A member answering through a NotariseStream batch (the SDK's batched calls): a signed
    result is its signature, an INPUT_CONSUMED result a refusal with its conflicts (agreeing
    refusals decide), and an OVERLOADED one no answer (another member is asked instead)."""
    conflict = notarisation_pb2.NotarisationConflict(consuming_tx_id_hash=b"h" * 32)
    consumed = notarisation_pb2.NotarisationResult(reason=R.ERROR_REASON_INPUT_CONSUMED)
    consumed.response.conflicts.append(conflict)
    busy = notarisation_pb2.NotarisationResult(reason=R.ERROR_REASON_OVERLOADED)
    answers = {"m0": busy, "m1": consumed, "m2": consumed}
    asked: list[str] = []

    async def results(
        member: str, request: notarisation_pb2.NotarisationRequest, attest: bool
    ) -> notarisation_pb2.NotarisationResult:
        asked.append(member)
        if member in answers:
            return answers[member]
        signed = notarisation_pb2.NotarisationResult()
        signed.response.tx_id = "tx1"
        signed.response.notary_signature.signer = member.encode()
        signed.response.notary_signature.signature = member.encode() + b":tx1"
        return signed

    async def main() -> Any:
        return await gather_verdict(CLUSTER, results, REQUEST)

    refused = vloop.run(0, main)
    assert not refused.signed and refused.reason == R.ERROR_REASON_INPUT_CONSUMED
    assert refused.conflict_hashes == (b"h" * 32,) and asked == ["m0", "m1", "m2"]
    answers.clear()
    asked.clear()
    signed = vloop.run(0, main)
    assert signed.signed and sorted(signed.signatures) == [0, 1] and asked == ["m0", "m1"]
