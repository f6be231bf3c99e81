"""Per-transaction work done once, not per item (lane HOT, issue 13 item 5).

Each saving keeps its result exactly: the contract still sees its channel's trust facts, the
endorser's own signature still hits the verified-signature memo, one shared ECDSA parameter
object signs and verifies exactly as a fresh one did.
"""

from __future__ import annotations

import asyncio
import hashlib
import types
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from dltmw.core import identity as identity_mod
from dltmw.core.identity import Membership, SigningIdentity
from dltmw.core.txcheck import ChannelTrust, CheckedProposal
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.runtime.roles.peer.channel import PeerChannel
from dltmw.v1 import common_pb2, config_pb2, proposal_pb2


def _signer() -> tuple[SigningIdentity, Membership]:
    ca = make_ca("Org1")
    issued = issue_cert(ca, "Org1", "peer0", "peer")
    signer = SigningIdentity.from_pem("Org1", issued.cert_pem, issued.key_pem)
    return signer, Membership({"Org1": ca.cert_pem})


def test_the_endorsers_own_signature_hits_the_memo_with_the_identity_id_hashed_once() -> None:
    signer, membership = _signer()
    assert signer.identity_id == hashlib.sha256(signer.certificate_der).digest()
    data = b"response payload" + signer.identity_bytes
    signature = signer.sign(data)
    membership.remember_own_signature(signer, data, signature)
    with mock.patch.object(identity_mod, "verify_signature", side_effect=AssertionError):
        who = membership.verify(signer.identity_bytes, data, signature, datetime.now(UTC))
    assert who.identity_id == signer.identity_id


def test_the_shared_ecdsa_parameters_sign_low_s_and_verify_like_fresh_ones() -> None:
    signer, membership = _signer()
    for i in range(20):
        data = f"item {i}".encode()
        signature = signer.sign(data)
        membership.verify(signer.identity_bytes, data, signature, datetime.now(UTC), remember=False)
        _, s = identity_mod.decode_dss_signature(signature)
        assert s <= identity_mod.P256_ORDER // 2


def _checked(tx_id: str) -> CheckedProposal:
    signer, membership = _signer()
    header = common_pb2.Header(channel_id="ch1", tx_id=tx_id, creator=signer.identity_bytes)
    header.timestamp.seconds = 1_700_000_000
    header.timestamp.nanos = 7
    creator = membership.identify(signer.identity_bytes, datetime.now(UTC))
    invocation = proposal_pb2.ContractInvocation(contract="kv", function="put")
    return CheckedProposal(header, header.SerializeToString(), b"p", b"s", invocation, creator)


def test_tx_info_carries_the_signed_header_and_the_channels_trust() -> None:
    trust = ChannelTrust(((("other"), b"\x01" * 32),), b"\x02" * 32, (b"notary",))
    info = _checked("t1").tx_info(trust)
    assert (info.tx_id, info.channel_id, info.creator_org) == ("t1", "ch1", "Org1")
    assert (info.timestamp_s, info.timestamp_nanos) == (1_700_000_000, 7)
    assert info.creator_roles == frozenset({"peer"})
    assert info.trusted_genesis == trust.trusted_genesis
    assert info.channel_genesis == trust.channel_genesis
    assert info.trusted_notaries == trust.trusted_notaries


def _channel_stub(config: config_pb2.ChannelConfig) -> Any:
    seen: list[tuple[str, ChannelTrust]] = []

    async def read_snapshot(run: Any) -> Any:
        reader = types.SimpleNamespace(last_block_number=lambda: 3)
        return run(reader)

    def simulate_only(
        reader: Any, checked: CheckedProposal, trust: ChannelTrust, number: int, clock: Any
    ) -> str:
        seen.append((checked.tx_id, trust))
        return checked.tx_id

    stub = types.SimpleNamespace(
        view=types.SimpleNamespace(config=config, channel_id="ch1"),
        genesis_hash=b"\x09" * 32,
        ledger=types.SimpleNamespace(read_snapshot=read_snapshot),
        lifecycle=types.SimpleNamespace(builtin_of=lambda name: None),  # a user contract
        ctx=types.SimpleNamespace(tracer=types.SimpleNamespace(enabled=False)),
        _simulate=simulate_only,
        _sign=lambda responses, batches: None,  # tests/unit/test_endorsement_batch.py
        seen=seen,
    )
    stub._trust = lambda: PeerChannel._trust(stub)
    stub._endorse_once = lambda batch, check_duplicates: PeerChannel._endorse_once(
        stub, batch, check_duplicates
    )
    return stub


def test_a_batch_of_proposals_is_simulated_with_the_trust_of_the_config_in_force() -> None:
    config = config_pb2.ChannelConfig(channel_id="ch1")
    config.trusted_channels.add(channel_id="other", genesis_hash=b"\x01" * 32)
    config.trusted_notaries.append(b"notary-identity")
    stub = _channel_stub(config)
    batch = [_checked("t1"), _checked("t2")]
    out = asyncio.run(PeerChannel.endorse_many(stub, batch))
    assert out == ["t1", "t2"]
    expected = ChannelTrust(((("other"), b"\x01" * 32),), b"\x09" * 32, (b"notary-identity",))
    assert stub.seen == [("t1", expected), ("t2", expected)]
