"""Two channels for commit proof tests: `cash` (solo) and `trading` (PBFT-lite, 4 replicas),
three member organisations with an admin, a peer and a client each, and block builders."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from dltmw.core.block import block_hash, make_block
from dltmw.core.channel import channel_view
from dltmw.core.commit_proof import attest, build_proof
from dltmw.core.config_update import add_signature, update_content, update_envelope
from dltmw.core.genesis import make_genesis
from dltmw.core.identity import SigningIdentity
from dltmw.core.light_client import LightClient, track
from dltmw.pki.ca import FRESH, IssuedCert, issue_cert, make_ca
from dltmw.v1 import block_pb2, config_pb2, config_update_pb2, crosschain_pb2, transaction_pb2

ORGS = ("Org1", "Org2", "Org3")
NOW = datetime.now(UTC)
# Certificates are issued at NOW too (fresh keys, valid from NOW - 1 h): a world made an hour
# or more after this module was imported (a long test run) still holds at NOW, the time its
# genesis, updates and checks carry; issued at the wall clock they would not be valid yet.
AT_NOW = replace(FRESH, now=lambda: NOW)
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
_nonces = itertools.count()


def nonce() -> bytes:
    return hashlib.sha256(b"xch-%d" % next(_nonces)).digest()


def ident(ca: IssuedCert, org: str, name: str, role: str) -> SigningIdentity:
    issued = issue_cert(ca, org, name, role, material=AT_NOW)
    return SigningIdentity.from_pem(org, issued.cert_pem, issued.key_pem)


def _org(org: str, ca: IssuedCert) -> config_pb2.OrganizationConfig:
    return config_pb2.OrganizationConfig(org_id=org, root_certificate_pem=ca.cert_pem)


@dataclass
class Chan:
    """One channel: its config, orderers, genesis and the chain built so far (in memory)."""

    config: config_pb2.ChannelConfig
    orderers: list[SigningIdentity]
    genesis: block_pb2.Block
    blocks: list[block_pb2.Block]

    @property
    def channel_id(self) -> str:
        return self.config.channel_id

    def client(self) -> LightClient:
        return track(self.genesis)

    def cut(self, envelopes: list[bytes], signers: list[SigningIdentity]) -> block_pb2.Block:
        """The next block over `envelopes`, signed by `signers`, appended to the chain."""
        last = self.blocks[-1]
        block = make_block(self.channel_id, last.header.number + 1, block_hash(last), envelopes)
        for s in signers:
            block.metadata.signatures.add(
                signer=s.identity_bytes, signature=s.sign(block_hash(block))
            )
        self.blocks.append(block)
        return block


@dataclass(frozen=True)
class World:
    cas: dict[str, IssuedCert]
    admins: dict[str, SigningIdentity]
    peers: dict[str, SigningIdentity]
    clients: dict[str, SigningIdentity]
    outsider: SigningIdentity
    spare_orderer: SigningIdentity


def make_world() -> tuple[World, Chan, Chan]:
    cas = {o: make_ca(o, material=AT_NOW) for o in (*ORGS, "OrdererOrg", "Org9")}
    world = World(
        cas=cas,
        admins={o: ident(cas[o], o, f"admin.{o}", "admin") for o in ORGS},
        peers={o: ident(cas[o], o, f"peer0.{o}", "peer") for o in ORGS},
        clients={o: ident(cas[o], o, f"user.{o}", "client") for o in ORGS},
        outsider=ident(cas["Org9"], "Org9", "orderer9", "orderer"),
        spare_orderer=ident(cas["OrdererOrg"], "OrdererOrg", "orderer-new", "orderer"),
    )
    cash = _channel(world, "cash", config_pb2.ORDERING_TYPE_NONE, 1)
    trading = _channel(world, "trading", config_pb2.ORDERING_TYPE_PBFT, 4)
    return world, cash, trading


def _channel(world: World, channel_id: str, ordering: int, n: int) -> Chan:
    ca = world.cas["OrdererOrg"]
    orderers = [ident(ca, "OrdererOrg", f"{channel_id}-orderer{i}", "orderer") for i in range(n)]
    config = config_pb2.ChannelConfig(
        channel_id=channel_id,
        organizations=[_org(o, world.cas[o]) for o in ORGS],
        orderer_organizations=[_org("OrdererOrg", ca)],
        orderers=[
            config_pb2.NodeConfig(node_id=f"o{i}", org_id="OrdererOrg", identity=o.identity_bytes)
            for i, o in enumerate(orderers)
        ],
        peers=[
            config_pb2.NodeConfig(node_id=f"peer0.{o}", org_id=o, identity=p.identity_bytes)
            for o, p in world.peers.items()
        ],
        ordering=ordering,  # type: ignore[arg-type]
        default_endorsement_policy="OR(Org1.peer, Org2.peer)",
        contracts=[config_pb2.ContractConfig(name="xfer")],
        batch=config_pb2.BatchConfig(max_tx_count=10, max_bytes=1 << 20, timeout_ms=100),
    )
    genesis = make_genesis(config, orderers[0], nonce(), NOW)
    return Chan(config, orderers, genesis, [genesis])


def config_update_block(
    world: World, chan: Chan, new: config_pb2.ChannelConfig, signers: list[SigningIdentity]
) -> block_pb2.Block:
    """A config block applying `new` (admins of Org1 and Org2 sign), signed by `signers`."""
    view = channel_view(chan.config)
    update = config_update_pb2.ConfigUpdate(content=update_content(view, new))
    add_signature(update, world.admins["Org1"])
    add_signature(update, world.admins["Org2"])
    env = update_envelope(update, chan.channel_id, world.clients["Org1"], nonce(), NOW)
    return chan.cut([env], signers)


def proof_of(
    block: block_pb2.Block,
    tx_index: int,
    attesters: list[SigningIdentity],
    code: int = VALID,
) -> crosschain_pb2.CommitProof:
    proof = build_proof(block, tx_index, code)
    for a in attesters:
        proof.attestations.append(attest(a, block, tx_index, code))
    return proof
