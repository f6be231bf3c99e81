"""Loading a node's or client's signing identity and TLS material from its files."""

from __future__ import annotations

from pathlib import Path

from dltmw.core.identity import SigningIdentity


def load_signing_identity(org_id: str, cert: Path, key: Path) -> SigningIdentity:
    """Read a PEM certificate and key into a SigningIdentity."""
    return SigningIdentity.from_pem(org_id, cert.read_bytes(), key.read_bytes())
