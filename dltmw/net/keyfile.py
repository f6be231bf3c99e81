"""Private key files, encrypted at rest with a passphrase (PKCS#8), read in one place.

A key file is PEM: either a plain `PRIVATE KEY` (as before) or an `ENCRYPTED PRIVATE KEY`
(PKCS#8 with the `cryptography` library's best available encryption: scrypt or PBKDF2 +
AES-256-CBC). `dltmw init` writes every private key encrypted when a passphrase is given; nodes
and clients decrypt in memory when they load, and nothing decrypted is ever written back.

The passphrase comes from the environment, so it never sits in a config file next to the keys:
`DLTMW_KEY_PASSPHRASE_FILE` names a file holding it (a secret mounted by the operator; one
trailing newline is ignored), else `DLTMW_KEY_PASSPHRASE` holds it. A node process inherits
its supervisor's environment. An encrypted key without a passphrase, or with a wrong one, is a
`KeyFileError` naming the file and what to do — never a half-started node.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization

PASSPHRASE_ENV = "DLTMW_KEY_PASSPHRASE"
PASSPHRASE_FILE_ENV = "DLTMW_KEY_PASSPHRASE_FILE"
ENCRYPTED_MARK = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


class KeyFileError(ValueError):
    """A private key file that cannot be used (names the file and the remedy)."""


def passphrase() -> bytes | None:
    """The key passphrase from the environment (module docstring), or None."""
    file_name = os.environ.get(PASSPHRASE_FILE_ENV)
    if file_name:
        try:
            secret = Path(file_name).read_bytes()
        except OSError as exc:
            raise KeyFileError(f"{PASSPHRASE_FILE_ENV}={file_name}: {exc}") from exc
        secret = secret.removesuffix(b"\n")
    else:
        value = os.environ.get(PASSPHRASE_ENV)
        secret = value.encode() if value else b""
    return secret or None


def is_encrypted(pem: bytes) -> bool:
    """Is this PEM an encrypted PKCS#8 private key?"""
    return ENCRYPTED_MARK in pem


def encrypt(pem: bytes, secret: bytes) -> bytes:
    """The plain PEM private key `pem` as an encrypted PKCS#8 PEM under `secret`."""
    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret),
    )


def for_writing(pem: bytes) -> bytes:
    """`pem` encrypted under the environment's passphrase, or unchanged without one."""
    secret = passphrase()
    return encrypt(pem, secret) if secret is not None else pem


def read_key(path: Path) -> bytes:
    """The private key in `path` as plain PKCS#8 PEM (decrypted in memory if encrypted)."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc}") from exc
    if not is_encrypted(pem):
        return pem
    secret = passphrase()
    if secret is None:
        raise KeyFileError(
            f"{path} is encrypted: give its passphrase in {PASSPHRASE_FILE_ENV} (a file) "
            f"or {PASSPHRASE_ENV}"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=secret)
    except ValueError as exc:
        raise KeyFileError(f"cannot decrypt {path}: wrong passphrase or damaged file") from exc
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
