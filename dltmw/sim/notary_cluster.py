"""Simulated notary cluster: the PBFT-lite world whose requests are conflicting spends.

Every replica applies each decided batch with the cluster's real decision core
(`core/notary_cluster.ClusterDecider`, its effects executed through the core contract) to its
own spent-set, which survives crashes like the sqlite store does; a crash that hits after the
PBFT records were persisted but before the batch was applied is recovered exactly as the
runtime does (`unapplied`). A request is a client-MACed
name `c<client>.<counter>.<states>.<stamp>.<from>.<until>`: the tx_id `c<client>.<counter>`
spends the listed states of a small pool (so most requests conflict), decided at `stamp` (the
admitting replica's tick) against an optional time window.

Signatures are real: each member signs its batches' Merkle roots with its own Ed25519 key
through the production signing step (`sim/notary_members.py`), and every answer it gives is
kept in wire form (signature + leaf proof). Faulty members (the PBFT behaviour's) also decide,
but sign through a byzantine step (`signing`, `FAULTY_SIGNING`): one of the single notary's
four (`sim/notary_byzantine.py`: a root outside the batch domain, the root of another batch, a
bent proof, the proof of another batch), or `signs-refused` — a decision that forgets what was
consumed, so the member signs, validly, the double spends its honest peers refused.

Checker (`check_uniqueness`): a transaction counts as notarised only when a client would accept
it: each member's answers checked as the client checks them (signer, root signature, proof),
then the production `verdict` (f+1 distinct members). No state may have two notarised
consumers; every attestation in an accepted verdict must be one its member's key really made
for that tx_id (ground truth from the signing record: else "forged"); and no two honest
spent-sets may name different consumers for one state. Negative controls: `broken=True`
replaces the honest decision's spent-set with an empty one; `verification` breaks the client's
check (`notary_members.Verification`: accept any answer, f answers suffice, or one member's
answers count more than once).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from dltmw.core.effects import Token, execute
from dltmw.core.handlers.notary import Decision, SignTree, Spent
from dltmw.core.notary import NotarisationAsk
from dltmw.core.notary_cluster import (
    ClusterDecider,
    OpenedBatch,
    ReplicaAnswer,
    Unpacked,
    unapplied,
)
from dltmw.core.pbft import ClientRequest, Decided, DecidedRecord, PbftConfig, request_id
from dltmw.core.utxo.model import Ref, Window
from dltmw.sim import runner
from dltmw.sim.byzantine import BEHAVIOURS
from dltmw.sim.checkers import check_safety, missing
from dltmw.sim.keys import mac, request_name
from dltmw.sim.node import Node
from dltmw.sim.notary_byzantine import BEHAVIOURS as BYZANTINE_SIGNING
from dltmw.sim.notary_members import Members, Verification, client_answer, client_verdict
from dltmw.sim.world import Behaviour, World
from dltmw.v1 import notarisation_pb2

STATES = 6
GENESIS = hashlib.sha256(b"dltmw-sim-genesis").hexdigest()


@dataclass
class SpentSet:
    """One replica's durable notary state (a SpentView for the decision)."""

    consumed: dict[Ref, str] = field(default_factory=dict)
    signed: dict[str, bytes] = field(default_factory=dict)
    applied: int = 0

    def consumer_of(self, ref: Ref) -> str | None:
        return self.consumed.get(ref)

    def signature_of(self, tx_id: str) -> bytes | None:
        return self.signed.get(tx_id)


class Forgetful(SpentSet):
    """NEGATIVE CONTROL: a decision that never sees earlier consumers or signatures."""

    def consumer_of(self, ref: Ref) -> str | None:
        return None

    def signature_of(self, tx_id: str) -> bytes | None:
        return None


class Unrefusing(SpentSet):
    """A faulty member's `signs-refused` decision: it forgets every earlier consumer, so it
    signs (validly, with its own key) spends its honest peers refused as double spends."""

    def consumer_of(self, ref: Ref) -> str | None:
        return None


SIGNS_REFUSED = "signs-refused"
# what faulty members sign with: the single notary's byzantine steps, or the cluster's own
FAULTY_SIGNING = (*sorted(BYZANTINE_SIGNING), SIGNS_REFUSED)


@dataclass(frozen=True)
class Spend:
    """The content of one simulated notarisation request."""

    tx_id: str
    states: tuple[int, ...]
    stamp: int
    window: Window


def parse_spend(request: bytes) -> Spend:
    """Read a request made by `NotaryWorld.submit` (MAC already checked by PBFT)."""
    client, counter, states, stamp, start, until = request_name(request).split(".")
    return Spend(
        f"{client}.{counter}",
        tuple(int(s) for s in states.split("+")),
        int(stamp),
        Window(int(start) if start else None, int(until) if until else None),
    )


def unpack(request: bytes) -> Unpacked:
    """The simulation's admission: one ask per request (the real one verifies signatures)."""
    spend = parse_spend(request)
    refs = tuple(Ref(GENESIS, s) for s in spend.states)
    return Unpacked(spend.stamp, (NotarisationAsk(spend.tx_id, refs, (), spend.window, b""),))


class SpentSetExecutor:
    """One replica's store as the decider's executor: spends and the sequence, then answers."""

    def __init__(self, world: NotaryWorld, node: Node) -> None:
        self.world = world
        self.node = node

    def persist(self, records: Sequence[None]) -> None:
        """The decider keeps no log."""

    def apply(self, decided: Sequence[Spent]) -> None:
        """Commit spends with their sequence (one durable step, like the sqlite store)."""
        state = self.world.notary[self.node.name]
        for spent in decided:
            state.consumed.update(spent.consumed)
            state.signed.update(spent.attestations())
            state.applied = spent.sequence
            for tx_id in spent.tx_ids:
                self.world.log(f"{self.node.name} signs {tx_id}")

    def send(self, messages: Sequence[tuple[int, None]]) -> None:
        """Every replica decides alone."""

    def reply(self, replies: Sequence[tuple[Token, tuple[Decision, ...]]]) -> None:
        """Record the answers (what the replica's waiting clients would get, signed ones in
        wire form: any client that asks this member gets one of them)."""
        decisions = [d for _, row in replies for d in row]
        self.world.decisions[self.node.name].extend(decisions)
        members, index = self.world.members, self.node.index
        for d in decisions:
            answer = members.response(index, d) if d.signature else d
            self.world.answers.setdefault(d.tx_id, []).append((index, answer))


class NotaryWorld(World):
    """A PBFT world whose replicas run the cluster notary on every decided batch."""

    def __init__(
        self,
        seed: int,
        config: PbftConfig,
        behaviour: Behaviour | None = None,
        clients: int = 2,
        trace: bool = False,
        broken: bool = False,
        signing: str = SIGNS_REFUSED,
        verification: Verification = Verification.INTACT,
    ) -> None:
        super().__init__(seed, config, behaviour, clients, trace)
        faulty = self.behaviour.faulty
        honest_kind = Forgetful if broken else SpentSet
        faulty_kind = Unrefusing if signing == SIGNS_REFUSED else honest_kind
        self.notary: dict[str, SpentSet] = {
            node.name: (faulty_kind if node.index in faulty else honest_kind)()
            for node in self.nodes
        }
        self.tree_signers: dict[str, SignTree] = {  # a stateful byzantine step per faulty node
            node.name: BYZANTINE_SIGNING[signing]()
            for node in self.nodes
            if node.index in faulty and signing != SIGNS_REFUSED
        }
        self.members = Members(config.n)
        self.verification = verification
        self.decisions: dict[str, list[Decision]] = {node.name: [] for node in self.nodes}
        # tx_id -> (member, answer) in the order given: wire form if signed, else the refusal
        self.answers: dict[str, list[tuple[int, notarisation_pb2.NotarisationResponse | Decision]]]
        self.answers = {}
        self.recovered = 0  # batches applied at a restart (crash between records and apply)

    def submit(
        self, client: int, counter: int, replica: int | None = None, lone: bool = False
    ) -> bytes:
        """A client asks to notarise a spend of 1-2 pool states (stamped now; never `lone`)."""
        rng = self.rng
        states = sorted(rng.sample(range(STATES), rng.randint(1, 2)))
        start = until = ""
        if rng.random() < 0.3:
            start = str(self.now + rng.randint(-20, 10))
            until = str(self.now + rng.randint(0, 40))
        name = f"c{client}.{counter}.{'+'.join(map(str, states))}.{self.now}.{start}.{until}"
        request = name.encode() + b"|" + mac(self.keys.client_secrets[client], name.encode())
        target = rng.randrange(self.config.n) if replica is None else replica
        self.submitted[request] = self.now
        self._last_retry[request] = self.now
        self.log(f"client{client} asks {name} at r{target}")
        self.net.send(self.config.n + client, target, ClientRequest(request))
        return request

    def note_decided(self, node: Node, decided: Decided) -> None:
        """Count deciders, then apply the batch to the node's spent-set (unless it dies now)."""
        super().note_decided(node, decided)
        if node.dying:
            return  # a crash between persisting the records and applying: recovered at restart
        self._apply(node, decided.sequence, decided.requests)

    def _apply(self, node: Node, sequence: int, requests: tuple[bytes, ...]) -> None:
        state = self.notary[node.name]
        if sequence <= state.applied:
            return
        sign = self.members.signer(node.index)
        decider = ClusterDecider(sign, state.applied, self.tree_signers.get(node.name))
        ids = tuple(request_id(r) for r in requests)
        decider.step(OpenedBatch(sequence, ids, tuple(unpack(r) for r in requests), state))
        execute(decider.ready(), SpentSetExecutor(self, node))

    def run_until_done(self) -> None:
        """Tick until every request is decided everywhere after the heal, or the bound."""
        while self.now < runner.HEAL_AT + runner.LIVENESS_BOUND:
            self.tick()
            if self.now > runner.HEAL_AT and self.now % 5 == 0 and self.all_done():
                break

    def restart(self, node: Node) -> None:
        """Restart, then apply the decided batches the spent-set missed (as the runtime does)."""
        was_down = node.replica is None
        super().restart(node)
        if not was_down or node.replica is None:
            return
        retained = {  # from the records, as the runtime (memory keeps only `decided_kept`)
            r.batch.sequence: tuple(r.batch.requests)
            for r in node.storage
            if isinstance(r, DecidedRecord)
        }
        for seq in unapplied(retained, self.notary[node.name].applied):
            self._apply(node, seq, retained[seq])
            self.recovered += 1


def check_uniqueness(world: NotaryWorld) -> list[str]:
    """Double spends and forged attestations a client could accept, and honest replicas
    disagreeing on a consumer (module docstring)."""
    violations: list[str] = []
    consumer: dict[Ref, tuple[str, str]] = {}
    for node in world.honest():
        for ref, tx_id in world.notary[node.name].consumed.items():
            first = consumer.setdefault(ref, (node.name, tx_id))
            if first[1] != tx_id:
                violations.append(
                    f"disagreement: state s{ref.index} consumed by {first[1]} at {first[0]}, "
                    f"by {tx_id} at {node.name}"
                )
    notarised: dict[int, set[str]] = {}
    for spend in (parse_spend(r) for r in world.submitted):
        accepted = accepted_verdict(world, spend.tx_id)
        if accepted is None:
            continue
        for answer in accepted:
            if not world.members.genuine(answer.replica, spend.tx_id, answer):
                violations.append(
                    f"forged: {spend.tx_id} accepted on r{answer.replica}'s attestation, "
                    f"which its key never made for it"
                )
        for s in spend.states:
            notarised.setdefault(s, set()).add(spend.tx_id)
    for s, txs in sorted(notarised.items()):
        if len(txs) > 1:
            violations.append(f"double spend: state s{s} notarised for {','.join(sorted(txs))}")
    return violations


def client_answers(
    world: NotaryWorld, tx_id: str, mode: Verification | None = None
) -> list[ReplicaAnswer]:
    """Every signed answer about `tx_id` that a client asking all members would keep (checked
    as `mode` says, by default as the world's clients check)."""
    kept = (
        client_answer(world.members, member, answer, tx_id, mode or world.verification)
        for member, answer in world.answers.get(tx_id, ())
        if not isinstance(answer, Decision)
    )
    return [a for a in kept if a is not None]


def accepted_verdict(world: NotaryWorld, tx_id: str) -> list[ReplicaAnswer] | None:
    """The attestations a client accepts `tx_id` as notarised on (the kept answers whose
    signature the verdict holds: read back by value, whatever the verdict keys them by), or
    None."""
    kept = client_answers(world, tx_id)
    outcome = client_verdict(kept, world.config.f, world.verification)
    if outcome is None or not outcome.signed:
        return None
    held = set(outcome.signatures.values())
    return [a for a in kept if a.signature in held]


@dataclass(frozen=True)
class NotaryRunResult:
    """The verdict of one notary-cluster run."""

    seed: int
    behaviour: str
    broken: bool
    violations: tuple[str, ...]
    lacking: tuple[str, ...]
    signed: int
    conflicts: int
    recovered: int
    trace: tuple[str, ...]
    cluster_shape: bool = False
    signing: str = SIGNS_REFUSED
    verification: Verification = Verification.INTACT
    refused: int = 0  # signed answers clients refused (faulty members' forged ones)
    short: int = 0  # spends validly signed by some member, but by fewer than f+1

    def replay_command(self) -> str:
        """The command that replays this run."""
        flag = " --broken-decide" if self.broken else ""
        flag += " --cluster-shape" if self.cluster_shape else ""
        flag += f" --signing {self.signing}" if self.signing != SIGNS_REFUSED else ""
        if self.verification is not Verification.INTACT:
            flag += f" --verification {self.verification.value}"
        return (
            f"python -m dltmw.sim.notary_cluster --seed {self.seed} "
            f"--behaviour {self.behaviour}{flag}"
        )

    def verdict(self) -> str:
        """One readable line."""
        safety = "; ".join(self.violations) or "ok"
        live = "; ".join(self.lacking) or "ok"
        return (
            f"seed={self.seed} behaviour={self.behaviour} signing={self.signing} "
            f"signed={self.signed} conflicts={self.conflicts} refused={self.refused} "
            f"short={self.short} "
            f"safety: {safety} liveness: {live}"
        )


# The real cluster's slot shape (`runtime/roles/notary/cluster.cluster_config`, which the
# simulator does not import: it carries runtime timers and sizes).
CLUSTER_CHECKPOINT_INTERVAL, CLUSTER_BATCH_SIZE_MAX = 1, 4


def run_notary(
    seed: int,
    behaviour: str = "network",
    n: int = 4,
    requests: int = 16,
    broken: bool = False,
    trace: bool = False,
    cluster_shape: bool = False,
    signing: str = SIGNS_REFUSED,
    verification: Verification = Verification.INTACT,
) -> NotaryRunResult:
    """One seeded run of the cluster notary (same phases as `runner.run`), then the checkers.
    `cluster_shape`: slots and window shaped as the real cluster's (a checkpoint every slot,
    a window of two slots of four requests), the simulator's timers kept. `signing`: how the
    behaviour's faulty members sign (`FAULTY_SIGNING`); `verification`: the clients' check."""
    config = runner.sim_config(n)
    if cluster_shape:
        config = replace(
            config,
            checkpoint_interval=CLUSTER_CHECKPOINT_INTERVAL,
            batch_size_max=CLUSTER_BATCH_SIZE_MAX,
        )
    world = NotaryWorld(
        seed, config, BEHAVIOURS[behaviour](), 2, trace, broken, signing, verification
    )
    for counter in range(requests):

        def submit(c: int = counter % 2, k: int = counter) -> None:
            world.submit(c, k)

        world.at(world.rng.randrange(1, runner.SUBMIT_UNTIL), submit)
    if behaviour == "network":
        runner.network_faults(world)
    else:
        world.net.faults.delay_max = 3
    world.at(runner.HEAL_AT, lambda: runner.heal(world))
    world.run_until_done()
    honest = world.honest()
    violations = tuple(
        check_safety(honest, world.submitted, world.config.decided_retain) + check_uniqueness(world)
    )
    lacking = tuple(missing(honest, world.submitted)) if not violations else ()
    decisions = [d for node in honest for d in world.decisions[node.name]]
    return NotaryRunResult(
        seed,
        behaviour,
        broken,
        violations,
        lacking,
        signed=sum(1 for d in decisions if d.signature),
        conflicts=sum(1 for d in decisions if d.conflicts),
        recovered=world.recovered,
        trace=tuple(world.trace or ()),
        cluster_shape=cluster_shape,
        signing=signing,
        verification=verification,
        refused=refused_answers(world),
        short=short_of_members(world),
    )


def short_of_members(world: NotaryWorld) -> int:
    """Spends whose valid signatures come from fewer than f+1 members (a faulty member's)."""
    f = world.config.f
    signers = (
        {a.replica for a in client_answers(world, tx_id, Verification.INTACT)}
        for tx_id in world.answers
    )
    return sum(0 < len(members) <= f for members in signers)


def refused_answers(world: NotaryWorld) -> int:
    """Signed answers a client checking as production does would refuse."""
    return sum(
        client_answer(world.members, m, a, tx_id, Verification.INTACT) is None
        for tx_id, answers in world.answers.items()
        for m, a in answers
        if not isinstance(a, Decision)
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m dltmw.sim.notary_cluster --seed N [--behaviour B] [--broken-decide]`: replay
    one run, print its trace and verdict; exit 1 if a checker fails."""
    parser = argparse.ArgumentParser(prog="python -m dltmw.sim.notary_cluster")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--behaviour", choices=sorted(BEHAVIOURS), default="network")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--broken-decide", action="store_true")
    parser.add_argument("--cluster-shape", action="store_true")
    parser.add_argument("--signing", choices=FAULTY_SIGNING, default=SIGNS_REFUSED)
    parser.add_argument("--verification", choices=[v.value for v in Verification], default="intact")
    args = parser.parse_args(argv)
    result = run_notary(
        args.seed,
        args.behaviour,
        args.n,
        broken=args.broken_decide,
        trace=True,
        cluster_shape=args.cluster_shape,
        signing=args.signing,
        verification=Verification(args.verification),
    )
    for line in result.trace:
        print(line)
    print(result.verdict())
    return 0 if not result.violations and not result.lacking else 1


if __name__ == "__main__":
    sys.exit(main())
