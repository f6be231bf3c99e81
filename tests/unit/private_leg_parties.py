"""A DvP with one private leg, in memory (docs/cross-channel.md "A private leg"): `trading`
(public `xfer`, PBFT-lite) and `cash`, whose leg is executed privately by the peers of Org1
and Org2 (Org3 is a member of `cash` but no recipient). Real `xfer`, real private execution
(`core/privacy/execution.execute`), real agreement signatures and real commit proofs."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field, replace

from crosschain_parties import NOW, Chan, World, make_world, nonce, proof_of

from dltmw.contract_sdk.testing import DEFAULT_TX, ContractTester, MemoryState, Outcome
from dltmw.contracts.kv import KvContract
from dltmw.contracts.transfer import TransferContract
from dltmw.core.block import block_hash
from dltmw.core.genesis import make_genesis
from dltmw.core.identity import SigningIdentity
from dltmw.core.privacy.agreement import AGREE, ALL_RECIPIENTS, agreement_body, signing_bytes
from dltmw.core.privacy.execution import PrivateOutcome, execute
from dltmw.core.private_leg import (
    commitment_of,
    details_bytes,
    disclosure_bytes,
    lock_disclosure,
)
from dltmw.core.rwset import Version
from dltmw.v1 import (
    common_pb2,
    config_pb2,
    private_agreement_pb2,
    private_leg_pb2,
    private_payload_pb2,
    transaction_pb2,
)

T0 = int(NOW.timestamp())
DEADLINE = T0 + 100
RECIPIENTS = ("Org1", "Org2")
_tx = itertools.count()


def privacy_key(org: str) -> bytes:
    return hashlib.sha256(b"privacy-key-" + org.encode()).digest()


def private_channel(cash: Chan, policy: int = ALL_RECIPIENTS) -> Chan:
    """`cash` with a privacy key per peer and the agreement policy (a fresh block 0)."""
    config = config_pb2.ChannelConfig()
    config.CopyFrom(cash.config)
    for peer in config.peers:
        peer.privacy_public_key = privacy_key(peer.org_id)
    config.private_agreement = policy  # type: ignore[assignment]
    genesis = make_genesis(config, cash.orderers[0], nonce(), NOW)
    return Chan(config, cash.orderers, genesis, [genesis])


def terms(chan: Chan, trading: Chan, salt: str, amount: int = 500, **leg: object) -> bytes:
    """Securities on `trading` (seller -> buyer, 10); cash privately (buyer -> seller)."""
    details = details_bytes("buyer", "seller", amount, salt)
    private = {
        "private": commitment_of(details),
        "recipients": list(RECIPIENTS),
        "trust": block_hash(trading.genesis).hex(),
    }
    private.update(leg)
    legs = {"trading": {"from": "seller", "to": "buyer", "amount": 10}, chan.channel_id: private}
    body = {"deadline_s": DEADLINE, "legs": legs, "nonce": salt}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def details(salt: str, amount: int = 500) -> bytes:
    return details_bytes("buyer", "seller", amount, salt)


def tid(t: bytes) -> str:
    return hashlib.sha256(t).hexdigest()


@dataclass
class PrivateSide:
    """The private leg's channel: the recipients' (shared) private state and the public chain."""

    chan: Chan
    world: World
    signers: tuple[str, ...] = RECIPIENTS  # organisations whose peers sign agreements
    state: MemoryState = field(default_factory=MemoryState)
    contract: TransferContract = field(default_factory=TransferContract)
    height: int = 1

    def run(self, function: str, *args: str | bytes, contract: str = "xfer") -> PrivateOutcome:
        """Execute privately (no header) and apply the writes, as every recipient does."""
        invocation = private_payload_pb2.PrivateInvocation(
            contract=contract,
            function=function,
            args=[a.encode() if isinstance(a, str) else a for a in args],
        )
        contracts = {"xfer": self.contract, "kv": KvContract()}
        out = execute(contracts.get, invocation, self.state, Version(self.height, 0))
        for w in out.writes:
            if w.value is None:
                self.state.data.pop((w.namespace, w.key), None)
            else:
                self.state.data[(w.namespace, w.key)] = (w.value, Version(self.height, 0))
        self.height += 1
        return out

    def commit(
        self,
        out: PrivateOutcome,
        agreers: list[SigningIdentity] | None = None,
        kind: int = common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION,
    ) -> bytes:
        """The commit proof (serialised) of a private transaction agreed on `out`."""
        chan = self.chan
        tx_id = f"ptx-{next(_tx)}"
        payload_hash = hashlib.sha256(tx_id.encode()).digest()
        keys = [privacy_key(o) for o in self.signers]
        body = agreement_body(
            chan.channel_id, tx_id, payload_hash, (out.pre_state_hash, out.state_hash), keys, AGREE
        )
        signers = agreers if agreers is not None else [self.world.peers[o] for o in self.signers]
        agreements = [
            private_agreement_pb2.PrivateAgreement(
                body=body, signer=s.identity_bytes, signature=s.sign(signing_bytes(body))
            )
            for s in signers
        ]
        data = transaction_pb2.PrivateTransaction(payload_hash=payload_hash, agreements=agreements)
        env = envelope(chan.channel_id, tx_id, kind, data)
        block = chan.cut([env], chan.orderers[:1])
        attesters = [self.world.peers["Org1"], self.world.peers["Org2"]]
        return proof_of(block, 0, attesters).SerializeToString()

    def balance(self, account: str) -> int:
        found = self.state.get("xfer", "a/" + account)
        return int(found[0]) if found else -1

    def record(self, t: bytes) -> str:
        found = self.state.get("xfer", "t/" + tid(t))
        return "absent" if found is None else str(json.loads(found[0])["state"])


def envelope(channel_id: str, tx_id: str, kind: int, data: object) -> bytes:
    """A signed-header-shaped envelope (only its bytes and header fields matter to a proof)."""
    header = common_pb2.Header(type=kind, channel_id=channel_id, tx_id=tx_id)  # type: ignore[arg-type]
    header.timestamp.FromDatetime(NOW)
    raw = data.SerializeToString()  # type: ignore[attr-defined]
    payload = common_pb2.Payload(header=header.SerializeToString(), data=raw)
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


def leg_proof(commit_proof: bytes, disclosure: bytes) -> bytes:
    from dltmw.v1 import crosschain_pb2

    proof = private_leg_pb2.PrivateLegProof(
        commit_proof=crosschain_pb2.CommitProof.FromString(commit_proof), disclosure=disclosure
    )
    return proof.SerializeToString()


def lock_leg_proof(side: PrivateSide, out: PrivateOutcome, t: bytes) -> bytes:
    disclosure = disclosure_bytes(lock_disclosure(side.chan.channel_id, tid(t)))
    return leg_proof(side.commit(out), disclosure)


@dataclass
class PublicSide:
    """`trading`: the public `xfer` with its header (channel, time, its own block 0)."""

    chan: Chan
    world: World
    tester: ContractTester = field(init=False)

    def __post_init__(self) -> None:
        tx = replace(
            DEFAULT_TX,
            channel_id=self.chan.channel_id,
            creator_roles=frozenset({"admin"}),
            timestamp_s=T0,
            channel_genesis=block_hash(self.chan.genesis),
        )
        self.tester = ContractTester(TransferContract(), tx=tx)

    def at(self, ts: int) -> None:
        self.tester.tx = replace(self.tester.tx, timestamp_s=ts)

    def call(self, function: str, *args: str | bytes) -> tuple[Outcome, bytes | None]:
        """Submit; when accepted, commit it and return its commit proof too."""
        out = self.tester.submit(function, *args)
        if not out.ok:
            return out, None
        tx = transaction_pb2.Transaction(response_payload=out.result.SerializeToString())
        env = envelope(self.chan.channel_id, "x", common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION, tx)
        block = self.chan.cut([b"before", env], self.chan.orderers[:3])
        peers = [self.world.peers["Org1"], self.world.peers["Org3"]]
        return out, proof_of(block, 1, peers).SerializeToString()

    def balance(self, account: str) -> int:
        return int(self.tester.evaluate("balance", account).payload)

    def status(self, t: bytes) -> str:
        return self.tester.evaluate("status", tid(t)).payload.decode()


def parties(policy: int = ALL_RECIPIENTS) -> tuple[World, PublicSide, PrivateSide]:
    """Both channels, trading tracking cash, accounts opened (seller holds securities on
    trading, buyer holds 1000 cash privately)."""
    world, cash, trading = make_world()
    pcash = private_channel(cash, policy)
    pub, priv = PublicSide(trading, world), PrivateSide(pcash, world)
    assert pub.call("trust", pcash.genesis.SerializeToString())[0].ok
    for acct, amount in (("seller", "1000"), ("buyer", "0")):
        assert pub.call("open", acct, amount)[0].ok
    for acct, amount in (("buyer", "1000"), ("seller", "0")):
        assert priv.run("open", acct, amount).status == 1
    return world, pub, priv
