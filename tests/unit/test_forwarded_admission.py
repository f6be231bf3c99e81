"""A solo orderer (and a disseminating PBFT-lite replica) does not re-verify the creator
signatures a member peer forwards.

Decision (`rpc/forwarder.py`, `core/txcheck.check_envelope`'s `forwarded`): on a Broadcast
stream whose TLS certificate is a member organisation's peer node, on a channel ordered by
"none" or by PBFT-lite with dissemination, an endorser transaction's creator is identified
but its signature is not verified again (the gateway did, every peer does at commit). Anyone
else, any other ordering, any other transaction type: checked in full.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from ledger_parties import CHANNEL, NOW, endorser_tx, header, kv_rwset, make_parties

from dltmw.core.channel import channel_view
from dltmw.core.errors import ClientError
from dltmw.core.txcheck import check_envelope
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.rpc.forwarder import forwarded_channels, is_peer_node
from dltmw.v1 import common_pb2, config_pb2

PARTIES = make_parties()


def _forged(envelope: bytes) -> bytes:
    """The same envelope with a signature that does not verify (last bytes changed)."""
    env = common_pb2.Envelope.FromString(envelope)
    bad = env.signature[:-2] + bytes([env.signature[-2] ^ 1, env.signature[-1] ^ 1])
    return common_pb2.Envelope(payload=env.payload, signature=bad).SerializeToString()


# --- check_envelope ---------------------------------------------------------------------------


def test_a_forged_creator_signature_is_refused_when_not_forwarded() -> None:
    forged = _forged(endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")])))
    with pytest.raises(ClientError) as exc:
        check_envelope(forged, PARTIES.views, NOW, 900.0, agreements=False)
    assert exc.value.reason_name == "BAD_SIGNATURE"


def test_a_forwarded_envelope_is_identified_but_its_signature_not_verified_again() -> None:
    good = endorser_tx(PARTIES, kv_rwset(writes=[("k", b"v")]))
    forged = _forged(good)
    for envelope in (good, forged):
        checked = check_envelope(
            envelope, PARTIES.views, NOW, 900.0, agreements=False, forwarded={CHANNEL}
        )
        assert checked.creator.org_id == "Org1"
    with pytest.raises(ClientError) as exc:  # forwarded on another channel only
        check_envelope(forged, PARTIES.views, NOW, 900.0, forwarded={"another-channel"})
    assert exc.value.reason_name == "BAD_SIGNATURE"


def test_forwarded_still_refuses_a_non_member_a_missing_signature_and_a_stale_header() -> None:
    from ledger_parties import seal

    outsider = seal(PARTIES.outsider, header(PARTIES.outsider).SerializeToString(), b"")
    unsigned = common_pb2.Envelope(
        payload=common_pb2.Envelope.FromString(endorser_tx(PARTIES, kv_rwset())).payload
    ).SerializeToString()
    cases = [(outsider, "NOT_A_MEMBER"), (unsigned, "BAD_SIGNATURE")]
    for envelope, reason in cases:
        with pytest.raises(ClientError) as exc:
            check_envelope(envelope, PARTIES.views, NOW, 900.0, forwarded={CHANNEL})
        assert exc.value.reason_name == reason
    later = NOW.replace(year=NOW.year + 1)
    with pytest.raises(ClientError) as exc:
        check_envelope(
            endorser_tx(PARTIES, kv_rwset()), PARTIES.views, later, 900.0, forwarded={CHANNEL}
        )
    assert exc.value.reason_name == "TIMESTAMP_OUT_OF_WINDOW"


def test_a_forwarded_private_transaction_is_still_verified() -> None:
    """Only endorser transactions skip the check: config updates and private transactions keep
    the orderer's full admission."""
    from ledger_parties import private_tx

    with pytest.raises(ClientError) as exc:
        check_envelope(_forged(private_tx(PARTIES)), PARTIES.views, NOW, 900.0, forwarded={CHANNEL})
    assert exc.value.reason_name == "BAD_SIGNATURE"


# --- which callers and channels ---------------------------------------------------------------

CAS = {org: make_ca(org) for org in ("Org1", "Org2", "Org9")}


def _view(channel_id: str, ordering: int):  # type: ignore[no-untyped-def]
    """PARTIES' channel under another id and ordering, its members Org1/Org2 of `CAS`."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(PARTIES.view.config)
    config.channel_id = channel_id
    config.ordering = ordering  # type: ignore[assignment]
    del config.organizations[:]
    config.organizations.extend(
        config_pb2.OrganizationConfig(org_id=o, root_certificate_pem=CAS[o].cert_pem)
        for o in ("Org1", "Org2")
    )
    return channel_view(config)


VIEWS = {
    "solo": _view("solo", config_pb2.ORDERING_TYPE_NONE),
    "bft": _view("bft", config_pb2.ORDERING_TYPE_PBFT),
    "js": _view("js", config_pb2.ORDERING_TYPE_JETSTREAM),
}


def _tls(org: str, role: str) -> bytes:
    return issue_cert(CAS[org], org, f"{role}0.{org.lower()}", role, tls=True).cert_pem


@pytest.mark.parametrize(
    ("org", "role", "expected"),
    [
        pytest.param("Org2", "peer", {"solo"}, id="member-peer-solo-channels-only"),
        pytest.param("Org1", "client", set(), id="member-client-none"),
        pytest.param("Org1", "admin", set(), id="member-admin-none"),
        pytest.param("Org1", "orderer", set(), id="orderer-none"),
        pytest.param("Org9", "peer", set(), id="non-member-peer-none"),
    ],
)
def test_only_a_member_peer_node_forwards_and_only_on_solo_channels(
    org: str, role: str, expected: set[str]
) -> None:
    cert = _tls(org, role)
    caller = cert if is_peer_node(cert) else None
    assert forwarded_channels(caller, VIEWS) == expected


def test_no_tls_certificate_forwards_nothing() -> None:
    assert not is_peer_node(None)
    assert not is_peer_node(b"not a certificate")
    assert forwarded_channels(None, VIEWS) == frozenset()


def test_a_pbft_channel_forwards_only_where_no_replica_judges_the_envelope_again() -> None:
    """PBFT-lite with dissemination (`unjudged`: its core takes Broadcast's verdict, no backup
    judges the batched envelopes) skips the check like solo; without it a backup re-applies
    the rule (`rpc/forwarder.py`), and JetStream never skips, whatever the caller says."""
    cert = _tls("Org1", "peer")
    assert forwarded_channels(cert, VIEWS, {"bft"}) == {"solo", "bft"}
    assert forwarded_channels(cert, VIEWS, {"js", "solo"}) == {"solo"}
    assert forwarded_channels(None, VIEWS, {"bft"}) == frozenset()
    assert forwarded_channels(_tls("Org9", "peer"), VIEWS, {"bft"}) == frozenset()


@pytest.mark.parametrize("again", [False, True])
async def test_broadcast_skips_a_forwarded_signature_only_on_a_pbft_channel_nobody_rejudges(
    again: bool,
) -> None:
    """The wiring (`rpc/orderer.py`): on PARTIES' PBFT-lite channel, a member peer's forwarded
    envelope with a forged creator signature is accepted when the channel's orderer does not
    check envelopes again (dissemination) and refused BAD_SIGNATURE when it does."""
    from concurrent.futures import ThreadPoolExecutor

    from dltmw.rpc.orderer import OrdererServicer
    from dltmw.v1 import orderer_service_pb2

    class Ordered:
        checks_envelopes_again = again
        view = PARTIES.view

        def __init__(self) -> None:
            self.got: list[bytes] = []

        async def submit_many(self, envelopes: list[bytes]) -> list[None]:
            self.got += envelopes
            return [None] * len(envelopes)

    assert PARTIES.view.config.ordering == config_pb2.ORDERING_TYPE_PBFT
    rwset = kv_rwset(writes=[("k", b"forwarded %d" % again)])
    # stamped now: Broadcast checks the timestamp against the wall clock, not against NOW
    forged = _forged(endorser_tx(PARTIES, rwset, h=header(PARTIES.user, at=datetime.now(UTC))))
    ordered = Ordered()
    with ThreadPoolExecutor(1) as pool:
        servicer = OrdererServicer({CHANNEL: ordered}, 900.0, pool)  # type: ignore[dict-item]
        request = orderer_service_pb2.BroadcastRequest(envelopes=[forged])
        response = await servicer._handle(request, PARTIES.peer1.certificate_der)
    (result,) = response.results
    if again:
        assert not result.accepted and ordered.got == []
    else:
        assert result.accepted and ordered.got == [forged]
