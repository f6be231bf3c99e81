"""PKCS#11 URIs and PINs of token keys (`net/hsm.py`): what a node.toml may name, and the
clear errors for what it may not — no token is touched here (tests/integration/test_hsm.py
signs with a real SoftHSM2 token)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dltmw.net.hsm import MODULE_ENV, PIN_ENV, PIN_FILE_ENV, HsmError, Pkcs11Uri, is_uri, pin
from dltmw.net.signer import key_ref


def test_uri_round_trips_with_escapes_and_module() -> None:
    uri = Pkcs11Uri("org 1;x", "peer0.org1", "/usr/lib/softhsm/libsofthsm2.so")
    text = str(uri)
    assert text.startswith("pkcs11:token=org%201%3Bx;object=peer0.org1?module-path=")
    assert Pkcs11Uri.parse(text) == uri
    assert Pkcs11Uri.parse("pkcs11:object=k;token=t;type=private") == Pkcs11Uri("t", "k")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("file:/x", "not a PKCS#11 URI"),
        ("pkcs11:token=t", "needs token= and object="),
        ("pkcs11:object=k", "needs token= and object="),
        ("pkcs11:token=t;object=k;pin-value=1234", "unsupported"),
        ("pkcs11:token=t;object=k;type=public", "type=private"),
        ("pkcs11:token=t;token=u;object=k", "repeated"),
        ("pkcs11:token=t;objectk", "malformed"),
    ],
)
def test_bad_uris_are_refused_with_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(HsmError, match=says):
        Pkcs11Uri.parse(text)


def test_module_comes_from_the_uri_else_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODULE_ENV, raising=False)
    with pytest.raises(HsmError, match=MODULE_ENV):
        Pkcs11Uri("t", "k").module()
    monkeypatch.setenv(MODULE_ENV, "/env/lib.so")
    assert Pkcs11Uri("t", "k").module() == "/env/lib.so"
    assert Pkcs11Uri("t", "k", "/uri/lib.so").module() == "/uri/lib.so"


def test_pin_comes_from_a_file_or_the_environment_never_silently_empty(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(PIN_FILE_ENV, raising=False)
    monkeypatch.delenv(PIN_ENV, raising=False)
    with pytest.raises(HsmError, match=PIN_FILE_ENV):
        pin()
    monkeypatch.setenv(PIN_ENV, "1234")
    assert pin() == "1234"
    (tmp_path / "pin").write_text("98765\n")
    monkeypatch.setenv(PIN_FILE_ENV, str(tmp_path / "pin"))
    assert pin() == "98765"  # the file wins; one trailing newline is not part of the PIN
    monkeypatch.setenv(PIN_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(HsmError, match="missing"):
        pin()


def test_a_key_reference_is_a_token_uri_or_a_path_relative_to_the_config() -> None:
    assert key_ref(Path("/n"), "identity.key") == Path("/n/identity.key")
    assert key_ref(Path("/n"), "pkcs11:token=t;object=k") == Pkcs11Uri("t", "k")
    assert is_uri("pkcs11:token=t;object=k") and not is_uri("identity.key")
