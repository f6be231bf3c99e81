"""Private keys encrypted at rest: written encrypted under the environment's passphrase,
decrypted in memory on load, and refused with a clear error without (or with a wrong)
passphrase — never read as garbage, never half-loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dltmw.core.identity import SigningIdentity
from dltmw.net.keyfile import (
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    KeyFileError,
    encrypt,
    for_writing,
    is_encrypted,
    read_key,
)
from dltmw.pki.network import init_network
from dltmw.rpc.tls import TlsMaterial
from dltmw.sdk.network import DEFAULT_TOPOLOGY
from dltmw.sdk.profile import Profile, ProfileError


def plain_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(autouse=True)
def no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(PASSPHRASE_FILE_ENV, raising=False)


def test_round_trip_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = plain_key()
    assert for_writing(pem) == pem  # no passphrase: written as before
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    sealed = for_writing(pem)
    assert is_encrypted(sealed) and b"PRIVATE KEY-----" in sealed and sealed != pem
    (tmp_path / "k").write_bytes(sealed)
    assert read_key(tmp_path / "k") == pem  # the same key, decrypted in memory


def test_passphrase_file_wins_and_its_newline_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "k").write_bytes(encrypt(plain_key(), b"from-file"))
    (tmp_path / "secret").write_text("from-file\n")
    monkeypatch.setenv(PASSPHRASE_ENV, "from-env")
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(tmp_path / "secret"))
    read_key(tmp_path / "k")
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(KeyFileError, match="missing"):
        read_key(tmp_path / "k")


def test_encrypted_key_without_or_with_a_wrong_passphrase_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "k").write_bytes(encrypt(plain_key(), b"right"))
    with pytest.raises(KeyFileError, match=f"is encrypted.*{PASSPHRASE_ENV}"):
        read_key(tmp_path / "k")
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        read_key(tmp_path / "k")
    with pytest.raises(KeyFileError, match="cannot read"):
        read_key(tmp_path / "absent")


def test_init_encrypts_every_private_key_and_loaders_decrypt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "t.toml").write_text(DEFAULT_TOPOLOGY)
    monkeypatch.setenv(PASSPHRASE_ENV, "s3cret")
    init_network(tmp_path / "t.toml", tmp_path / "net")
    keys = sorted((tmp_path / "net").rglob("*.key"))
    assert len(keys) >= 15  # CAs, node and client identity and TLS keys, privacy keys
    assert all(is_encrypted(k.read_bytes()) for k in keys), [
        str(k) for k in keys if not is_encrypted(k.read_bytes())
    ]
    profile = Profile.from_network(tmp_path / "net", "user1.org1")
    assert isinstance(profile.signer(), SigningIdentity)
    home = tmp_path / "net" / "nodes" / "peer0.org1"
    TlsMaterial.load(home / "tls.pem", home / "tls.key", tmp_path / "net" / "tls-roots.pem")
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(ProfileError, match="is encrypted"):
        profile.signer()
