"""A small BFT channel for commit-path tests: members Org1/Org2, four orderers, real keys.

Builds real signed transactions (endorser and private) and real 2f+1-signed blocks, so tests
exercise exactly what a peer receives from the ordering service.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from dltmw.core.block import block_hash, make_block
from dltmw.core.channel import ChannelView, channel_view
from dltmw.core.hashing import ZERO_HASH, compute_tx_id, sha256
from dltmw.core.identity import SigningIdentity
from dltmw.pki.ca import FRESH, issue_cert, make_ca
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    config_pb2,
    proposal_pb2,
    rwset_pb2,
    transaction_pb2,
)

CHANNEL = "trades"
ORDERER_ORGS = ("OrdererA", "OrdererB", "OrdererC", "OrdererD")
NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs
_nonces = itertools.count()


@dataclass(frozen=True)
class Parties:
    """The channel view and everyone's signing identity."""

    view: ChannelView
    user: SigningIdentity  # Org1 client
    peer1: SigningIdentity  # Org1 peer
    peer2: SigningIdentity  # Org2 peer
    orderers: tuple[SigningIdentity, ...]
    outsider: SigningIdentity  # Org9, not a member

    @property
    def views(self) -> dict[str, ChannelView]:
        """channel_of mapping for admission checks."""
        return {CHANNEL: self.view}


def make_parties() -> Parties:
    """Fresh CAs and identities (P-256) for Org1, Org2, four orderer orgs and an outsider."""
    cas = {org: make_ca(org, material=AT_NOW) for org in ("Org1", "Org2", "Org9", *ORDERER_ORGS)}

    def ident(org: str, name: str, role: str) -> SigningIdentity:
        issued = issue_cert(cas[org], org, name, role, material=AT_NOW)
        return SigningIdentity.from_pem(org, issued.cert_pem, issued.key_pem)

    orderers = tuple(ident(org, f"orderer.{org[-1].lower()}", "orderer") for org in ORDERER_ORGS)
    config = config_pb2.ChannelConfig(
        channel_id=CHANNEL,
        organizations=[
            config_pb2.OrganizationConfig(org_id=o, root_certificate_pem=cas[o].cert_pem)
            for o in ("Org1", "Org2")
        ],
        orderer_organizations=[
            config_pb2.OrganizationConfig(org_id=o, root_certificate_pem=cas[o].cert_pem)
            for o in ORDERER_ORGS
        ],
        orderers=[
            config_pb2.NodeConfig(node_id=f"orderer{i}", org_id=o, identity=s.identity_bytes)
            for i, (o, s) in enumerate(zip(ORDERER_ORGS, orderers, strict=True))
        ],
        ordering=config_pb2.ORDERING_TYPE_PBFT,
        default_endorsement_policy="AND(Org1.peer, Org2.peer)",
        contracts=[
            config_pb2.ContractConfig(name="bank"),
            config_pb2.ContractConfig(name="kv", endorsement_policy="OR(Org1.peer, Org2.peer)"),
        ],
        batch=config_pb2.BatchConfig(max_tx_count=100, max_bytes=1 << 20, timeout_ms=100),
    )
    return Parties(
        view=channel_view(config),
        user=ident("Org1", "user1", "client"),
        peer1=ident("Org1", "peer0.org1", "peer"),
        peer2=ident("Org2", "peer0.org2", "peer"),
        orderers=orderers,
        outsider=ident("Org9", "mallory", "client"),
    )


def fresh_nonce() -> bytes:
    """A distinct 32-byte nonce per call (deterministic sequence)."""
    return hashlib.sha256(b"ledger-nonce-%d" % next(_nonces)).digest()


def header(
    creator: SigningIdentity,
    kind: int = common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION,
    nonce: bytes | None = None,
    at: datetime = NOW,
) -> common_pb2.Header:
    """A well-formed header by `creator`."""
    nonce = fresh_nonce() if nonce is None else nonce
    h = common_pb2.Header(
        type=kind,
        channel_id=CHANNEL,
        tx_id=compute_tx_id(nonce, creator.identity_bytes),
        creator=creator.identity_bytes,
        nonce=nonce,
    )
    h.timestamp.FromDatetime(at)
    return h


def seal(signer: SigningIdentity, header_bytes: bytes, data: bytes) -> bytes:
    """Envelope bytes: Payload(header, data) signed by `signer`."""
    payload = common_pb2.Payload(header=header_bytes, data=data).SerializeToString()
    return common_pb2.Envelope(payload=payload, signature=signer.sign(payload)).SerializeToString()


def kv_rwset(
    reads: Sequence[tuple[str, tuple[int, int] | None]] = (),
    writes: Sequence[tuple[str, bytes]] = (),
    namespace: str = "kv",
) -> rwset_pb2.ReadWriteSet:
    """A read/write set of point reads (key, version or None) and writes."""
    rw = rwset_pb2.ReadWriteSet(namespace=namespace)
    for key, version in reads:
        read = rw.reads.add(key=key)
        if version is not None:
            read.version.block_number, read.version.tx_index = version
    for key, value in writes:
        rw.writes.add(key=key, value=value)
    return rw


def endorser_tx(
    parties: Parties,
    rwset: rwset_pb2.ReadWriteSet,
    endorsers: Sequence[SigningIdentity] | None = None,
    h: common_pb2.Header | None = None,
) -> bytes:
    """A fully valid endorser transaction envelope (kv contract, endorsed by Org1's peer)."""
    h = header(parties.user) if h is None else h
    header_bytes = h.SerializeToString()
    invocation = proposal_pb2.ContractInvocation(
        contract=rwset.namespace, function="put", args=[b"k", b"v"]
    )
    proposal_bytes = proposal_pb2.Proposal(
        header=header_bytes, payload=invocation.SerializeToString()
    ).SerializeToString()
    response = proposal_pb2.ProposalResponsePayload(
        proposal_hash=sha256(proposal_bytes),
        rwset=rwset,
        response=proposal_pb2.ContractResponse(status=200),
    )
    response_bytes = response.SerializeToString()
    endorsements = [
        proposal_pb2.Endorsement(
            endorser=e.identity_bytes, signature=e.sign(response_bytes + e.identity_bytes)
        )
        for e in (endorsers if endorsers is not None else [parties.peer1])
    ]
    tx = transaction_pb2.Transaction(
        proposal_bytes=proposal_bytes, response_payload=response_bytes, endorsements=endorsements
    )
    return seal(parties.user, header_bytes, tx.SerializeToString())


def private_tx(parties: Parties, digest: bytes = bytes(range(32))) -> bytes:
    """A valid private transaction envelope carrying `digest`."""
    h = header(parties.user, common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION)
    data = transaction_pb2.PrivateTransaction(payload_hash=digest).SerializeToString()
    return seal(parties.user, h.SerializeToString(), data)


def signed_block(
    parties: Parties, number: int, previous_hash: bytes, envelopes: Sequence[bytes]
) -> block_pb2.Block:
    """Block `number` over `envelopes`, signed by three of the four orderers (2f+1)."""
    block = make_block(CHANNEL, number, previous_hash if number else ZERO_HASH, envelopes)
    digest = block_hash(block)
    for orderer in parties.orderers[:3]:
        block.metadata.signatures.add(signer=orderer.identity_bytes, signature=orderer.sign(digest))
    return block
