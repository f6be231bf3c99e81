"""Each agreement signature is verified once per node: the agreement a node signs itself
(`runtime/roles/privacy/agreement.Agreements._sign_all`) is remembered in its channel's verified-
signature cache (`Membership.remember_own_signature`), so the commit rule it runs on the same
transaction at admission and commit (`core/privacy/agreement.agreement_code`) spends no public-key
operation on it. The other parties' signatures are still verified, and a signature that is not
exactly the one remembered still is (and is refused when it does not hold).

Real keys, certificates and the real commit rule; only the node context and the private channel
are stand-ins (the signer, and the channel's id and config view).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dltmw.core import identity
from dltmw.core.privacy import agreement as ag
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.v1 import private_agreement_pb2 as A
from tests.unit.test_private_agreement import CHANNEL, HASH, HASHES, NOW, _view, sign, tx_id_of


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The public-key verifications made from now on (their data), each still performed."""
    calls: list[bytes] = []
    real = identity.verify_signature

    def counting(public_key: object, data: bytes, signature: bytes) -> None:
        calls.append(data)
        real(public_key, data, signature)  # type: ignore[arg-type]

    monkeypatch.setattr(identity, "verify_signature", counting)
    return calls


def _own_and_other() -> tuple[object, str, A.PrivateAgreement, A.PrivateAgreement]:
    view, user, peers = _view(A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS)
    tx_id = tx_id_of(user)
    keys = [peers[0][1], peers[1][1]]
    node = Agreements(SimpleNamespace(signer=peers[0][0]), None)  # type: ignore[arg-type]
    channel = SimpleNamespace(channel_id=CHANNEL, view=view)
    body = ag.agreement_body(CHANNEL, tx_id, HASH, HASHES, keys, ag.AGREE)
    (own,) = node._sign_all(channel, [body])  # type: ignore[arg-type]
    other = sign(peers[1][0], tx_id, keys)
    return view, tx_id, own, other


def test_a_node_does_not_verify_its_own_agreement_again(monkeypatch: pytest.MonkeyPatch) -> None:
    view, tx_id, own, other = _own_and_other()
    calls = _counted(monkeypatch)
    code = ag.agreement_code([own, other], view, tx_id, HASH, NOW)  # type: ignore[arg-type]
    assert code == ag.VALID
    assert calls == [ag.signing_bytes(other.body)]  # the other party's, and only it
    # admission then commit on the same node: nothing verified twice
    assert ag.agreement_code([own, other], view, tx_id, HASH, NOW) == ag.VALID  # type: ignore[arg-type]
    assert len(calls) == 1


def test_a_signature_other_than_the_remembered_one_is_still_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view, tx_id, own, other = _own_and_other()
    forged = A.PrivateAgreement(body=own.body, signer=own.signer, signature=other.signature)
    calls = _counted(monkeypatch)
    code = ag.agreement_code([forged, other], view, tx_id, HASH, NOW)  # type: ignore[arg-type]
    assert code == ag.BAD_SIGNATURE
    assert calls == [ag.signing_bytes(own.body)]
