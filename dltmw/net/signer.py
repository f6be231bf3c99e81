"""A node's or client's signing identity from its certificate and its key reference.

The key reference (`identity_key` in node.toml and client.toml) is a file path — a PEM key,
encrypted at rest or not (`net/keyfile.py`) — or a PKCS#11 URI naming a key in a token
(`net/hsm.py`). Everything that loads an identity goes through `load_signer`, so each kind of
key works everywhere and fails with the same clear error.
"""

from __future__ import annotations

from pathlib import Path

from dltmw.core.identity import SigningIdentity
from dltmw.net.hsm import HsmError, Pkcs11Key, Pkcs11Uri, is_uri
from dltmw.net.keyfile import KeyFileError, read_key

KeyRef = Path | Pkcs11Uri


def key_ref(base: Path, text: str) -> KeyRef:
    """`text` from a config file: a token URI as is, else a path relative to `base`."""
    return Pkcs11Uri.parse(text) if is_uri(text) else base / text


def load_signer(org_id: str, cert: Path, key: KeyRef) -> SigningIdentity:
    """The identity signing as `cert` with `key`; raises KeyFileError (a file that cannot be
    read or decrypted), HsmError (a token that cannot be used) or ValueError (the key does not
    match the certificate)."""
    cert_pem = cert.read_bytes()
    if isinstance(key, Path):
        return SigningIdentity.from_pem(org_id, cert_pem, read_key(key))
    try:
        return SigningIdentity.from_external(org_id, cert_pem, Pkcs11Key(key))
    except HsmError:
        raise
    except ValueError as exc:  # the token's key is not the certificate's
        raise HsmError(f"{key}: {exc}") from exc


__all__ = ["HsmError", "KeyFileError", "KeyRef", "key_ref", "load_signer"]
