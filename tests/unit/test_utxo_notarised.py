"""check_notarised / check_cluster_notarised / backchain.check_notary with real keys: a single
notary needs its one signature; a notary cluster (3f+1 members, identities from the network map)
needs f+1 valid signatures of DISTINCT members over the tx_id."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from utxo_parties import NOW, nonce

from dltmw.core.errors import ClientError
from dltmw.core.identity import Membership, SigningIdentity
from dltmw.core.utxo.build import TxSpec, build_transaction, cash_output, sign_transaction
from dltmw.core.utxo.model import Command, read_transaction
from dltmw.core.utxo.verify import (
    SignedTx,
    check_cluster_notarised,
    check_notarised,
    read_signed,
)
from dltmw.net.netmap import NetworkMap, Party
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.runtime.roles.vault.backchain import check_notary
from dltmw.v1 import errors_pb2

ORGS = ("Bank", "Exchange", "BrokerA", "BrokerB")
CAS = {org: make_ca(org) for org in ORGS}
ROOTS = {org: ca.cert_pem for org, ca in CAS.items()}
MEMBERSHIP = Membership(ROOTS)


def _ident(org: str, name: str) -> SigningIdentity:
    issued = issue_cert(CAS[org], org, name, "peer")
    return SigningIdentity.from_pem(org, issued.cert_pem, issued.key_pem)


MEMBERS = [_ident(org, f"notary.{i}") for i, org in enumerate(ORGS)]  # n = 4, f = 1
IDS = [m.identity_bytes for m in MEMBERS]
BANK = _ident("Bank", "peer.bank")


def _stx(
    cluster_sigs: Sequence[tuple[SigningIdentity, SigningIdentity]] = (),
    single: SigningIdentity | None = None,
    notary: str = "notaries",
) -> SignedTx:
    """An issuance signed by the bank; cluster_sigs = (claimed signer, actual key) pairs."""
    me = BANK.identity_bytes
    raw = build_transaction(
        TxSpec(
            notary=notary,
            nonce=nonce(),
            outputs=[cash_output(me, me, "JPY", 100)],
            commands=[Command("cash", "issue", (me,))],
        )
    )
    wire = read_transaction(raw)
    msg = sign_transaction(raw, wire.tx_id, [BANK])
    for claimed, key in cluster_sigs:
        msg.notary_signatures.add(
            signer=claimed.identity_bytes, signature=key.sign(wire.tx_id.encode())
        )
    if single is not None:
        msg.notary_signature.signer = single.identity_bytes
        msg.notary_signature.signature = single.sign(wire.tx_id.encode())
    return read_signed(msg.SerializeToString())


def _refused(stx: SignedTx) -> str:
    with pytest.raises(ClientError) as err:
        check_cluster_notarised(stx, IDS, MEMBERSHIP, NOW)
    assert err.value.reason == errors_pb2.ERROR_REASON_BAD_SIGNATURE
    return str(err.value)


def test_f_plus_one_distinct_members_suffice() -> None:
    a, b, c, _ = MEMBERS
    check_cluster_notarised(_stx([(a, a), (c, c)]), IDS, MEMBERSHIP, NOW)
    check_cluster_notarised(_stx([(a, a), (b, b), (c, c)]), IDS, MEMBERSHIP, NOW)


def test_f_member_signatures_are_refused() -> None:
    a = MEMBERS[0]
    assert "1 valid notary cluster member signatures, 2 needed" in _refused(_stx([(a, a)]))
    assert "0 valid" in _refused(_stx([]))


def test_a_duplicate_member_counts_once() -> None:
    a = MEMBERS[0]
    _refused(_stx([(a, a), (a, a)]))


def test_non_member_and_forged_signatures_are_ignored() -> None:
    a, b = MEMBERS[0], MEMBERS[1]
    # the bank is a member organisation's identity but not a cluster member
    _refused(_stx([(a, a), (BANK, BANK)]))
    # b's name with a's key: does not verify, not counted
    _refused(_stx([(a, a), (b, a)]))
    # the single-notary field does not stand in for cluster signatures
    _refused(_stx([(a, a)], single=b))


def test_single_notary_needs_its_one_signature() -> None:
    a, b = MEMBERS[0], MEMBERS[1]
    check_notarised(_stx(single=a, notary="n0"), a.identity_bytes, MEMBERSHIP, NOW)
    for stx in (_stx(notary="n0"), _stx(single=b, notary="n0"), _stx([(a, a)], notary="n0")):
        with pytest.raises(ClientError) as err:
            check_notarised(stx, a.identity_bytes, MEMBERSHIP, NOW)
        assert err.value.reason == errors_pb2.ERROR_REASON_BAD_SIGNATURE


def _netmap() -> NetworkMap:
    nodes = {
        f"m{i}": Party(f"m{i}", m.org_id, frozenset({"notary"}), IDS[i])
        for i, m in enumerate(MEMBERS)
    }
    nodes["n0"] = Party("n0", "Bank", frozenset({"notary"}), MEMBERS[0].identity_bytes)
    return NetworkMap(
        roots=ROOTS,
        nodes=nodes,
        validating={"n0": False},
        clusters={"notaries": tuple(f"m{i}" for i in range(4))},
    )


def test_check_notary_takes_cluster_members_from_the_network_map() -> None:
    a, b, _, d = MEMBERS
    netmap = _netmap()
    check_notary(_stx([(b, b), (d, d)]), netmap, MEMBERSHIP, NOW)
    with pytest.raises(ClientError) as err:
        check_notary(_stx([(b, b)]), netmap, MEMBERSHIP, NOW)
    assert err.value.reason == errors_pb2.ERROR_REASON_BAD_SIGNATURE
    check_notary(_stx(single=a, notary="n0"), netmap, MEMBERSHIP, NOW)
    with pytest.raises(ClientError) as err:
        check_notary(_stx([(a, a), (b, b)], notary="other"), netmap, MEMBERSHIP, NOW)
    assert err.value.reason == errors_pb2.ERROR_REASON_INVALID_FIELD
