"""A solo orderer's Broadcast verifies a client's creator-batch signature once, not once per
envelope of the batch — and the memo that answers the batch's other envelopes admits nothing
the signature does not cover.

Decision (`core/txcheck.check_envelope`, `rpc/orderer.py`): an orderer whose core never checks
an admitted envelope again (solo, JetStream) keeps no memo of the lone signatures it verifies,
but an envelope with a batch proof is remembered all the same: each other envelope of its batch
asks for the very same check. The memo is keyed by the exact (signer, domain + root from the
envelope's own payload and proof, signature), so an envelope that borrows a valid twin's
signature and proof with another payload or path leads to another root and is verified, and
refused, in full (benchmarks/RESULTS.md, branch solo13).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from ledger_parties import CHANNEL

from dltmw.core import creator_batch
from dltmw.core.channel import ChannelView, channel_view
from dltmw.rpc.orderer import OrdererServicer
from dltmw.v1 import common_pb2, config_pb2, errors_pb2, orderer_service_pb2
from tests.unit.test_agreement_own_signature import _counted
from tests.unit.test_creator_batch import PARTIES, _payloads, _private_payloads


def _view() -> ChannelView:
    """PARTIES' channel taking both kinds' batch proofs, with a fresh memo."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(PARTIES.view.config)
    config.creator_batches = True
    config.private_creator_batches = True
    return channel_view(config)


class Solo:
    """What Broadcast needs of a solo channel: its core checks nothing again."""

    checks_envelopes_again = False

    def __init__(self) -> None:
        self.view = _view()
        self.got: list[bytes] = []

    async def submit_many(self, envelopes: list[bytes]) -> list[None]:
        self.got += envelopes
        return [None] * len(envelopes)


async def _broadcast(solo: Solo, envelopes: list[bytes]) -> list[str]:
    """Each envelope's result through Broadcast's admission: "accepted" or its reason's name."""
    with ThreadPoolExecutor(2) as pool:
        servicer = OrdererServicer({CHANNEL: solo}, 900.0, pool)  # type: ignore[dict-item]
        request = orderer_service_pb2.BroadcastRequest(envelopes=envelopes)
        response = await servicer._handle(request)  # a client's stream: no peer forwards
    names = [errors_pb2.ErrorReason.Name(r.reason) for r in response.results]
    return [
        "accepted" if r.accepted else name.removeprefix("ERROR_REASON_")
        for r, name in zip(response.results, names, strict=True)
    ]


def _batch(private: bool, n: int) -> list[common_pb2.Envelope]:
    """A batch signed now: Broadcast checks its timestamps against the wall clock (a payload
    stamped at import would be out of the window in a long test run)."""
    now = datetime.now(UTC)
    payloads = _private_payloads(n, at=now) if private else _payloads(n, at=now)
    return creator_batch.sign_envelopes(PARTIES.user, payloads)


def _creator_checks(calls: list[bytes]) -> int:
    return sum(c.startswith(creator_batch.ENVELOPE_BATCH_DOMAIN) for c in calls)


@pytest.mark.parametrize("private", [False, True], ids=["endorser", "private"])
async def test_a_batch_signature_is_verified_once_per_solo_orderer(
    private: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    envelopes = _batch(private, 6)
    assert len({e.signature for e in envelopes}) == 1
    solo, calls = Solo(), _counted(monkeypatch)
    raw = [e.SerializeToString() for e in envelopes]
    # the batch over two requests, as a gateway's forwarding may split it
    assert await _broadcast(solo, raw[:2]) + await _broadcast(solo, raw[2:]) == ["accepted"] * 6
    assert solo.got == raw
    # once, or twice when both pool threads checked the first two at once (each misses)
    assert 1 <= _creator_checks(calls) <= 2


def _borrowing(twin: common_pb2.Envelope, other: common_pb2.Envelope, how: str) -> bytes:
    """An envelope carrying `twin`'s valid batch signature, but another payload or path."""
    forged = common_pb2.Envelope()
    forged.CopyFrom(twin)
    if how == "payload":  # another transaction's payload under the twin's proof
        forged.payload = other.payload
    elif how == "path":
        forged.batch_proof.path[0] = bytes(32)
    elif how == "index":  # the twin's proof at its sibling's position
        forged.batch_proof.leaf_index ^= 1
    return forged.SerializeToString()


@pytest.mark.parametrize("private", [False, True], ids=["endorser", "private"])
@pytest.mark.parametrize("how", ["payload", "path", "index"])
async def test_a_twin_s_remembered_batch_signature_admits_no_other_payload_or_proof(
    how: str, private: bool
) -> None:
    """The twin's batch verified first (its signature now in the memo); then, in a later
    request and in the same request after the twin, the borrowed signature is refused."""
    envelopes = _batch(private, 4)
    other = _batch(private, 1)[0]  # signed alone: a valid transaction of the same creator
    solo = Solo()
    raw = [e.SerializeToString() for e in envelopes]
    assert await _broadcast(solo, raw) == ["accepted"] * 4
    forged = _borrowing(envelopes[0], other, how)
    assert await _broadcast(solo, [forged]) == ["BAD_SIGNATURE"]
    assert await _broadcast(solo, [raw[1], forged]) == ["accepted", "BAD_SIGNATURE"]
    assert forged not in solo.got
