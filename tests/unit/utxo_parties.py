"""Test parties for the UTXO unit tests: a bank, a depository, two brokers, a notary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import count

from dltmw.core.identity import Membership, SigningIdentity
from dltmw.core.utxo.build import TxSpec, build_transaction
from dltmw.core.utxo.model import WireTx, read_transaction
from dltmw.pki.ca import FRESH, issue_cert, make_ca

NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs
NOTARY = "notary0"
_nonces = count()


@dataclass(frozen=True)
class Parties:
    bank: SigningIdentity
    depository: SigningIdentity
    alice: SigningIdentity
    bob: SigningIdentity
    notary: SigningIdentity
    outsider: SigningIdentity  # certificate from a CA that is not a member
    membership: Membership


def make_parties() -> Parties:
    cas = {org: make_ca(org, material=AT_NOW) for org in ("Bank", "Exchange", "BrokerA", "BrokerB")}

    def ident(org: str, name: str, ca_org: str | None = None) -> SigningIdentity:
        issued = issue_cert(
            cas[ca_org or org] if ca_org != "X" else make_ca(org, material=AT_NOW),
            org,
            name,
            "peer",
            material=AT_NOW,
        )
        return SigningIdentity.from_pem(org, issued.cert_pem, issued.key_pem)

    return Parties(
        bank=ident("Bank", "peer.bank"),
        depository=ident("Exchange", "peer.exchange"),
        alice=ident("BrokerA", "peer.brokera"),
        bob=ident("BrokerB", "peer.brokerb"),
        notary=ident("Exchange", NOTARY),
        outsider=ident("BrokerA", "mallory", "X"),
        membership=Membership({org: ca.cert_pem for org, ca in cas.items()}),
    )


def nonce() -> bytes:
    """A fresh, deterministic 32-byte nonce."""
    return hashlib.sha256(b"nonce%d" % next(_nonces)).digest()


def tx(**kw: object) -> tuple[bytes, WireTx]:
    """Build a transaction for notary0 from TxSpec keyword arguments; returns (bytes, parsed)."""
    raw = build_transaction(TxSpec(notary=NOTARY, nonce=nonce(), **kw))  # type: ignore[arg-type]
    return raw, read_transaction(raw)
