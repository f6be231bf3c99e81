"""The two-phase transfer across channels (`contracts/transfer.py`, `contract_sdk/crosschain.py`).

Two in-memory channels (`trading`: securities, PBFT-lite; `cash`: cash, solo) each run `xfer`;
a lock, abort or claim committed on one becomes a real commit proof (signed block, inclusion
path, peer attestations) presented to the other. Safety: never claimed on one side and refunded
on the other, nothing paid twice, nothing created or destroyed — checked on scripted runs and on
random interleavings of every operation with every proof seen so far (a relayer that replays
anything).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field, replace

import pytest
from crosschain_parties import NOW, Chan, World, make_world, proof_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dltmw.contract_sdk.testing import DEFAULT_TX, ContractTester, Outcome
from dltmw.contracts.transfer import TransferContract
from dltmw.core.block import header_block_hash
from dltmw.v1 import common_pb2, crosschain_pb2, transaction_pb2

T0 = int(NOW.timestamp())
DEADLINE = T0 + 100


def terms(nonce: str, securities: int = 10, cash: int = 500) -> bytes:
    legs = {
        "trading": {"from": "seller", "to": "buyer", "amount": securities},
        "cash": {"from": "buyer", "to": "seller", "amount": cash},
    }
    body = {"deadline_s": DEADLINE, "legs": legs, "nonce": nonce}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def envelope(channel_id: str, outcome: Outcome) -> bytes:
    """An endorser transaction envelope carrying `outcome`'s read-write set (what a peer would
    commit; only its bytes and position matter to a proof)."""
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION, channel_id=channel_id, tx_id="x"
    )
    tx = transaction_pb2.Transaction(response_payload=outcome.result.SerializeToString())
    payload = common_pb2.Payload(header=header.SerializeToString(), data=tx.SerializeToString())
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


@dataclass
class Side:
    """One channel: its chain (for proofs) and its `xfer` contract state."""

    chan: Chan
    world: World
    tester: ContractTester = field(init=False)

    def __post_init__(self) -> None:
        tx = replace(
            DEFAULT_TX,
            channel_id=self.chan.channel_id,
            creator_roles=frozenset({"admin"}),
            timestamp_s=T0,
        )
        self.tester = ContractTester(TransferContract(), tx=tx)

    def at(self, ts: int) -> None:
        self.tester.tx = replace(self.tester.tx, timestamp_s=ts)

    def call(self, function: str, *args: str | bytes) -> tuple[Outcome, bytes | None]:
        """Submit; when accepted, commit it in a block and return its commit proof too."""
        out = self.tester.submit(function, *args)
        if not out.ok:
            return out, None
        chan = self.chan
        signers = chan.orderers[:3]
        block = chan.cut([b"before", envelope(chan.channel_id, out)], signers)
        peers = [self.world.peers["Org1"], self.world.peers["Org3"]]
        return out, proof_of(block, 1, peers).SerializeToString()

    def balance(self, account: str) -> int:
        return int(self.tester.evaluate("balance", account).payload)

    def status(self, t: bytes) -> str:
        return self.tester.evaluate("status", hashlib.sha256(t).hexdigest()).payload.decode()


def sides() -> tuple[Side, Side]:
    world, cash, trading = make_world()
    a, b = Side(trading, world), Side(cash, world)
    assert a.call("trust", cash.genesis.SerializeToString())[0].ok
    assert b.call("trust", trading.genesis.SerializeToString())[0].ok
    for side, rich in ((a, "seller"), (b, "buyer")):
        for acct in ("seller", "buyer"):
            assert side.call("open", acct, "1000" if acct == rich else "0")[0].ok
    return a, b


def test_a_dvp_settles_on_both_channels() -> None:
    trading, cash = sides()
    t = terms("dvp-1")
    _, lock_a = trading.call("lock", t)
    _, lock_b = cash.call("lock", t)
    assert lock_a and lock_b
    assert cash.call("claim", t, lock_a)[0].ok
    assert trading.call("claim", t, lock_b)[0].ok
    assert (trading.balance("seller"), trading.balance("buyer")) == (990, 10)
    assert (cash.balance("buyer"), cash.balance("seller")) == (500, 500)
    again = cash.call("claim", t, lock_a)[0]
    assert (again.status, "claimed here, not locked" in again.message) == (409, True)


def test_an_abort_on_one_side_refunds_the_other_and_forbids_its_claim() -> None:
    trading, cash = sides()
    t = terms("dvp-2")
    _, lock_b = cash.call("lock", t)
    trading.at(DEADLINE)
    assert not trading.call("abort", t)[0].ok  # not before the deadline
    trading.at(DEADLINE + 1)
    assert not trading.call("lock", t)[0].ok  # too late to lock
    _, abort_a = trading.call("abort", t)
    assert abort_a
    refused = cash.call("claim", t, abort_a)[0]
    assert "PROOF_MISMATCH" in refused.message  # an abort is no lock
    assert cash.call("refund", t, abort_a)[0].ok
    assert cash.balance("buyer") == 1000 and cash.status(t) == "refunded"
    assert not trading.call("lock", t)[0].ok and trading.status(t) == "aborted"
    assert "not locked" in trading.call("refund", t, lock_b or b"")[0].message


def test_forged_and_mismatched_proofs_claim_nothing() -> None:
    trading, cash = sides()
    t, other = terms("dvp-3"), terms("dvp-4")
    _, lock_other = trading.call("lock", other)
    _, lock_b = cash.call("lock", t)
    assert lock_other and lock_b
    cases = {
        "PROOF_MISMATCH": lock_other,  # a lock of another transfer
        "PROOF_WRONG_CHANNEL": lock_b,  # cash's own lock, presented as trading's
    }
    for reason, proof in cases.items():
        out = cash.call("claim", t, proof)[0]
        assert (out.status, out.message.split(":")[0]) == (400, reason)
    _, lock_a = trading.call("lock", t)
    assert lock_a
    short = crosschain_pb2.CommitProof.FromString(lock_a)
    del short.attestations[1:]
    out = cash.call("claim", t, short.SerializeToString())[0]
    assert out.message.split(":")[0] == "PROOF_ATTESTATION_INVALID"
    assert cash.balance("seller") == 0 and cash.status(t) == "locked"


def test_trust_is_an_admins_once() -> None:
    trading, cash = sides()
    again = cash.call("trust", trading.chan.genesis.SerializeToString())[0]
    assert again.status == 409
    cash.tester.tx = replace(cash.tester.tx, creator_roles=frozenset({"client"}))
    assert cash.call("trust", b"")[0].status == 403


# --- random interleavings: a relayer that tries everything with every proof it has seen ---

OPS = ("lock", "abort", "claim", "refund")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(OPS), st.booleans(), st.integers(0, 30)), max_size=14))
def test_random_interleavings_never_split_and_conserve(
    steps: list[tuple[str, bool, int]],
) -> None:
    trading, cash = SIDES
    t = terms(f"prop-{next(_COUNTER)}")
    EVERY.append(t)
    seen: list[bytes] = []
    late = False
    for op, on_trading, pick in steps:
        side = trading if on_trading else cash
        late = late or pick > 25  # time only moves forward
        side.at(DEADLINE + 1 if late else T0)
        args: tuple[str | bytes, ...] = (t,)
        if op in ("claim", "refund"):
            args = (t, seen[pick % len(seen)] if seen else b"")
        _, proof = side.call(op, *args)
        if proof is not None:
            seen.append(proof)
    states = {trading.status(t), cash.status(t)}
    assert not {"claimed", "refunded"} <= states, states
    assert not ({"claimed"} <= states and "aborted" in states), states
    for side in (trading, cash):  # accounts + escrow of every transfer so far = the opening
        held = 10 if side is trading else 500
        escrow = held * sum(side.status(x) == "locked" for x in EVERY)
        total = side.balance("seller") + side.balance("buyer") + escrow
        assert total == 1000, (side.chan.channel_id, total)


_COUNTER = itertools.count()
SIDES = sides()
EVERY: list[bytes] = []  # the terms of every random run, on the same two channels


def _forged(kind: str, proof: bytes, world: World) -> bytes:
    """Trading's genuine lock proof with exactly one thing broken."""
    p = crosschain_pb2.CommitProof.FromString(proof)
    digest = header_block_hash(p.header)
    if kind == "outsider_signs":  # a signer that is no orderer of trading
        p.orderer_signatures[0].signer = world.outsider.identity_bytes
        p.orderer_signatures[0].signature = world.outsider.sign(digest)
    elif kind == "outsider_poses_as_orderer":  # an orderer's name, someone else's signature
        p.orderer_signatures[0].signature = world.outsider.sign(digest)
    elif kind == "too_few_pbft_signatures":  # 2 of the 2f+1 = 3 a PBFT-lite block needs
        del p.orderer_signatures[2:]
    elif kind == "flipped_path_node":
        p.inclusion_path[0] = bytes([p.inclusion_path[0][0] ^ 1]) + p.inclusion_path[0][1:]
    elif kind == "wrong_index":  # the path of another position
        p.tx_index = 0
    return p.SerializeToString()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("outsider_signs", "PROOF_BAD_ORDERER_SIGNATURE"),
        ("outsider_poses_as_orderer", "PROOF_BAD_ORDERER_SIGNATURE"),
        ("too_few_pbft_signatures", "PROOF_ORDERER_QUORUM"),
        ("flipped_path_node", "PROOF_INCLUSION_INVALID"),
        ("wrong_index", "PROOF_INCLUSION_INVALID"),
    ],
)
def test_each_forged_proof_kind_is_refused_by_the_contract_with_its_reason(
    kind: str, reason: str
) -> None:
    """Issue 19's list through `xfer.claim` (the pure code every endorser runs): wrong signer,
    too few PBFT-lite signatures, wrong inclusion path; another channel's and another
    transfer's proofs are in test_forged_and_mismatched_proofs_claim_nothing."""
    trading, cash = sides()
    t = terms(f"forged-{kind}")
    _, lock_a = trading.call("lock", t)
    assert cash.call("lock", t)[0].ok and lock_a
    out = cash.call("claim", t, _forged(kind, lock_a, trading.world))[0]
    assert (out.status, out.message.split(":")[0]) == (400, reason)
    assert cash.status(t) == "locked"
    assert cash.call("claim", t, lock_a)[0].ok  # the genuine proof still claims
