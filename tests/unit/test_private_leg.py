"""The private leg of a cross-channel DvP (docs/cross-channel.md "A private leg"): settlement
both ways, and every forged disclosure refused with its reason, nothing claimed."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from crosschain_parties import ident, proof_of
from private_leg_parties import (
    DEADLINE,
    PrivateSide,
    PublicSide,
    details,
    envelope,
    leg_proof,
    lock_leg_proof,
    parties,
    terms,
    tid,
)

from dltmw.core.block import block_hash
from dltmw.core.privacy.execution import EXECUTED
from dltmw.core.private_leg import (
    abort_disclosure,
    canonical,
    disclosure_bytes,
    lock_disclosure,
)
from dltmw.v1 import common_pb2, private_agreement_pb2, transaction_pb2

UNSPECIFIED = private_agreement_pb2.PRIVATE_AGREEMENT_POLICY_UNSPECIFIED


def _held_and_locked(priv: PrivateSide, t: bytes, salt: str) -> bytes:
    """pescrow + plock on the private leg; the plock's PrivateLegProof."""
    assert priv.run("pescrow", t, "cash", details(salt)).status == EXECUTED
    lock = priv.run("plock", t, "cash")
    assert lock.status == EXECUTED, lock.response.message
    return lock_leg_proof(priv, lock, t)


def test_a_dvp_with_a_private_leg_settles_on_both_channels() -> None:
    _, pub, priv = parties()
    t = terms(priv.chan, pub.chan, "dvp-1")
    private_lock = _held_and_locked(priv, t, "dvp-1")
    assert priv.balance("buyer") == 500  # held
    _, public_lock = pub.call("lock", t)
    assert public_lock is not None
    claimed = pub.call("claim", t, private_lock)[0]
    assert claimed.ok, claimed.message
    genesis = pub.chan.genesis.SerializeToString()
    out = priv.run("pclaim", t, "cash", details("dvp-1"), genesis, public_lock)
    assert out.status == EXECUTED, out.response.message
    assert (pub.balance("seller"), pub.balance("buyer")) == (990, 10)
    assert (priv.balance("buyer"), priv.balance("seller")) == (500, 500)
    assert (pub.status(t), priv.record(t)) == ("claimed", "claimed")


def test_a_private_abort_refunds_the_public_side() -> None:
    _, pub, priv = parties()
    t = terms(priv.chan, pub.chan, "abort-1")
    assert pub.call("lock", t)[0].ok
    assert priv.run("pescrow", t, "cash", details("abort-1")).status == EXECUTED  # held...
    aborted = priv.run("pabort", t, "cash")  # ...but aborted before the lock
    assert aborted.status == EXECUTED
    disclosure = disclosure_bytes(abort_disclosure("cash", tid(t)))
    proof = leg_proof(priv.commit(aborted), disclosure)
    # an abort is no lock: no claim; it refunds
    assert "PROOF_MISMATCH" in pub.call("claim", t, proof)[0].message
    assert pub.call("refund", t, proof)[0].ok
    assert (pub.balance("seller"), pub.status(t)) == (1000, "refunded")
    # a lock after the abort never happens privately; the hold goes back to the buyer
    assert priv.run("plock", t, "cash").status != EXECUTED
    assert priv.balance("buyer") == 500
    assert priv.run("prelease", t, "cash", details("abort-1")).status == EXECUTED
    assert priv.balance("buyer") == 1000
    assert priv.run("prelease", t, "cash", details("abort-1")).status != EXECUTED  # once


def test_a_public_abort_refunds_the_private_side() -> None:
    _, pub, priv = parties()
    t = terms(priv.chan, pub.chan, "abort-2")
    _held_and_locked(priv, t, "abort-2")
    pub.at(DEADLINE + 1)
    _, public_abort = pub.call("abort", t)
    assert public_abort is not None
    genesis = pub.chan.genesis.SerializeToString()
    claim = priv.run("pclaim", t, "cash", details("abort-2"), genesis, public_abort)
    assert "PROOF_MISMATCH" in claim.response.message
    out = priv.run("prefund", t, "cash", details("abort-2"), genesis, public_abort)
    assert out.status == EXECUTED, out.response.message
    assert (priv.balance("buyer"), priv.record(t)) == (1000, "refunded")


def _forged(kind: str) -> tuple[PublicSide, bytes, bytes]:
    """(trading, terms, a forged private lock proof of `kind`) with trading locked."""
    world, pub, priv = parties()
    t = terms(priv.chan, pub.chan, kind)
    assert priv.run("pescrow", t, "cash", details(kind)).status == EXECUTED
    lock = priv.run("plock", t, "cash")
    genuine = lock_disclosure("cash", tid(t))
    forgers: dict[str, Callable[[], bytes]] = {
        "bytes-not-the-hash": lambda: leg_proof(
            priv.commit(lock),
            disclosure_bytes(abort_disclosure("cash", tid(t))).replace(b"abort", b"lock"),
        ),
        "values-changed": lambda: leg_proof(
            priv.commit(lock),
            disclosure_bytes(
                type(genuine)(
                    genuine.namespace,
                    genuine.status,
                    genuine.response,
                    {**genuine.values, "h/" + tid(t): b'{"id": "x", "state": "held"}'},
                )
            ),
        ),
        "agreement-missing": lambda: leg_proof(
            priv.commit(lock, [world.peers["Org1"]]), disclosure_bytes(genuine)
        ),
        "agreement-by-non-member": lambda: leg_proof(
            priv.commit(
                lock, [world.peers["Org1"], ident(world.cas["Org9"], "Org9", "p9", "peer")]
            ),
            disclosure_bytes(genuine),
        ),
        "agreement-by-member-not-peer": lambda: leg_proof(
            priv.commit(lock, [world.peers["Org1"], world.clients["Org2"]]),
            disclosure_bytes(genuine),
        ),
        "not-canonical": lambda: leg_proof(
            priv.commit(lock), json.dumps(json.loads(disclosure_bytes(genuine))).encode()
        ),
        "not-the-lock-form": lambda: _escrow_proof(priv, t),
        "private-data-in-a-public-envelope": lambda: leg_proof(
            priv.commit(lock, kind=common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION),
            disclosure_bytes(genuine),
        ),
        "another-contract-writes-the-record": lambda: _kv_proof(priv, t),
        "public-tx-as-private": lambda: leg_proof(
            _public_tx_proof(priv), disclosure_bytes(genuine)
        ),
        "garbage": lambda: b"\xff\x00garbage",
    }
    forged = forgers[kind]()
    assert pub.call("lock", t)[0].ok
    return pub, t, forged


def _public_tx_proof(priv: PrivateSide) -> bytes:
    """A genuine proof of a VALID endorser (public) transaction on the private leg's channel."""
    tx = transaction_pb2.Transaction(response_payload=b"")
    env = envelope("cash", "pub-1", common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION, tx)
    block = priv.chan.cut([env], priv.chan.orderers[:1])
    attesters = [priv.world.peers["Org1"], priv.world.peers["Org2"]]
    return proof_of(block, 0, attesters).SerializeToString()


def _kv_proof(priv: PrivateSide, t: bytes) -> bytes:
    """A genuine agreed private `kv` put of a "locked" record at t/<id>: not `xfer`'s write."""
    record = b'{"channel": "cash", "id": "%s", "state": "locked"}' % tid(t).encode()
    out = priv.run("put", "t/" + tid(t), record, contract="kv")
    assert out.status == EXECUTED, out.response.message
    from dltmw.core.private_leg import Disclosure

    d = Disclosure("kv", EXECUTED, out.response, {"t/" + tid(t): record})
    return leg_proof(priv.commit(out), disclosure_bytes(d))


def _escrow_proof(priv: PrivateSide, t: bytes) -> bytes:
    """A genuine agreed outcome that touches balances (pescrow of another transfer) shown as a
    lock: it hashes right but is not in the lock's fixed form."""
    other = terms(priv.chan, priv.chan, "other-escrow")
    out = priv.run("pescrow", other, "cash", details("other-escrow"))
    assert out.status == EXECUTED, out.response.message
    from dltmw.core.private_leg import Disclosure

    values = {
        "a/buyer": priv.state.data[("xfer", "a/buyer")][0],
        "a/seller": priv.state.data[("xfer", "a/seller")][0],
        "h/" + tid(other): priv.state.data[("xfer", "h/" + tid(other))][0],
        "t/" + tid(other): None,
    }
    d = Disclosure("xfer", EXECUTED, out.response, values)
    return leg_proof(priv.commit(out), disclosure_bytes(d))


FORGED = {
    "bytes-not-the-hash": "PRIVATE_DISCLOSURE_MISMATCH",
    "values-changed": "PRIVATE_DISCLOSURE_MISMATCH",
    "agreement-missing": "PRIVATE_LEG_AGREEMENT_INVALID",
    "agreement-by-non-member": "PRIVATE_LEG_AGREEMENT_INVALID",
    "agreement-by-member-not-peer": "PRIVATE_LEG_AGREEMENT_INVALID",
    "not-canonical": "PRIVATE_LEG_MALFORMED",
    "not-the-lock-form": "PRIVATE_LEG_MALFORMED",
    "private-data-in-a-public-envelope": "PRIVATE_LEG_MALFORMED",
    "another-contract-writes-the-record": "PRIVATE_LEG_MALFORMED",
    "public-tx-as-private": "PRIVATE_LEG_MALFORMED",
    "garbage": "PRIVATE_LEG_MALFORMED",
}


@pytest.mark.parametrize("kind", sorted(FORGED))
def test_a_forged_private_lock_claims_nothing(kind: str) -> None:
    pub, t, forged = _forged(kind)
    out = pub.call("claim", t, forged)[0]
    assert (out.status, out.message.split(":")[0]) == (400, FORGED[kind]), out.message
    assert (pub.status(t), pub.balance("buyer")) == ("locked", 0)


def test_a_proof_of_another_transfer_claims_nothing() -> None:
    _, pub, priv = parties()
    t, other = terms(priv.chan, pub.chan, "mine"), terms(priv.chan, pub.chan, "theirs")
    proof = _held_and_locked(priv, other, "theirs")
    assert pub.call("lock", t)[0].ok
    assert pub.call("claim", t, proof)[0].message.startswith("PROOF_MISMATCH")
    assert pub.status(t) == "locked"


def test_the_policy_is_required_on_the_private_channel() -> None:
    _, pub, priv = parties(UNSPECIFIED)
    t = terms(priv.chan, pub.chan, "nopolicy")
    proof = _held_and_locked(priv, t, "nopolicy")
    assert pub.call("lock", t)[0].ok
    out = pub.call("claim", t, proof)[0]
    assert out.message.startswith("PRIVATE_LEG_AGREEMENT_INVALID"), out.message
    assert "require" in out.message


def test_every_party_the_terms_name_must_be_a_recipient() -> None:
    _, pub, priv = parties()
    t = terms(priv.chan, pub.chan, "org3", recipients=["Org1", "Org2", "Org3"])
    proof = _held_and_locked(priv, t, "org3")  # recipients: Org1 and Org2 only
    assert pub.call("lock", t)[0].ok
    out = pub.call("claim", t, proof)[0]
    assert out.message.startswith("PRIVATE_LEG_AGREEMENT_INVALID"), out.message
    assert "Org3" in out.message


def test_terms_naming_a_fake_block_0_for_the_public_side_lock_nothing_there() -> None:
    _, pub, priv = parties()
    t = terms(priv.chan, pub.chan, "fake", trust="00" * 32)
    out = pub.call("lock", t)[0]
    assert out.message.startswith("TRUST_ROOT_MISMATCH"), out.message
    assert pub.balance("seller") == 1000


def test_the_private_side_checks_commitment_root_and_runs_only_privately() -> None:
    _, pub, priv = parties()
    t = terms(priv.chan, pub.chan, "priv")
    wrong = priv.run("pescrow", t, "cash", details("priv", amount=1))
    assert wrong.response.message.startswith("PRIVATE_LEG_COMMITMENT_MISMATCH")
    _held_and_locked(priv, t, "priv")
    _, public_lock = pub.call("lock", t)
    fake = priv.chan.genesis.SerializeToString()  # cash's own block 0, not trading's
    out = priv.run("pclaim", t, "cash", details("priv"), fake, public_lock or b"")
    assert out.response.message.startswith("TRUST_ROOT_MISMATCH"), out.response.message
    assert priv.record(t) == "locked" and priv.balance("seller") == 0
    # on a public channel the private functions refuse (they would skip lock's deadline)
    assert "only in a private transaction" in pub.call("plock", t, "trading")[0].message
    assert block_hash(pub.chan.genesis).hex() in t.decode()
    assert canonical(json.loads(t)) == t


def test_a_release_shown_as_an_abort_is_not_in_the_fixed_form() -> None:
    """A genuine agreed `prelease` (it writes no t/<id> but touches balances) is refused as an
    abort proof: only `pabort`'s outcome (t/<id> alone) is the abort's form."""
    _, pub, priv = parties()
    t = terms(priv.chan, pub.chan, "release")
    assert pub.call("lock", t)[0].ok
    assert priv.run("pescrow", t, "cash", details("release")).status == EXECUTED
    assert priv.run("pabort", t, "cash").status == EXECUTED
    out = priv.run("prelease", t, "cash", details("release"))
    assert out.status == EXECUTED
    from dltmw.core.private_leg import Disclosure

    keys = ("a/buyer", "h/" + tid(t), "t/" + tid(t))
    values = {k: priv.state.data[("xfer", k)][0] for k in keys}
    proof = leg_proof(
        priv.commit(out), disclosure_bytes(Disclosure("xfer", EXECUTED, out.response, values))
    )
    refused = pub.call("refund", t, proof)[0]
    assert refused.message.startswith("PRIVATE_LEG_MALFORMED"), refused.message
    assert pub.status(t) == "locked"


def test_a_lock_sealed_for_more_nodes_than_the_terms_name_claims_nothing() -> None:
    """Only transactions among the same recipient set conflict (their hashed keys are scoped by
    it): a superset's pabort could race a plock unseen, so a superset proves nothing."""
    _, pub, priv = parties()
    t = terms(priv.chan, pub.chan, "superset")
    assert priv.run("pescrow", t, "cash", details("superset")).status == EXECUTED
    lock = priv.run("plock", t, "cash")
    priv.signers = ("Org1", "Org2", "Org3")  # sealed for and agreed by Org3 too
    proof = leg_proof(priv.commit(lock), disclosure_bytes(lock_disclosure("cash", tid(t))))
    assert pub.call("lock", t)[0].ok
    out = pub.call("claim", t, proof)[0]
    assert out.message.startswith("PRIVATE_LEG_AGREEMENT_INVALID"), out.message
    assert "exactly" in out.message and pub.status(t) == "locked"
