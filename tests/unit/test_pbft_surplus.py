"""Surplus votes and acks (`core/pbft/surplus.py`): dropped before their signature is checked
once their quorum is complete, by the core and by the request boundary; checked as before while
they can still count."""

from __future__ import annotations

import pytest
from pbft_messages import KEYS, garbled, signed, vote

from dltmw.core.errors import PeerError
from dltmw.core.pbft import ClientRequest, Envelope, PbftConfig, Replica, batch_digest
from dltmw.core.pbft.availability import ack_message
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.core.pbft.dissemination import DisseminationConfig
from dltmw.rpc.replica import _current
from dltmw.v1 import replica_pb2

CONFIG = PbftConfig(n=4, checkpoint_interval=4, batch_size_max=2, collector=True)
REQS = [KEYS.make_request(0, i) for i in range(4)]
DIGEST = batch_digest(REQS[:2])


class Counting:
    """KEYS.verify, counting the checks by signer."""

    def __init__(self) -> None:
        self.checked: list[int] = []

    def __call__(self, replica: int, payload: bytes, signature: bytes) -> bool:
        self.checked.append(replica)
        return KEYS.verify(replica, payload, signature)


def _collector(verify: Counting) -> Replica:
    primary = Replica(CONFIG, 0, KEYS.signer(0), verify, request_ok=KEYS.request_ok)
    primary.step(ClientRequest(REQS[0]))
    primary.step(ClientRequest(REQS[1]))
    primary.ready()
    return primary


def test_a_prepare_that_can_still_count_is_verified_and_a_forged_one_refused() -> None:
    verify = Counting()
    primary = _collector(verify)
    primary.step(garbled(vote("prepare", 1, 0, 1, DIGEST)))
    assert verify.checked == [1]
    assert primary.counters["bad-signature-or-malformed"] == 1
    assert primary.counters["surplus-vote"] == 0


def test_a_prepare_arriving_once_the_slot_is_prepared_is_dropped_unverified() -> None:
    verify = Counting()
    primary = _collector(verify)
    primary.step(vote("prepare", 1, 0, 1, DIGEST))
    primary.step(vote("prepare", 2, 0, 1, DIGEST))
    kinds = [replica_pb2.ReplicaMessage.FromString(e.payload) for _p, e in primary.ready().send]
    assert any(m.WhichOneof("body") == "prepared_certificate" for m in kinds)
    checked = len(verify.checked)
    primary.step(vote("prepare", 3, 0, 1, DIGEST))
    primary.step(garbled(vote("prepare", 3, 0, 1, DIGEST)))
    assert len(verify.checked) == checked  # neither was verified
    assert primary.counters["surplus-vote"] == 2
    assert primary.counters["bad-signature-or-malformed"] == 0
    # A Commit is never surplus: it carries a block signature and may ask for a certificate.
    primary.step(garbled(vote("commit", 3, 0, 1, DIGEST)))
    assert len(verify.checked) == checked + 1


def test_an_ack_of_a_certified_batch_is_dropped_unverified_and_an_earlier_one_is_checked() -> None:
    verify = Counting()
    dis = DisseminationConfig(batch_count_max=2, batch_wait_ticks=2, retransmit_ticks=5)
    config = PbftConfig(n=4, checkpoint_interval=4, batch_size_max=4)
    origin = DisseminatingReplica(config, 1, KEYS.signer(1), verify, dis, KEYS.request_ok)
    origin.step(ClientRequest(REQS[0]))
    origin.step(ClientRequest(REQS[1]))
    origin.ready()

    def ack(by: int) -> Envelope:
        return signed(by, ack_message(1, 1, DIGEST))

    origin.step(garbled(ack(2)))  # f+1 = 2 acks certify: ours and one more; this one is forged
    assert verify.checked == [2]
    assert origin.counters["bad-signature-or-malformed"] == 1
    origin.step(ack(2))
    assert origin.disseminator.certified, "ours and replica 2's ack certify the batch"
    checked = len(verify.checked)
    origin.step(ack(3))
    origin.step(garbled(ack(0)))
    assert len(verify.checked) == checked
    assert origin.counters["surplus-ack"] == 2


class _Orderer:
    """What `_current` reads of an orderer, with a counting `verify`."""

    def __init__(self) -> None:
        self.config = CONFIG
        self.current_view = 0
        self.checked = 0

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool:
        self.checked += 1
        return KEYS.verify(replica, data, signature)


def _signed_message(envelope: Envelope) -> replica_pb2.SignedReplicaMessage:
    return replica_pb2.SignedReplicaMessage(
        replica=envelope.replica, payload=envelope.payload, signature=envelope.signature
    )


def test_the_boundary_skips_the_check_of_a_message_its_replica_calls_surplus() -> None:
    orderer = _Orderer()
    forged = _signed_message(garbled(vote("prepare", 3, 0, 1, DIGEST)))
    with pytest.raises(PeerError):
        _current(orderer, [forged])  # no surplus predicate: checked and refused
    assert orderer.checked == 1
    handed = _current(orderer, [forged], lambda m: m.WhichOneof("body") == "prepare")
    assert handed == [forged] and orderer.checked == 1  # handed on unchecked: the core drops it
    with pytest.raises(PeerError):  # anything the predicate does not name is still checked
        _current(orderer, [forged], lambda m: m.WhichOneof("body") == "batch_ack")
    assert orderer.checked == 2
