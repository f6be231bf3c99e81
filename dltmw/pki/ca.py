"""Make root CAs and issue member and TLS certificates, shaped the way dltmw.core.identity checks.

Each organisation has a single self-signed root CA that issues every member certificate
directly (no intermediates), so verification is one signature check. A member's role travels as
the subject's OrganizationalUnitName (Fabric NodeOUs style) and its organisation as O. Signing
certificates may be P-256 or Ed25519; TLS certificates are always P-256, because that is what
every gRPC TLS stack accepts. Certificates start one hour in the past to tolerate clock skew
between the issuing host and the verifying nodes.

Where keys, serial numbers and the issuing time come from is a `Material`: fresh randomness and
the system clock (`FRESH`, what `dltmw init` uses), or a fixed derivation from labels — the
simulator's (`dltmw/sim/material.py`), whose runs must replay byte for byte.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dltmw.core.identity import ROLE_OU

__all__ = [
    "FRESH",
    "KEY_TYPES",
    "IssuedCert",
    "Material",
    "certify",
    "issue_cert",
    "make_ca",
    "names_host",
    "san_hosts",
]

KEY_TYPES = ("p256", "ed25519", "mldsa65")  # mldsa65: identities only (not TLS, not a CA)
CLOCK_SKEW = timedelta(hours=1)

_PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key, both PEM (the key PKCS8, unencrypted)."""

    cert_pem: bytes
    key_pem: bytes


def _new_key(key_type: str, _label: str = "") -> _PrivateKey:
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "mldsa65":
        return mldsa.MLDSA65PrivateKey.generate()
    raise ValueError(f"key_type must be one of {KEY_TYPES}, not {key_type!r}")


@dataclass(frozen=True)
class Material:
    """Where a network's secrets and times come from. `label` names what is made: a
    certificate's key (`key(key_type, label)`) and serial number (`serial(label)`), a privacy
    manager's X25519 key (`privacy_key(label)`), a nonce (`nonce(label)`: a genesis block's);
    `now()` is the issuing time."""

    key: Callable[[str, str], _PrivateKey]
    serial: Callable[[str], int]
    now: Callable[[], datetime]
    privacy_key: Callable[[str], x25519.X25519PrivateKey]
    nonce: Callable[[str], bytes]
    # an ML-KEM-768 key's 64-byte seed (`privacy_kem_seed(label)`), for hybrid channels' peers
    privacy_kem_seed: Callable[[str], bytes] = lambda _label: secrets.token_bytes(64)


FRESH = Material(
    key=_new_key,
    serial=lambda _label: x509.random_serial_number(),
    now=lambda: datetime.now(UTC),
    privacy_key=lambda _label: x25519.X25519PrivateKey.generate(),
    nonce=lambda _label: secrets.token_bytes(32),
)


def _hash_for(signer: _PrivateKey) -> hashes.SHA256 | None:
    """Ed25519 and ML-DSA sign without a separate digest; ECDSA certificates use SHA-256."""
    pure = isinstance(signer, ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey)
    return None if pure else hashes.SHA256()


def _key_pem(key: _PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity(valid_days: int, now: datetime) -> tuple[datetime, datetime]:
    if valid_days <= 0:
        raise ValueError(f"valid_days must be positive, not {valid_days}")
    return now - CLOCK_SKEW, now + timedelta(days=valid_days)


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    org_id: str, *, key_type: str = "p256", valid_days: int = 3650, material: Material = FRESH
) -> IssuedCert:
    """A self-signed root CA for `org_id`: CN=ca.<org_id>, O=<org_id>, path length 0."""
    if not org_id:
        raise ValueError("org_id must not be empty")
    label = f"ca.{org_id}"
    key = material.key(key_type, label)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"ca.{org_id}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_id),
        ]
    )
    not_before, not_after = _validity(valid_days, material.now())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(material.serial(label))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _hash_for(key))
    )
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def san_hosts(cert: x509.Certificate) -> list[str]:
    """The hosts a TLS certificate names (`issue_cert`'s `hosts`, IPs first); [] without SANs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return ips + list(san.get_values_for_type(x509.DNSName))


def names_host(cert: x509.Certificate, host: str) -> bool:
    """Does the certificate name `host` (an IP literal by value, a DNS name case-insensitively)?"""
    try:
        ip = str(ipaddress.ip_address(host))  # san_hosts spells IPs the same way
    except ValueError:
        return host.lower() in (h.lower() for h in san_hosts(cert))
    return ip in san_hosts(cert)


def _authority_key_id(
    ca_cert: x509.Certificate, ca_key: _PrivateKey
) -> x509.AuthorityKeyIdentifier:
    """Copy the CA's SubjectKeyIdentifier so chain builders can match issuer and subject."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def issue_cert(
    ca: IssuedCert,
    org_id: str,
    common_name: str,
    role: str,
    *,
    key_type: str = "p256",
    tls: bool = False,
    hosts: Sequence[str] = (),
    valid_days: int = 825,
    material: Material = FRESH,
) -> IssuedCert:
    """A new key and its leaf certificate signed by `ca`: CN=common_name, O=org_id, OU=role.

    tls=True makes a P-256 server+client TLS certificate whose SubjectAlternativeName lists
    every entry of `hosts` (IP literals as IPAddress, the rest as DNSName).
    """
    if tls and key_type != "p256":
        raise ValueError("TLS certificates are always P-256")
    key = material.key(key_type, _label(common_name, tls))
    cert_pem = certify(
        ca,
        org_id,
        common_name,
        role,
        key.public_key(),
        tls=tls,
        hosts=hosts,
        valid_days=valid_days,
        material=material,
    )
    return IssuedCert(cert_pem, _key_pem(key))


def _label(common_name: str, tls: bool) -> str:
    return f"{'tls' if tls else 'identity'}.{common_name}"


def certify(
    ca: IssuedCert,
    org_id: str,
    common_name: str,
    role: str,
    public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey,
    *,
    tls: bool = False,
    hosts: Sequence[str] = (),
    valid_days: int = 825,
    material: Material = FRESH,
) -> bytes:
    """The PEM leaf certificate `issue_cert` makes, for a key made elsewhere (in an HSM: only
    its public half is here)."""
    if role not in ROLE_OU:
        raise ValueError(f"role must be one of {sorted(ROLE_OU)}, not {role!r}")
    if hosts and not tls:
        raise ValueError("hosts are only meaningful for TLS certificates")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unsupported CA key {type(ca_key).__name__}")
    not_before, not_after = _validity(valid_days, material.now())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(material.serial(_label(common_name, tls)))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
    )
    if tls:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca_key, _hash_for(ca_key))
    return cert.public_bytes(serialization.Encoding.PEM)
