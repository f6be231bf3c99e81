"""Random interleavings of every step of a DvP with a private leg, by a relayer replaying every
proof it has seen (of this transfer and of earlier ones): never claimed on one side and
refunded on the other, never claimed against an abort, nothing created or destroyed on either
channel (docs/cross-channel.md "A private leg", safety argument)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from private_leg_parties import (
    DEADLINE,
    T0,
    PrivateSide,
    PublicSide,
    details,
    leg_proof,
    parties,
    terms,
    tid,
)

from dltmw.core.privacy.execution import EXECUTED
from dltmw.core.private_leg import abort_disclosure, disclosure_bytes, lock_disclosure

PUBLIC_OPS = ("lock", "abort", "claim", "refund")
PRIVATE_OPS = ("pescrow", "plock", "pabort", "pclaim", "prefund", "prelease")
# weighted towards progress, so that runs end claimed as well as refunded; aborts happen only
# on a high `pick` (below), else most runs would abort at once
WEIGHTED = (*PUBLIC_OPS, *PRIVATE_OPS, "lock", "claim", "pescrow", "plock", "plock", "pclaim")
_COUNTER = itertools.count()
AMOUNT = 400  # two of them fit in the buyer's 1000


@dataclass
class Run:
    """Fresh channels per example, two transfers on them, every proof the relayer has seen."""

    pub: PublicSide
    priv: PrivateSide
    public_seen: list[bytes] = field(default_factory=list)
    private_seen: list[bytes] = field(default_factory=list)

    def private(self, op: str, t: bytes, salt: str, pick: int) -> None:
        args: tuple[str | bytes, ...] = (t, "cash")
        if op in ("pescrow", "prelease"):
            args = (*args, details(salt, AMOUNT))
        if op in ("pclaim", "prefund"):
            genesis = self.pub.chan.genesis.SerializeToString()
            args = (*args, details(salt, AMOUNT), genesis, _recent(self.public_seen, pick))
        out = self.priv.run(op, *args)
        if out.status != EXECUTED:
            return
        if op in ("plock", "pabort"):
            # the genuine disclosure, and the other one (a lie) on the same commit proof
            proof = self.priv.commit(out)
            lock, abort = lock_disclosure("cash", tid(t)), abort_disclosure("cash", tid(t))
            genuine, lie = (lock, abort) if op == "plock" else (abort, lock)
            for d in (genuine, lie):
                self.private_seen.append(leg_proof(proof, disclosure_bytes(d)))

    def public(self, op: str, t: bytes, pick: int) -> None:
        args: tuple[str | bytes, ...] = (t,)
        if op in ("claim", "refund"):
            args = (t, _recent(self.private_seen, pick))
        _, proof = self.pub.call(op, *args)
        if proof is not None and op in ("lock", "abort"):
            self.public_seen.append(proof)

    def hold(self, t: bytes) -> str:
        found = self.priv.state.get("xfer", "h/" + tid(t))
        return "absent" if found is None else str(json.loads(found[0])["state"])


def _recent(seen: list[bytes], pick: int) -> bytes:
    """One of the last few proofs seen (any transfer's): replays stay likely to matter."""
    return seen[-1 - pick % min(len(seen), 4)] if seen else b""


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(WEIGHTED), st.integers(0, 30), st.booleans()),
        min_size=12,
        max_size=30,
    )
)
def test_random_interleavings_never_split_and_conserve(
    steps: list[tuple[str, int, bool]],
) -> None:
    _, pub, priv = parties()
    run = Run(pub, priv)
    salts = [f"prop-{next(_COUNTER)}" for _ in range(2)]
    both = [(terms(priv.chan, pub.chan, s, amount=AMOUNT), s) for s in salts]
    late = False
    for op, pick, second in steps:
        t, salt = both[second]
        late = late or pick > 28  # the public side's time only moves forward
        pub.at(DEADLINE + 1 if late else T0)
        if op in ("abort", "pabort") and pick < 15:
            continue
        if op in PRIVATE_OPS:
            run.private(op, t, salt, pick)
        else:
            run.public(op, t, pick)
        for x, _ in both:
            public, private = pub.status(x), priv.record(x)
            # a claim on one side only while the other is locked or claimed (its lock is final)
            assert public != "claimed" or private in ("locked", "claimed"), (public, private)
            assert private != "claimed" or public in ("locked", "claimed"), (public, private)
            assert public != "refunded" or private == "aborted", (public, private)
            assert private != "refunded" or public == "aborted", (public, private)
    # conservation: accounts + what each transfer holds = the opening balances
    escrow = 10 * sum(pub.status(x) == "locked" for x, _ in both)
    assert pub.balance("seller") + pub.balance("buyer") + escrow == 1000
    held = AMOUNT * sum(run.hold(x) == "held" for x, _ in both)
    assert priv.balance("buyer") + priv.balance("seller") + held == 1000
    OUTCOMES.append(tuple((pub.status(x), priv.record(x)) for x, _ in both))


OUTCOMES: list[tuple[tuple[str, str], ...]] = []  # for a look at what the runs reached
