"""Two modelled channels running the real `xfer` contract, for the `xfer` scenario.

What is real: the contract (`contracts/transfer.py`, run by `core.contract.simulate` as every
endorser runs it), MVCC validation of each block (`core.validation.validate_block`, the
committing peer's function), blocks (`core.block.make_block`, signed by the channel's orderers:
`cash` solo, `trading` PBFT-lite with 4 replicas, so 3 signatures), commit proofs
(`core.commit_proof.build_proof` + two peers' attestations) and their verification inside the
contract through the light client. What is modelled: a channel is one world state (every honest
peer computes the same), its ordering service one queue that cuts blocks when the scenario says
so (and not at all while stalled).

Material is derived from names (`sim.material.SIM_MATERIAL`: Ed25519 keys, certificates issued
at `vloop.EPOCH`), so a seed replays the same bytes; it is built once per process.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import timedelta

from dltmw.contracts.transfer import TransferContract
from dltmw.core.block import block_hash, make_block
from dltmw.core.commit_proof import attest, build_proof
from dltmw.core.contract import Contract, TxInfo, simulate
from dltmw.core.genesis import make_genesis
from dltmw.core.identity import SigningIdentity
from dltmw.core.rwset import Version
from dltmw.core.validation import TxForMvcc, reads_of, validate_block
from dltmw.pki.ca import IssuedCert, issue_cert, make_ca
from dltmw.sim.material import SIM_MATERIAL
from dltmw.sim.vloop import EPOCH
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    config_pb2,
    crosschain_pb2,
    proposal_pb2,
    rwset_pb2,
    transaction_pb2,
)

ORGS = ("Org1", "Org2", "Org3")
T0 = int((EPOCH + timedelta(days=1)).timestamp())  # header time of step 0 (certificates valid)
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
KEY_TYPE = "ed25519"  # deterministic signatures: a seed replays the same bytes


def _ident(ca: IssuedCert, org: str, name: str, role: str) -> SigningIdentity:
    issued = issue_cert(ca, org, name, role, key_type=KEY_TYPE, material=SIM_MATERIAL)
    return SigningIdentity.from_pem(org, issued.cert_pem, issued.key_pem)


@dataclass(frozen=True)
class Material:
    """Organisations, their CAs and identities; `outsider` is in no channel's config."""

    cas: dict[str, IssuedCert]
    admins: dict[str, SigningIdentity]
    peers: dict[str, SigningIdentity]
    outsider: SigningIdentity


@functools.lru_cache(maxsize=1)
def material() -> Material:
    """The organisations (made once per process: deterministic, so every run sees the same)."""
    cas = {
        o: make_ca(o, key_type=KEY_TYPE, material=SIM_MATERIAL)
        for o in (*ORGS, "OrdererOrg", "Org9")
    }
    return Material(
        cas=cas,
        admins={o: _ident(cas[o], o, f"admin.{o}", "admin") for o in ORGS},
        peers={o: _ident(cas[o], o, f"peer0.{o}", "peer") for o in ORGS},
        outsider=_ident(cas["Org9"], "Org9", "relayer.Org9", "orderer"),
    )


@functools.lru_cache(maxsize=4)
def channel_setup(
    channel_id: str, replicas: int
) -> tuple[config_pb2.ChannelConfig, tuple[SigningIdentity, ...], bytes]:
    """(config, orderers, serialized block 0) of a channel: solo (1) or PBFT-lite (4)."""
    m = material()
    ca = m.cas["OrdererOrg"]
    orderers = tuple(
        _ident(ca, "OrdererOrg", f"{channel_id}-orderer{i}", "orderer") for i in range(replicas)
    )
    org = config_pb2.OrganizationConfig
    config = config_pb2.ChannelConfig(
        channel_id=channel_id,
        organizations=[org(org_id=o, root_certificate_pem=m.cas[o].cert_pem) for o in ORGS],
        orderer_organizations=[org(org_id="OrdererOrg", root_certificate_pem=ca.cert_pem)],
        orderers=[
            config_pb2.NodeConfig(node_id=f"o{i}", org_id="OrdererOrg", identity=o.identity_bytes)
            for i, o in enumerate(orderers)
        ],
        peers=[
            config_pb2.NodeConfig(node_id=f"peer0.{o}", org_id=o, identity=p.identity_bytes)
            for o, p in m.peers.items()
        ],
        ordering=config_pb2.ORDERING_TYPE_PBFT if replicas > 1 else config_pb2.ORDERING_TYPE_NONE,
        default_endorsement_policy="OR(Org1.peer, Org2.peer)",
        contracts=[config_pb2.ContractConfig(name="xfer")],
        batch=config_pb2.BatchConfig(max_tx_count=10, max_bytes=1 << 20, timeout_ms=100),
    )
    nonce = hashlib.sha256(f"xfer-sim|{channel_id}".encode()).digest()
    genesis = make_genesis(config, orderers[0], nonce, EPOCH)
    return config, orderers, genesis.SerializeToString()


def envelope(channel_id: str, tx_id: str, result: proposal_pb2.ProposalResponsePayload) -> bytes:
    """An endorser transaction envelope carrying `result` (what a proof's reader parses)."""
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION, channel_id=channel_id, tx_id=tx_id
    )
    tx = transaction_pb2.Transaction(response_payload=result.SerializeToString())
    payload = common_pb2.Payload(header=header.SerializeToString(), data=tx.SerializeToString())
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


@dataclass(frozen=True)
class Pending:
    """An endorsed transaction on its way through ordering."""

    tx_id: str
    envelope: bytes
    rwset: rwset_pb2.ReadWriteSet


@dataclass
class SimChannel:
    """One channel: config and orderers, the contract, world state, chain, ordering queue."""

    channel_id: str
    replicas: int
    contract: Contract = field(default_factory=TransferContract)
    state: dict[tuple[str, str], tuple[bytes, Version]] = field(default_factory=dict)
    blocks: list[block_pb2.Block] = field(default_factory=list)
    codes: list[list[int]] = field(default_factory=list)
    where: dict[str, tuple[int, int]] = field(default_factory=dict)  # tx_id -> (block, index)
    queue: list[Pending] = field(default_factory=list)
    stalled: bool = False

    def __post_init__(self) -> None:
        _, _, genesis = channel_setup(self.channel_id, self.replicas)
        self.blocks.append(block_pb2.Block.FromString(genesis))
        self.codes.append([VALID])

    @property
    def genesis(self) -> bytes:
        """Block 0, serialized (what another channel's `trust` takes)."""
        return channel_setup(self.channel_id, self.replicas)[2]

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        """StateReader: committed value and version."""
        return self.state.get((namespace, key))

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[object]:
        """StateReader: `xfer` reads no ranges."""
        raise NotImplementedError("xfer reads no ranges")

    def endorse(
        self, function: str, args: tuple[bytes, ...], tx: TxInfo
    ) -> proposal_pb2.ProposalResponsePayload:
        """Simulate one call on the committed state, as an endorser does."""
        invocation = proposal_pb2.ContractInvocation(
            contract=self.contract.name, function=function, args=list(args)
        )
        tx = replace(tx, channel_id=self.channel_id)
        return simulate(self.contract, invocation, self, tx)  # type: ignore[arg-type]

    def evaluate(self, function: str, *args: str) -> proposal_pb2.ContractResponse:
        """A query on the committed state."""
        tx = TxInfo("q", "Org1", b"", "reader", T0, channel_id=self.channel_id)
        return self.endorse(function, tuple(a.encode() for a in args), tx).response

    def cut(self, count_max: int) -> list[tuple[str, int]]:
        """Order up to `count_max` queued transactions as the next block, validate it (MVCC,
        duplicates) and commit it; returns (tx_id, code) of each."""
        if self.stalled or not self.queue:
            return []
        batch, self.queue = self.queue[:count_max], self.queue[count_max:]
        number = len(self.blocks)
        block = make_block(
            self.channel_id, number, block_hash(self.blocks[-1]), [p.envelope for p in batch]
        )
        _, orderers, _ = channel_setup(self.channel_id, self.replicas)
        digest = block_hash(block)
        for o in orderers[: 2 * (self.replicas // 3) + 1]:
            block.metadata.signatures.add(signer=o.identity_bytes, signature=o.sign(digest))
        txs = [TxForMvcc(p.tx_id, VALID, p.rwset) for p in batch]
        keys, _ = reads_of(txs)
        versions = {k: v[1] for k in keys if (v := self.state.get(k)) is not None}
        codes, writes = validate_block(number, txs, versions, {}, set(self.where))
        for w in writes:
            if w.value is None:
                self.state.pop((w.namespace, w.key), None)
            else:
                self.state[(w.namespace, w.key)] = (w.value, w.version)
        for i, p in enumerate(batch):
            self.where.setdefault(p.tx_id, (number, i))
        self.blocks.append(block)
        self.codes.append(codes)
        return [(p.tx_id, c) for p, c in zip(batch, codes, strict=True)]

    def proof(self, tx_id: str, attesters: int = 2) -> crosschain_pb2.CommitProof | None:
        """The commit proof of a committed transaction, attested by `attesters` peers."""
        found = self.where.get(tx_id)
        if found is None:
            return None
        number, index = found
        block, code = self.blocks[number], self.codes[number][index]
        proof = build_proof(block, index, code)
        for peer in list(material().peers.values())[:attesters]:
            proof.attestations.append(attest(peer, block, index, code))
        return proof

    def record(self, transfer_id: str) -> dict[str, str]:
        """The transfer's record ({"state": "absent"} when there is none)."""
        value = self.get(self.contract.name, "t/" + transfer_id)
        return {"state": "absent"} if value is None else dict(json.loads(value[0]))

    def balances(self) -> dict[str, int]:
        """Every account's balance."""
        ns = self.contract.name
        return {k[2:]: int(v[0]) for (n, k), v in self.state.items() if n == ns and k[:2] == "a/"}
