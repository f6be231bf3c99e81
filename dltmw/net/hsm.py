"""Signing keys that live in a PKCS#11 token (an HSM; SoftHSM2 in the tests) and never leave it.

A node's or client's `identity_key` is either a key file (`net/keyfile.py`) or a PKCS#11 URI
(RFC 7512) naming the token and the key object, for example
`pkcs11:token=org1;object=peer1.org1?module-path=/usr/lib/softhsm/libsofthsm2.so`. The module
(the vendor's PKCS#11 library) comes from the URI's `module-path` or `DLTMW_PKCS11_MODULE`; the
user PIN only from the environment — `DLTMW_PKCS11_PIN_FILE` (a file, as for key passphrases)
or `DLTMW_PKCS11_PIN` — never from a file next to the keys.

Keys are P-256, generated inside the token (`generate`: sensitive, not extractable), and sign
with the plain CKM_ECDSA mechanism over a SHA-256 digest computed here: every token offers it,
while CKM_ECDSA_SHA256 is optional (SoftHSM2 lacks it). The token answers one call at a time
per session, so signing is serialised by a lock; `core/identity.SigningIdentity` normalises the
signature to low-S as it does for a key in memory.

python-pkcs11 is an optional dependency (the `hsm` extra): it is imported only when a key is in
a token, so nodes with key files never need it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SCHEME = "pkcs11:"
MODULE_ENV = "DLTMW_PKCS11_MODULE"
PIN_ENV = "DLTMW_PKCS11_PIN"
PIN_FILE_ENV = "DLTMW_PKCS11_PIN_FILE"


class HsmError(ValueError):
    """A token key that cannot be used (names the token, the key and the remedy)."""


def is_uri(text: str) -> bool:
    """Does this key reference name a token key rather than a file?"""
    return text.startswith(SCHEME)


@dataclass(frozen=True)
class Pkcs11Uri:
    """The part of an RFC 7512 URI dltmw uses: token label, object label, module path."""

    token: str
    object: str
    module_path: str = ""

    @staticmethod
    def parse(text: str) -> Pkcs11Uri:
        """Parse `pkcs11:token=..;object=..[?module-path=..]`; raises HsmError."""
        if not is_uri(text):
            raise HsmError(f"{text!r} is not a PKCS#11 URI (it must start with {SCHEME!r})")
        path, _, query = text[len(SCHEME) :].partition("?")
        attrs = _attributes(path, ";", text) | _attributes(query, "&", text)
        unknown = sorted(set(attrs) - {"token", "object", "module-path", "type"})
        if unknown:
            raise HsmError(f"{text!r}: unsupported PKCS#11 URI attributes {unknown}")
        if attrs.get("type", "private") != "private":
            raise HsmError(f"{text!r}: a signing key is type=private")
        if not attrs.get("token") or not attrs.get("object"):
            raise HsmError(f"{text!r}: a PKCS#11 URI needs token= and object=")
        return Pkcs11Uri(attrs["token"], attrs["object"], attrs.get("module-path", ""))

    def __str__(self) -> str:
        text = f"{SCHEME}token={quote(self.token, safe='')};object={quote(self.object, safe='')}"
        return text + (f"?module-path={quote(self.module_path)}" if self.module_path else "")

    def module(self) -> str:
        """The PKCS#11 library to load: the URI's, else the environment's."""
        module = self.module_path or os.environ.get(MODULE_ENV, "")
        if not module:
            raise HsmError(f"{self}: name the PKCS#11 library (module-path= or {MODULE_ENV})")
        return module


def _attributes(part: str, sep: str, text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in filter(None, part.split(sep)):
        name, eq, value = item.partition("=")
        if not eq or name in attrs:
            raise HsmError(f"{text!r}: malformed or repeated attribute {item!r}")
        attrs[name] = unquote(value)
    return attrs


def pin() -> str:
    """The token's user PIN from the environment (module docstring); raises HsmError."""
    file_name = os.environ.get(PIN_FILE_ENV)
    if file_name:
        try:
            value = Path(file_name).read_text().removesuffix("\n")
        except OSError as exc:
            raise HsmError(f"{PIN_FILE_ENV}={file_name}: {exc}") from exc
    else:
        value = os.environ.get(PIN_ENV, "")
    if not value:
        raise HsmError(f"give the token's user PIN in {PIN_FILE_ENV} (a file) or {PIN_ENV}")
    return value


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError as exc:  # pragma: no cover - depends on the installation
        need = "keys in a PKCS#11 token need python-pkcs11: pip install 'dltmw[hsm]'"
        raise HsmError(need) from exc
    return pkcs11


@dataclass
class _Token:
    """The process's one logged-in session on a token, and the lock that serialises its use.

    PKCS#11 logs an application in per token, not per session: a second `open(user_pin=...)`
    fails with CKR_USER_ALREADY_LOGGED_IN. So every key of a token in this process (several
    nodes of an embedded network, `init` making several keys) shares one session, kept for the
    life of the process.
    """

    session: Any
    lock: threading.Lock


_TOKENS: dict[tuple[str, str], _Token] = {}
_TOKENS_LOCK = threading.Lock()
_LIBS: dict[str, Any] = {}  # a module is loaded (C_Initialize) once per process


def _token(uri: Pkcs11Uri) -> _Token:
    """The shared session on the URI's token, opened and logged in on first use."""
    key = (uri.module(), uri.token)
    with _TOKENS_LOCK:
        if key not in _TOKENS:
            _TOKENS[key] = _Token(_open(uri), threading.Lock())
        return _TOKENS[key]


def _open(uri: Pkcs11Uri) -> Any:
    """An open, logged-in read-write session on the URI's token; raises HsmError."""
    pkcs11 = _pkcs11()
    try:
        lib = _LIBS.get(uri.module()) or _LIBS.setdefault(uri.module(), pkcs11.lib(uri.module()))
    except (OSError, RuntimeError) as exc:
        raise HsmError(f"{uri}: cannot load PKCS#11 library {uri.module()!r}: {exc}") from exc
    try:
        token = _find_token(pkcs11, lib, uri)
        return token.open(user_pin=pin(), rw=True)
    except pkcs11.exceptions.NoSuchToken as exc:
        raise HsmError(f"{uri}: no token labelled {uri.token!r}") from exc
    except (pkcs11.exceptions.PinIncorrect, pkcs11.exceptions.PinLenRange) as exc:
        raise HsmError(f"{uri}: the PIN is wrong ({PIN_FILE_ENV} or {PIN_ENV})") from exc
    except pkcs11.exceptions.PKCS11Error as exc:
        raise HsmError(f"{uri}: {type(exc).__name__} opening the token") from exc


RESCANS = 3  # how often a missing token is looked for again before the node gives up
RESCAN_PAUSE_S = 0.2


def _find_token(pkcs11: Any, lib: Any, uri: Pkcs11Uri) -> Any:
    """The token labelled as the URI says; rescans the slots (bounded) when it is missing.

    A PKCS#11 library lists its tokens when it is initialised, and a token can be missing from
    that list for a moment: SoftHSM2's file store skips a token whose object file another
    process is rewriting (a login elsewhere updates its flags) — seen when several nodes keeping
    keys in one token start together — and a network HSM's slot can drop out briefly. So a
    missing token is looked for again after `C_Finalize`/`C_Initialize`, at most `RESCANS`
    times, but only while this process holds no session on the module (re-initialising would
    close them). Raises `NoSuchToken` when it is still missing.
    """
    for attempt in range(RESCANS + 1):
        try:
            return lib.get_token(token_label=uri.token)
        except pkcs11.exceptions.NoSuchToken:
            if attempt == RESCANS or any(module == uri.module() for module, _ in _TOKENS):
                raise
        time.sleep(RESCAN_PAUSE_S)
        lib.reinitialize()
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _public_key(pkcs11: Any, key: Any) -> ec.EllipticCurvePublicKey:
    from pkcs11.util.ec import encode_ec_public_key

    public = serialization.load_der_public_key(encode_ec_public_key(key))
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise HsmError("token keys must be EC P-256")
    return public


class Pkcs11Key:
    """A P-256 private key in a token: its public key, and DER ECDSA-SHA256 signatures.

    Satisfies `core.identity.ExternalKey`, so a `SigningIdentity` signs with it exactly as with
    a key in memory; it signs through its token's shared session (`_Token`).
    """

    def __init__(self, uri: Pkcs11Uri) -> None:
        pkcs11 = _pkcs11()
        self.uri = uri
        self._token = _token(uri)
        oc, kt = pkcs11.ObjectClass, pkcs11.KeyType
        try:
            with self._token.lock:
                self._key = self._token.session.get_key(oc.PRIVATE_KEY, kt.EC, label=uri.object)
                public = self._token.session.get_key(oc.PUBLIC_KEY, kt.EC, label=uri.object)
        except pkcs11.exceptions.NoSuchKey as exc:
            raise HsmError(f"{uri}: no EC key pair labelled {uri.object!r} in the token") from exc
        except pkcs11.exceptions.MultipleObjectsReturned as exc:
            raise HsmError(f"{uri}: several keys are labelled {uri.object!r}") from exc
        self._public = _public_key(pkcs11, public)
        self._mechanism = pkcs11.Mechanism.ECDSA

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key's public half, read from the token's public key object."""
        return self._public

    def sign_sha256(self, data: bytes) -> bytes:
        """A DER ECDSA signature over SHA-256(`data`), made inside the token."""
        from pkcs11.util.ec import encode_ecdsa_signature

        digest = hashlib.sha256(data).digest()
        with self._token.lock:
            raw = self._key.sign(digest, mechanism=self._mechanism)
        return bytes(encode_ecdsa_signature(raw))


def generate(uri: Pkcs11Uri) -> ec.EllipticCurvePublicKey:
    """Make a P-256 key pair labelled `uri.object` inside the token (private half sensitive and
    never extractable) and return its public key; refuses a label already in use."""
    pkcs11 = _pkcs11()
    from pkcs11.util.ec import encode_named_curve_parameters

    oc, kt, attr = pkcs11.ObjectClass, pkcs11.KeyType, pkcs11.Attribute
    token = _token(uri)
    with token.lock:
        session = token.session
        if list(session.get_objects({attr.LABEL: uri.object, attr.CLASS: oc.PRIVATE_KEY})):
            raise HsmError(f"{uri}: the token already holds a key labelled {uri.object!r}")
        curve = {attr.EC_PARAMS: encode_named_curve_parameters("secp256r1")}
        params = session.create_domain_parameters(kt.EC, curve, local=True)
        public, _private = params.generate_keypair(
            store=True,
            label=uri.object,
            id=uri.object.encode(),
            private_template={attr.SENSITIVE: True, attr.EXTRACTABLE: False},
        )
    return _public_key(pkcs11, public)
