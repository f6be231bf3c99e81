"""Agreement before commit (core/privacy/agreement.py): the commit rule every node applies to a
private transaction's agreements, admission's refusals, and each recipient's check at execution
(STALE / TAMPERED in core/privacy/blocks.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltmw.contracts import builtin_contract
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.errors import ClientError
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import SigningIdentity
from dltmw.core.privacy import agreement as ag
from dltmw.core.privacy import conflict
from dltmw.core.privacy.blocks import TxOutcome, held_to_agreement
from dltmw.core.privacy.envelope import PrivacyKey
from dltmw.core.privacy.execution import EXECUTED, STALE, TAMPERED, execute
from dltmw.core.rwset import StateEntry, Version
from dltmw.core.txcheck import (
    check_envelope,
    check_orderable,
    check_transaction,
    private_transaction,
)
from dltmw.pki.ca import FRESH, issue_cert, make_ca
from dltmw.v1 import (
    common_pb2,
    config_pb2,
    private_agreement_pb2,
    private_payload_pb2,
    transaction_pb2,
)

A = private_agreement_pb2
C = transaction_pb2
CHANNEL = "trades"
HASH = bytes(range(32))
NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs
NONCE = b"n" * 24
HASHES = (b"p" * 32, b"d" * 32)
Parties = tuple[ChannelView, SigningIdentity, list[tuple[SigningIdentity, bytes]]]


def _view(policy: int) -> Parties:
    org1, org2, orderer_ca = (make_ca(o, material=AT_NOW) for o in ("Org1", "Org2", "OrdererOrg"))
    orderer = issue_cert(orderer_ca, "OrdererOrg", "orderer0", "orderer", material=AT_NOW)
    orderer_id = SigningIdentity.from_pem("OrdererOrg", orderer.cert_pem, orderer.key_pem)
    user = issue_cert(org1, "Org1", "user1", "client", material=AT_NOW)
    peers: list[tuple[SigningIdentity, bytes]] = []
    nodes = []
    for i, (ca, org) in enumerate([(org1, "Org1"), (org2, "Org2"), (org2, "Org2")]):
        cert = issue_cert(ca, org, f"peer{i}", "peer", material=AT_NOW)
        ident = SigningIdentity.from_pem(org, cert.cert_pem, cert.key_pem)
        key = PrivacyKey(bytes([i + 1]) * 32).public_key
        peers.append((ident, key))
        nodes.append(
            config_pb2.NodeConfig(
                node_id=f"peer{i}",
                org_id=org,
                identity=ident.identity_bytes,
                privacy_public_key=key,
            )
        )
    config = config_pb2.ChannelConfig(
        channel_id=CHANNEL,
        organizations=[
            config_pb2.OrganizationConfig(org_id="Org1", root_certificate_pem=org1.cert_pem),
            config_pb2.OrganizationConfig(org_id="Org2", root_certificate_pem=org2.cert_pem),
        ],
        orderer_organizations=[
            config_pb2.OrganizationConfig(
                org_id="OrdererOrg", root_certificate_pem=orderer_ca.cert_pem
            )
        ],
        orderers=[
            config_pb2.NodeConfig(
                node_id="orderer0", org_id="OrdererOrg", identity=orderer_id.identity_bytes
            )
        ],
        peers=nodes,
        ordering=config_pb2.ORDERING_TYPE_NONE,
        batch=config_pb2.BatchConfig(max_tx_count=10, max_bytes=1 << 20, timeout_ms=200),
        private_agreement=policy,  # type: ignore[arg-type]
    )
    user_id = SigningIdentity.from_pem("Org1", user.cert_pem, user.key_pem)
    return channel_view(config), user_id, peers


@pytest.fixture(scope="module")
def parties() -> Parties:
    return _view(A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS)


def tx_id_of(user: SigningIdentity) -> str:
    return compute_tx_id(NONCE, user.identity_bytes)


def sign(
    signer: SigningIdentity,
    tx_id: str,
    recipients: list[bytes],
    hashes: tuple[bytes, bytes] = HASHES,
    verdict: int = ag.AGREE,
    payload_hash: bytes = HASH,
) -> A.PrivateAgreement:
    body = ag.agreement_body(CHANNEL, tx_id, payload_hash, hashes, recipients, verdict)
    return A.PrivateAgreement(
        body=body, signer=signer.identity_bytes, signature=signer.sign(ag.signing_bytes(body))
    )


def envelope(
    user: SigningIdentity,
    agreements: list[A.PrivateAgreement],
    data: bytes = b"",
    at: datetime = NOW,
) -> bytes:
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION,
        channel_id=CHANNEL,
        tx_id=tx_id_of(user),
        creator=user.identity_bytes,
        nonce=NONCE,
    )
    header.timestamp.FromDatetime(at)
    data = (
        data or C.PrivateTransaction(payload_hash=HASH, agreements=agreements).SerializeToString()
    )
    payload = common_pb2.Payload(header=header.SerializeToString(), data=data).SerializeToString()
    return common_pb2.Envelope(payload=payload, signature=user.sign(payload)).SerializeToString()


def both(parties: Parties) -> list[A.PrivateAgreement]:
    """Peers 0 and 1 are the recipients; both agree."""
    _, user, peers = parties
    keys = [peers[0][1], peers[1][1]]
    return [sign(peers[0][0], tx_id_of(user), keys), sign(peers[1][0], tx_id_of(user), keys)]


def verdicts(parties: Parties, agreements: list[A.PrivateAgreement]) -> tuple[int, str]:
    """(commit code, admission refusal reason or "admitted")."""
    view, user, _ = parties
    env = envelope(user, agreements)
    code = check_transaction(env, view).code
    try:
        check_envelope(env, {CHANNEL: view}, NOW, 900)
    except ClientError as exc:
        return code, exc.reason_name
    return code, "admitted"


def test_every_recipient_agreeing_is_valid_and_admitted(parties: Parties) -> None:
    assert verdicts(parties, both(parties)) == (C.TX_VALIDATION_CODE_VALID, "admitted")


def _forged(p: Parties) -> list[A.PrivateAgreement]:
    good = both(p)
    other = ag.agreement_body(CHANNEL, tx_id_of(p[1]), HASH, (b"x" * 32, b"d" * 32), [], ag.AGREE)
    return [
        A.PrivateAgreement(body=other, signer=good[0].signer, signature=good[0].signature),
        good[1],
    ]


def _non_recipient(p: Parties) -> list[A.PrivateAgreement]:
    _, user, peers = p
    keys = [peers[0][1], peers[1][1]]
    return [*both(p), sign(peers[2][0], tx_id_of(user), keys)]


def _client_signed(p: Parties) -> list[A.PrivateAgreement]:
    _, user, peers = p
    keys = [peers[0][1], peers[1][1]]
    return [sign(peers[0][0], tx_id_of(user), keys), sign(user, tx_id_of(user), keys)]


def _replayed(p: Parties) -> list[A.PrivateAgreement]:
    _, user, peers = p
    keys = [peers[0][1], peers[1][1]]
    other_tx = compute_tx_id(b"o" * 24, user.identity_bytes)
    return [sign(peers[0][0], tx_id_of(user), keys), sign(peers[1][0], other_tx, keys)]


def _other_payload(p: Parties) -> list[A.PrivateAgreement]:
    _, user, peers = p
    keys = [peers[0][1], peers[1][1]]
    return [
        sign(peers[0][0], tx_id_of(user), keys),
        sign(peers[1][0], tx_id_of(user), keys, payload_hash=bytes(32)),
    ]


def _mismatched(p: Parties) -> list[A.PrivateAgreement]:
    _, user, peers = p
    keys = [peers[0][1], peers[1][1]]
    return [
        sign(peers[0][0], tx_id_of(user), keys),
        sign(peers[1][0], tx_id_of(user), keys, hashes=(b"p" * 32, b"e" * 32)),
    ]


def _disagree(p: Parties) -> list[A.PrivateAgreement]:
    _, user, peers = p
    keys = [peers[0][1], peers[1][1]]
    return [
        sign(peers[0][0], tx_id_of(user), keys),
        sign(peers[1][0], tx_id_of(user), keys, (b"q" * 32, b"e" * 32), ag.DISAGREE),
    ]


def _one_missing(p: Parties) -> list[A.PrivateAgreement]:
    return both(p)[:1]


def _duplicate(p: Parties) -> list[A.PrivateAgreement]:
    good = both(p)
    return [good[0], good[0]]


def _no_verdict(p: Parties) -> list[A.PrivateAgreement]:
    _, user, peers = p
    keys = [peers[0][1], peers[1][1]]
    return [sign(peers[0][0], tx_id_of(user), keys, verdict=0), both(p)[1]]


@pytest.mark.parametrize(
    ("make", "code", "admission"),
    [
        (lambda p: [], C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_MISSING, "PRIVATE_AGREEMENT_MISSING"),
        (_one_missing, C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_MISSING, "PRIVATE_AGREEMENT_MISSING"),
        (
            _forged,
            C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_BAD_SIGNATURE,
            "PRIVATE_AGREEMENT_BAD_SIGNATURE",
        ),
        (
            _duplicate,
            C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_BAD_SIGNATURE,
            "PRIVATE_AGREEMENT_BAD_SIGNATURE",
        ),
        (
            _no_verdict,
            C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_BAD_SIGNATURE,
            "PRIVATE_AGREEMENT_BAD_SIGNATURE",
        ),
        (
            _non_recipient,
            C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_NOT_RECIPIENT,
            "PRIVATE_AGREEMENT_NOT_RECIPIENT",
        ),
        (
            _client_signed,
            C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_NOT_RECIPIENT,
            "PRIVATE_AGREEMENT_NOT_RECIPIENT",
        ),
        (_replayed, C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_WRONG_TX, "PRIVATE_AGREEMENT_WRONG_TX"),
        (
            _other_payload,
            C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_WRONG_TX,
            "PRIVATE_AGREEMENT_WRONG_TX",
        ),
        (_mismatched, C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_MISMATCH, "admitted"),
        (_disagree, C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_DISAGREED, "admitted"),
    ],
    ids=[
        "none-where-required",
        "a-recipient-did-not-sign",
        "forged-signature",
        "one-signer-twice",
        "no-verdict",
        "signed-by-a-peer-that-is-not-a-recipient",
        "signed-by-a-client-not-a-peer",
        "replayed-from-another-tx",
        "names-another-payload",
        "parties-name-different-deltas-ordered-as-evidence",
        "a-disagreement-ordered-as-evidence",
    ],
)
def test_bad_agreements_get_their_code_everywhere_and_admission_refuses_submitter_faults(
    parties: Parties, make: object, code: int, admission: str
) -> None:
    assert callable(make)
    assert verdicts(parties, make(parties)) == (code, admission)


def test_the_orderer_leaves_agreements_to_the_gateway_and_commit(parties: Parties) -> None:
    """A forged agreement: the gateway's admission refuses it; the orderer's (Broadcast with
    `agreements=False`, and the clock-free ordering rule) does not re-check agreement
    signatures, and every peer's commit records the transaction BAD_SIGNATURE."""
    view, user, _ = parties
    env = envelope(user, _forged(parties))
    with pytest.raises(ClientError) as refused:
        check_envelope(env, {CHANNEL: view}, NOW, 900)
    assert refused.value.reason_name == "PRIVATE_AGREEMENT_BAD_SIGNATURE"
    admitted = check_envelope(env, {CHANNEL: view}, NOW, 900, agreements=False)
    assert admitted.header.tx_id == tx_id_of(user)
    assert check_orderable(env, {CHANNEL: view}).header.tx_id == tx_id_of(user)
    code = check_transaction(env, view).code
    assert code == C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_BAD_SIGNATURE


class _Ordered:
    """An `Ordering` double for Broadcast: takes whatever admission let through."""

    checks_envelopes_again = False

    def __init__(self, view: Any) -> None:
        self.view = view
        self.got: list[bytes] = []

    async def submit_many(self, envelopes: list[bytes]) -> list[None]:
        self.got += envelopes
        return [None] * len(envelopes)


async def test_broadcast_orders_a_forged_agreement_for_commit_to_judge(parties: Parties) -> None:
    """The orderer's Broadcast (`rpc/orderer.py`) admits with `agreements=False`."""
    from concurrent.futures import ThreadPoolExecutor

    from dltmw.rpc.orderer import OrdererServicer
    from dltmw.v1 import orderer_service_pb2

    view, user, _ = parties
    ordered = _Ordered(view)
    # stamped now: Broadcast checks the timestamp against the wall clock, not against NOW
    env = envelope(user, _forged(parties), at=datetime.now(UTC))
    with ThreadPoolExecutor(1) as pool:
        servicer = OrdererServicer({CHANNEL: ordered}, 900.0, pool)  # type: ignore[dict-item]
        request = orderer_service_pb2.BroadcastRequest(envelopes=[env])
        response = await servicer._handle(request)
    assert [r.accepted for r in response.results] == [True] and ordered.got == [env]


def test_a_channel_without_the_policy_keeps_the_old_path_but_checks_what_is_carried() -> None:
    old = _view(A.PRIVATE_AGREEMENT_POLICY_UNSPECIFIED)
    assert verdicts(old, []) == (C.TX_VALIDATION_CODE_VALID, "admitted")
    assert verdicts(old, _one_missing(old))[0] == C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_MISSING


def test_an_extra_field_inside_an_agreement_is_refused(parties: Parties) -> None:
    view, user, _ = parties
    good = both(parties)
    inner = good[0].SerializeToString() + b"\x4a\x05hello"  # field 9 smuggled into an agreement
    carrier = A.PrivateAgreement.FromString(inner)  # keeps the unknown field when serialised
    smuggled = C.PrivateTransaction(payload_hash=HASH, agreements=[carrier, good[1]])
    smuggled_bytes = smuggled.SerializeToString()
    assert b"hello" in smuggled_bytes
    assert private_transaction(smuggled_bytes) is None
    env = envelope(user, [], smuggled_bytes)
    assert check_transaction(env, view).code == C.TX_VALIDATION_CODE_BAD_PAYLOAD
    with pytest.raises(ClientError) as exc:
        check_envelope(env, {CHANNEL: view}, NOW, 900)
    assert exc.value.reason_name == "INVALID_FIELD"


@settings(max_examples=30, deadline=None)
@given(signers=st.lists(st.sampled_from([0, 1]), unique=True), reverse=st.booleans())
def test_valid_exactly_when_every_recipient_signed_in_any_order(
    signers: list[int], reverse: bool
) -> None:
    p = PARTIES
    _, user, peers = p
    keys = [peers[0][1], peers[1][1]]
    agreements = [sign(peers[i][0], tx_id_of(user), keys) for i in signers]
    if reverse:
        agreements.reverse()
    code = ag.agreement_code(agreements, p[0], tx_id_of(user), HASH, NOW)
    expected = C.TX_VALIDATION_CODE_VALID if len(signers) == 2 else ag.MISSING
    assert code == expected


PARTIES = _view(A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS)


# --- each recipient's check at execution --------------------------------------------------


class State:
    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        value = self.values.get(key) if namespace == "kv" else None
        return None if value is None else (value, Version(1, 0))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        return []


def _run(values: dict[str, bytes]) -> TxOutcome:
    invocation = private_payload_pb2.PrivateInvocation(
        contract="kv", function="put", args=[b"k", b"v2"]
    )
    out = execute(builtin_contract, invocation, State(values), Version(2, 0))
    return TxOutcome(
        0, "t", HASH, out.status, out.writes, out.state_hash, pre_state_hash=out.pre_state_hash
    )


def test_pre_state_hash_depends_on_the_values_the_transaction_touched() -> None:
    assert _run({"k": b"v1"}).pre_state_hash == _run({"k": b"v1", "other": b"x"}).pre_state_hash
    assert _run({"k": b"v1"}).pre_state_hash != _run({"k": b"tampered"}).pre_state_hash
    assert _run({"k": b"v1"}).status == EXECUTED


def test_a_recipient_checks_its_own_execution_against_the_agreement() -> None:
    honest = _run({"k": b"v1"})
    agreed = (honest.pre_state_hash, honest.state_hash)
    assert held_to_agreement(honest, agreed) is honest
    assert held_to_agreement(honest, None) is honest  # no agreement carried: as before
    stale = held_to_agreement(_run({"k": b"changed-since"}), agreed)
    assert (stale.status, stale.writes) == (STALE, ())
    other_delta = held_to_agreement(honest, (honest.pre_state_hash, b"z" * 32))
    assert (other_delta.status, other_delta.writes) == (TAMPERED, ())


def test_verdict_compares_both_hashes() -> None:
    assert ag.verdict_on(HASHES, HASHES) == ag.AGREE
    assert ag.verdict_on((HASHES[0], b"x"), HASHES) == ag.DISAGREE
    assert ag.verdict_on((b"x", HASHES[1]), HASHES) == ag.DISAGREE


def test_agreements_naming_other_private_keys_mismatch(parties: Parties) -> None:
    view, user, peers = parties
    keys = [peers[0][1], peers[1][1]]
    tx = tx_id_of(user)

    def signed(signer: SigningIdentity, written: list[str]) -> A.PrivateAgreement:
        hashed = conflict.hashed(keys, "kv", [("k", None)], written)
        body = ag.agreement_body(CHANNEL, tx, HASH, HASHES, keys, ag.AGREE, hashed)
        return A.PrivateAgreement(
            body=body, signer=signer.identity_bytes, signature=signer.sign(ag.signing_bytes(body))
        )

    agreed = [signed(peers[0][0], ["k"]), signed(peers[1][0], ["k"])]
    checked = check_transaction(envelope(user, agreed), view)
    assert checked.code == C.TX_VALIDATION_CODE_VALID
    assert checked.rwset == conflict.private_rwset(
        A.PrivateAgreementBody.FromString(agreed[0].body)
    )
    assert [r.key for r in checked.rwset.reads] == [conflict.key_hash(keys, "kv", "k").hex()]
    other = [signed(peers[0][0], ["k"]), signed(peers[1][0], [])]
    assert verdicts(parties, other) == (C.TX_VALIDATION_CODE_PRIVATE_AGREEMENT_MISMATCH, "admitted")


def test_a_group_transaction_needs_its_members_peers_and_no_one_else(parties: Parties) -> None:
    """Privacy groups (core/privacy/groups.py): the recipients of a group transaction are the
    group's peers, so its required agreements are theirs; a channel peer outside the group
    cannot agree (52), and a member's peer missing is 50."""
    from dltmw.core.privacy.groups import parties as group_parties

    view, user, peers = parties
    keys = sorted(group_parties(view.config).group_keys(["Org1"]))
    assert keys == [peers[0][1]]  # group {Org1}: peer0 only (no auditors on this channel)
    member = sign(peers[0][0], tx_id_of(user), keys)
    outsider = sign(peers[1][0], tx_id_of(user), keys)
    assert verdicts(parties, [member]) == (ag.VALID, "admitted")
    assert verdicts(parties, [member, outsider]) == (
        ag.NOT_RECIPIENT,
        "PRIVATE_AGREEMENT_NOT_RECIPIENT",
    )
    wider = sorted(group_parties(view.config).group_keys(["Org1", "Org2"]))
    assert verdicts(parties, [sign(peers[0][0], tx_id_of(user), wider)]) == (
        ag.MISSING,
        "PRIVATE_AGREEMENT_MISSING",
    )
