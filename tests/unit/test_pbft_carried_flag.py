"""The carried certificate behind the channel flag `batch.pbft_carried_batches`
(`PbftConfig.carried`; docs/ordering.md, "The primary's own batch", docs/deploy.md "Upgrades").

Off (channels made before the flag): the primary's own batch is acked by f+1 replicas like any
other and a carried certificate needs f+1 acks — how a release before pbft13 judges one (it
cannot read the field), so old and new replicas of such a channel decide alike. On: pbft13's
carried path (certified by the origin's own ack, no ack round).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from pbft_messages import KEYS, signed

from dltmw.core.pbft import ClientRequest, Envelope, PbftConfig, batch_digest
from dltmw.core.pbft.availability import (
    AvailabilityRule,
    ack_message,
    certificate_error,
    make_certificate,
    parse_certificate,
)
from dltmw.core.pbft.certs import Checker
from dltmw.core.pbft.disseminating import DisseminatingReplica
from dltmw.core.pbft.dissemination import DisseminationConfig
from dltmw.v1 import replica_pb2

ON = PbftConfig(n=4, checkpoint_interval=4, batch_size_max=4, carried=True)
OFF = replace(ON, carried=False)
DIS = DisseminationConfig(batch_count_max=2, batch_wait_ticks=2, retransmit_ticks=5)
REQS = [KEYS.make_request(0, i) for i in range(2)]
DIGEST = batch_digest(REQS)


def core(me: int, config: PbftConfig) -> DisseminatingReplica:
    return DisseminatingReplica(config, me, KEYS.signer(me), KEYS.verify, DIS, KEYS.request_ok)


def parsed(envelope: Envelope) -> replica_pb2.ReplicaMessage:
    message = replica_pb2.ReplicaMessage()
    message.ParseFromString(envelope.payload)
    return message


def kinds(send: tuple[tuple[int, Envelope], ...]) -> list[tuple[int, str | None]]:
    return sorted((peer, parsed(e).WhichOneof("body")) for peer, e in send)


def own_certificate(origin: DisseminatingReplica) -> replica_pb2.AvailabilityCertificate | None:
    """The certificate of the origin's first batch (None: not certified yet)."""
    own = origin.disseminator.own[1]
    if own.certificate is None:
        return None
    cert = parse_certificate(own.certificate)
    assert cert is not None and cert.carried == own.carried
    return cert


def primary_batch(
    config: PbftConfig,
) -> tuple[DisseminatingReplica, tuple[tuple[int, Envelope], ...]]:
    """Replica 0, primary of view 0, forms a full batch of its own."""
    primary = core(0, config)
    for request in REQS:
        primary.step(ClientRequest(request))
    return primary, primary.ready().send


def test_with_the_flag_off_the_primarys_own_batch_is_acked_before_it_is_proposed() -> None:
    primary, sent = primary_batch(OFF)
    assert kinds(sent) == [(1, "batch"), (2, "batch"), (3, "batch")]
    assert own_certificate(primary) is None  # waits for f+1 acks
    backup = core(2, OFF)
    backup.step(next(e for peer, e in sent if peer == 2))
    answer = backup.ready().send
    assert kinds(answer) == [(0, "batch_ack")]  # the backup acks the primary's batch
    primary.step(answer[0][1])
    primary.ready()
    cert = own_certificate(primary)
    assert cert is not None and not cert.carried
    assert sorted(a.replica for a in cert.acks) == [0, 2]


def test_with_the_flag_on_the_primarys_own_batch_is_carried_without_acks() -> None:
    primary, sent = primary_batch(ON)
    cert = own_certificate(primary)
    assert cert is not None and cert.carried and [a.replica for a in cert.acks] == [0]
    backup = core(2, ON)
    backup.step(next(e for peer, e in sent if peer == 2))
    assert kinds(backup.ready().send) == []  # stored, not acked: its prepare stands for it


def carried(ackers: list[int]) -> replica_pb2.AvailabilityCertificate:
    acks = [signed(i, ack_message(0, 1, DIGEST)) for i in ackers]
    cert = parse_certificate(make_certificate(0, 1, DIGEST, 2, acks, carried=True))
    assert cert is not None
    return cert


@pytest.mark.parametrize(
    ("config", "ackers", "error"),
    [
        (ON, [0], None),
        (OFF, [0], "certificate-without-f+1-acks"),  # as a release that cannot read `carried`
        (OFF, [0, 2], None),  # the field ignored: f+1 acks make it an ordinary certificate
    ],
    ids=["on-own-ack", "off-own-ack", "off-f+1-acks"],
)
def test_the_rule_judges_a_carried_certificate_by_the_flag(
    config: PbftConfig, ackers: list[int], error: str | None
) -> None:
    checker = Checker(config, KEYS.verify, batch_digest, lambda _r: True)
    cert = carried(ackers)
    assert certificate_error(checker, cert) == error
    assert AvailabilityRule(checker)(cert.SerializeToString()) is (error is None)


@pytest.mark.parametrize(("config", "prepares"), [(ON, True), (OFF, False)], ids=["on", "off"])
def test_a_backup_prepares_the_primarys_carried_certificate_only_with_the_flag_on(
    config: PbftConfig, prepares: bool
) -> None:
    """A primary that carries, seen by a backup whose channel has the flag off (what an old
    release does, the mixed case the flag exists for): the backup holds the batch and still
    refuses the slot; with the flag on it prepares."""
    primary, sent = primary_batch(ON)
    primary.tick(1)  # the replica's batch timer: the pre-prepare naming the carried certificate
    sent += primary.ready().send
    assert "pre_prepare" in [kind for _peer, kind in kinds(sent)]
    backup = core(2, config)
    for peer, envelope in sent:
        if peer == 2:
            backup.step(envelope)
    assert ("prepare" in [kind for _peer, kind in kinds(backup.ready().send)]) is prepares
