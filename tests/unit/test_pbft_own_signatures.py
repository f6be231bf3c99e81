"""A PBFT-lite replica's own votes, coming back inside certificates, cost no P-256 operation.

`runtime/roles/orderer/own_signatures.py`: what the replica signs (up to a batch's size) is
remembered as checked by the membership in force, so the check of our vote inside a
collector's certificate is a memo hit; another replica's signature, other bytes, or a batch
are verified as before, and the signer is still identified.
"""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest

from dltmw.core import identity as identity_mod
from dltmw.core.identity import Membership, NotAMember, SigningIdentity
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.runtime.roles.orderer.own_signatures import REMEMBERED_BYTES_MAX, remembering_signer


def _orderers() -> tuple[SigningIdentity, SigningIdentity, Membership]:
    ca = make_ca("Org1")
    me, other = (
        SigningIdentity.from_pem("Org1", i.cert_pem, i.key_pem)
        for i in (issue_cert(ca, "Org1", f"orderer{n}", "orderer") for n in (0, 1))
    )
    return me, other, Membership({"Org1": ca.cert_pem})


def _public_key_operations(
    membership: Membership, who: SigningIdentity, data: bytes, sig: bytes
) -> int:
    with mock.patch.object(
        identity_mod, "verify_signature", wraps=identity_mod.verify_signature
    ) as spy:
        membership.verify(who.identity_bytes, data, sig, datetime.now(UTC))
        return spy.call_count


def test_our_own_vote_is_checked_without_a_public_key_operation() -> None:
    me, _other, membership = _orderers()
    sign = remembering_signer(me, lambda: membership)
    vote = b"prepare view 0 sequence 7 digest " + bytes(32)
    signature = sign(vote)
    assert _public_key_operations(membership, me, vote, signature) == 0


def test_other_signatures_and_a_batch_are_still_verified() -> None:
    me, other, membership = _orderers()
    sign = remembering_signer(me, lambda: membership)
    vote = b"commit view 0 sequence 7"
    sign(vote)
    theirs = other.sign(vote)  # another replica's vote over the same bytes
    assert _public_key_operations(membership, other, vote, theirs) == 1
    batch = b"b" * (REMEMBERED_BYTES_MAX + 1)  # a batch: no SHA-256 pass over it to remember
    assert _public_key_operations(membership, me, batch, sign(batch)) == 1


def test_the_membership_in_force_is_told_and_still_identifies_the_signer() -> None:
    me, _other, first = _orderers()
    in_force = [first]
    sign = remembering_signer(me, lambda: in_force[0])
    in_force[0] = Membership({"Org1": make_ca("Org1").cert_pem})  # a config update: new roots
    vote = b"checkpoint 16"
    signature = sign(vote)
    with pytest.raises(NotAMember):  # remembered as checked, but no longer a member
        in_force[0].verify(me.identity_bytes, vote, signature, datetime.now(UTC))
    assert _public_key_operations(first, me, vote, signature) == 1  # not told the old one
