"""Identity checks: signatures (incl. the low-S rule), membership, validity windows, TLS binding.

Certificates come from `dltmw.pki.ca`, so these tests also pin down that what the CA tooling
issues is exactly what the pure core accepts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from dltmw.core import identity as identity_mod
from dltmw.core.errors import ClientError
from dltmw.core.identity import (
    ROLE_OU,
    BadSignature,
    IdentityError,
    MalformedIdentity,
    Membership,
    NotAMember,
    SigningIdentity,
    verify_signature,
)
from dltmw.pki.ca import FRESH, IssuedCert, issue_cert, make_ca
from dltmw.v1 import identity_pb2

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
NOW = datetime.now(UTC)
AT_NOW = replace(FRESH, now=lambda: NOW)  # certificates issued at NOW, whenever a test runs
DATA = b"proposal bytes exactly as carried"


@dataclass(frozen=True)
class Network:
    org1_ca: IssuedCert
    org2_ca: IssuedCert
    org3_ca: IssuedCert  # an Ed25519 root
    membership: Membership


@pytest.fixture(scope="module")
def net() -> Network:
    org1, org2, org3 = (
        make_ca("Org1", material=AT_NOW),
        make_ca("Org2", material=AT_NOW),
        make_ca("Org3", key_type="ed25519", material=AT_NOW),
    )
    roots = {"Org1": org1.cert_pem, "Org2": org2.cert_pem, "Org3": org3.cert_pem}
    return Network(org1, org2, org3, Membership(roots))


def signer(ca: IssuedCert, org_id: str, role: str = "client", **kw: object) -> SigningIdentity:
    issued = issue_cert(ca, org_id, f"{role}0.{org_id}", role, **kw, material=AT_NOW)  # type: ignore[arg-type]
    return SigningIdentity.from_pem(org_id, issued.cert_pem, issued.key_pem)


def der(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def identity_bytes(org_id: str, cert_der: bytes) -> bytes:
    return identity_pb2.Identity(org_id=org_id, certificate_der=cert_der).SerializeToString()


# --- signatures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("org_id", "key_type"),
    [("Org1", "p256"), ("Org1", "ed25519"), ("Org3", "p256"), ("Org3", "ed25519")],
    ids=["p256-leaf-p256-root", "ed25519-leaf-p256-root", "p256-leaf-ed25519-root", "ed25519-both"],
)
def test_signature_round_trip_verifies_and_names_the_signer(
    net: Network, org_id: str, key_type: str
) -> None:
    ca = net.org1_ca if org_id == "Org1" else net.org3_ca
    s = signer(ca, org_id, "peer", key_type=key_type)
    got = net.membership.verify(s.identity_bytes, DATA, s.sign(DATA), NOW)
    assert (got.org_id, got.common_name, got.roles) == (
        org_id,
        f"peer0.{org_id}",
        frozenset({"peer"}),
    )
    assert got.identity_bytes == s.identity_bytes


def test_ed25519_signatures_are_64_raw_bytes(net: Network) -> None:
    assert len(signer(net.org1_ca, "Org1", key_type="ed25519").sign(DATA)) == 64


def test_high_s_twin_of_a_valid_signature_is_rejected_while_low_s_passes(net: Network) -> None:
    s = signer(net.org1_ca, "Org1")
    low = s.sign(DATA)
    r, s_val = decode_dss_signature(low)
    high = encode_dss_signature(r, N - s_val)
    key = net.membership.identify(s.identity_bytes, NOW).public_key
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(high, DATA, ec.ECDSA(hashes.SHA256()))  # mathematically valid: only the rule bites
    verify_signature(key, DATA, low)
    with pytest.raises(BadSignature, match="high-S"):
        verify_signature(key, DATA, high)


def test_non_minimal_der_encoding_of_a_valid_signature_is_rejected(net: Network) -> None:
    # Same (r, s), but r padded with a redundant leading zero byte: another malleability route.
    s = signer(net.org1_ca, "Org1")
    r, s_val = decode_dss_signature(s.sign(DATA))
    r_bytes = b"\x00" + r.to_bytes((r.bit_length() + 8) // 8, "big")
    s_bytes = s_val.to_bytes((s_val.bit_length() + 8) // 8, "big")
    body = b"\x02" + bytes([len(r_bytes)]) + r_bytes + b"\x02" + bytes([len(s_bytes)]) + s_bytes
    padded = b"\x30" + bytes([len(body)]) + body
    key = net.membership.identify(s.identity_bytes, NOW).public_key
    with pytest.raises(BadSignature):
        verify_signature(key, DATA, padded)


def test_sign_always_produces_low_s(net: Network) -> None:
    # Raw ECDSA yields high-S half the time; 40 signatures all low-S means sign() normalises.
    s = signer(net.org1_ca, "Org1")
    assert all(decode_dss_signature(s.sign(DATA))[1] <= N // 2 for _ in range(40))


MUTATIONS = [
    pytest.param(lambda d, sig: (d + b"!", sig), id="tampered-data"),
    pytest.param(lambda d, sig: (d, sig[:-1]), id="truncated-signature"),
    pytest.param(lambda d, sig: (d, sig + b"\x00"), id="trailing-byte-appended"),
    pytest.param(lambda d, sig: (d, b"\x30\x06garbage" * 8), id="garbage-signature"),
    pytest.param(lambda d, sig: (d, b""), id="empty-signature"),
    pytest.param(lambda d, sig: (d, sig[:-1] + bytes([sig[-1] ^ 1])), id="flipped-bit"),
]


@pytest.mark.parametrize("key_type", ["p256", "ed25519"])
@pytest.mark.parametrize("mutate", MUTATIONS)
def test_mangled_signatures_are_bad_signature(
    net: Network, key_type: str, mutate: Callable[[bytes, bytes], tuple[bytes, bytes]]
) -> None:
    s = signer(net.org1_ca, "Org1", key_type=key_type)
    data, sig = mutate(DATA, s.sign(DATA))
    with pytest.raises(BadSignature) as info:
        net.membership.verify(s.identity_bytes, data, sig, NOW)
    assert info.value.reason == "BAD_SIGNATURE"


def test_signature_by_another_key_is_bad_signature(net: Network) -> None:
    alice, mallory = signer(net.org1_ca, "Org1"), signer(net.org1_ca, "Org1")
    with pytest.raises(BadSignature):
        net.membership.verify(alice.identity_bytes, DATA, mallory.sign(DATA), NOW)


def test_ecdsa_key_on_other_curve_is_bad_signature() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    sig = key.sign(DATA, ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(sig, DATA, ec.ECDSA(hashes.SHA256()))  # valid, just not P-256
    with pytest.raises(BadSignature, match="unsupported"):
        verify_signature(key.public_key(), DATA, sig)


# --- membership -----------------------------------------------------------------------------


def _foreign(net: Network) -> bytes:
    return identity_bytes(
        "Org1", der(issue_cert(net.org2_ca, "Org2", "p", "peer", material=AT_NOW).cert_pem)
    )


def _forged_root(net: Network) -> bytes:
    # Same issuer name "ca.Org1" as the real root, different key: only the signature check bites.
    forged = make_ca("Org1", material=AT_NOW)
    return identity_bytes(
        "Org1", der(issue_cert(forged, "Org1", "x", "admin", material=AT_NOW).cert_pem)
    )


def _org1_client(org_id: str) -> Callable[[Network], bytes]:
    return lambda n: identity_bytes(
        org_id, der(issue_cert(n.org1_ca, "Org1", "c", "client", material=AT_NOW).cert_pem)
    )


def _bad_x509_version(n: Network) -> bytes:
    """A member certificate whose version field says 10 (cryptography raises InvalidVersion,
    which is not a ValueError; found by the RPC fuzzer)."""
    cert = bytearray(der(issue_cert(n.org1_ca, "Org1", "c", "client", material=AT_NOW).cert_pem))
    at = cert.find(bytes([0xA0, 3, 2, 1, 2]))  # [0] EXPLICIT INTEGER 2 (= X.509 v3)
    cert[at + 4] = 10
    return identity_bytes("Org1", bytes(cert))


M, NM = (MalformedIdentity, "MALFORMED"), (NotAMember, "NOT_A_MEMBER")
BAD_IDENTITIES = [
    pytest.param(lambda n: b"\xff\xff\xff\xff", *M, id="garbage-bytes-are-malformed"),
    pytest.param(lambda n: b"", *M, id="empty-bytes-are-malformed"),
    pytest.param(_org1_client(""), *M, id="empty-org-is-malformed"),
    pytest.param(
        lambda n: identity_bytes("Org1", b"not a certificate"), *M, id="cert-not-der-is-malformed"
    ),
    pytest.param(_bad_x509_version, *M, id="cert-with-invalid-x509-version-is-malformed"),
    pytest.param(_org1_client("Org9"), *NM, id="unknown-org-is-not-a-member"),
    pytest.param(_foreign, *NM, id="other-orgs-cert-claimed-as-org1-is-not-a-member"),
    pytest.param(_forged_root, *NM, id="cert-from-forged-root-with-same-name-is-not-a-member"),
    pytest.param(
        lambda n: identity_bytes("Org1", der(n.org1_ca.cert_pem)),
        *NM,
        id="ca-cert-as-identity-is-not-a-member",
    ),
]


@pytest.mark.parametrize(("make", "error", "reason"), BAD_IDENTITIES)
def test_bad_identities_are_rejected(
    net: Network, make: Callable[[Network], bytes], error: type[IdentityError], reason: str
) -> None:
    with pytest.raises(error) as info:
        net.membership.identify(make(net), NOW)
    assert info.value.reason == reason


def test_wrong_org_identity_never_gets_its_signature_checked(net: Network) -> None:
    s = signer(net.org2_ca, "Org2")
    claimed = identity_bytes("Org1", s.certificate_der)
    net.membership.verify(s.identity_bytes, DATA, s.sign(DATA), NOW)  # fine under its own org
    with pytest.raises(NotAMember):
        net.membership.verify(claimed, DATA, s.sign(DATA), NOW)


@pytest.mark.parametrize("role", sorted(ROLE_OU))
def test_roles_come_from_subject_ou(net: Network, role: str) -> None:
    s = signer(net.org1_ca, "Org1", role)
    assert net.membership.identify(s.identity_bytes, NOW).roles == frozenset({role})


def test_ou_values_outside_the_role_set_are_not_roles(net: Network) -> None:
    ca_cert = x509.load_pem_x509_certificate(net.org1_ca.cert_pem)
    ca_key = serialization.load_pem_private_key(net.org1_ca.key_pem, None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=odd,OU=auditor,OU=client,O=Org1")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    raw = identity_bytes("Org1", cert.public_bytes(serialization.Encoding.DER))
    assert net.membership.identify(raw, NOW).roles == frozenset({"client"})


@pytest.mark.parametrize(
    "offset",
    [timedelta(days=2), -timedelta(hours=2)],
    ids=["after-not-valid-after", "before-not-valid-before"],
)
def test_certificate_outside_validity_window_is_not_a_member(
    net: Network, offset: timedelta
) -> None:
    s = signer(net.org1_ca, "Org1", valid_days=1)
    net.membership.identify(s.identity_bytes, NOW)
    with pytest.raises(NotAMember, match="not valid at"):
        net.membership.identify(s.identity_bytes, NOW + offset)


def test_expired_root_invalidates_its_members() -> None:
    ca = make_ca("OrgX", valid_days=1, material=AT_NOW)
    s = signer(ca, "OrgX", valid_days=825)
    membership = Membership({"OrgX": ca.cert_pem})
    membership.identify(s.identity_bytes, NOW)
    with pytest.raises(NotAMember):
        membership.identify(s.identity_bytes, NOW + timedelta(days=2))


def test_cache_hit_still_rechecks_expiry(net: Network) -> None:
    s = signer(net.org1_ca, "Org1", valid_days=1)
    first = net.membership.identify(s.identity_bytes, NOW)
    assert net.membership.identify(s.identity_bytes, NOW) is first  # served from the cache
    with pytest.raises(NotAMember):
        net.membership.identify(s.identity_bytes, NOW + timedelta(days=2))
    assert net.membership.identify(s.identity_bytes, NOW) is first


def test_cache_is_bounded_and_drops_the_oldest(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(identity_mod, "CACHE_SIZE", 2)
    membership = Membership({"Org1": net.org1_ca.cert_pem})
    a, b, c = (signer(net.org1_ca, "Org1").identity_bytes for _ in range(3))
    first_a = membership.identify(a, NOW)
    membership.identify(b, NOW)
    first_c = membership.identify(c, NOW)
    assert membership.identify(c, NOW) is first_c  # newest kept
    assert membership.identify(a, NOW) is not first_a  # oldest was evicted and re-verified


def test_failures_are_not_cached(net: Network) -> None:
    s = signer(net.org1_ca, "Org1")
    raw = identity_bytes("Org9", s.certificate_der)
    for _ in range(2):
        with pytest.raises(NotAMember):
            net.membership.identify(raw, NOW)


def test_naive_now_is_a_programming_error(net: Network) -> None:
    s = signer(net.org1_ca, "Org1")
    with pytest.raises(ValueError, match="timezone-aware"):
        net.membership.identify(s.identity_bytes, datetime(2030, 1, 1))


def test_membership_lists_orgs_and_rejects_non_ca_roots(net: Network) -> None:
    assert net.membership.org_ids == {"Org1", "Org2", "Org3"}
    leaf = issue_cert(net.org1_ca, "Org1", "p", "peer", material=AT_NOW)
    with pytest.raises(ValueError, match="not a CA"):
        Membership({"Org1": leaf.cert_pem})


# --- identity bytes -------------------------------------------------------------------------


def test_identity_bytes_are_stable_and_identity_id_is_the_certificate_sha256(net: Network) -> None:
    issued = issue_cert(net.org1_ca, "Org1", "client0", "client", material=AT_NOW)
    s1 = SigningIdentity.from_pem("Org1", issued.cert_pem, issued.key_pem)
    s2 = SigningIdentity.from_pem("Org1", issued.cert_pem, issued.key_pem)
    assert s1.identity_bytes == s2.identity_bytes
    assert s1.identity_bytes is s1.identity_bytes  # computed once, not per access
    assert s1.identity_bytes == identity_bytes("Org1", der(issued.cert_pem))
    got = net.membership.identify(s1.identity_bytes, NOW)
    assert got.identity_id == hashlib.sha256(der(issued.cert_pem)).digest() == s1.identity_id


def test_unknown_fields_in_identity_bytes_do_not_make_a_second_identity(net: Network) -> None:
    issued = issue_cert(net.org1_ca, "Org1", "peer9", "peer", material=AT_NOW)
    plain = identity_bytes("Org1", der(issued.cert_pem))
    padded = plain + b"\x98\x06\x01"  # unknown varint field 99 = 1: still parses
    a = net.membership.identify(plain, NOW)
    b = net.membership.identify(padded, NOW)
    assert a.identity_bytes != b.identity_bytes
    assert a.identity_id == b.identity_id


def test_signing_identity_refuses_a_key_that_does_not_match_its_cert(net: Network) -> None:
    a = issue_cert(net.org1_ca, "Org1", "a", "client", material=AT_NOW)
    b = issue_cert(net.org1_ca, "Org1", "b", "client", material=AT_NOW)
    with pytest.raises(ValueError, match="does not match"):
        SigningIdentity.from_pem("Org1", a.cert_pem, b.key_pem)


# --- TLS binding ----------------------------------------------------------------------------

HOSTS = ["127.0.0.1", "localhost", "peer0.org1"]

TLS_CASES = [
    pytest.param(lambda n: _tls(n.org1_ca, "Org1"), "Org1", True, id="own-org-pem-matches"),
    pytest.param(lambda n: der(_tls(n.org1_ca, "Org1")), "Org1", True, id="own-org-der-matches"),
    pytest.param(lambda n: _tls(n.org1_ca, "Org1"), "Org2", False, id="other-org-no-match"),
    pytest.param(lambda n: _tls(n.org1_ca, "Org1"), "Org9", False, id="unknown-org-no-match"),
    pytest.param(lambda n: _tls(n.org2_ca, "Org2"), "Org1", False, id="other-cas-cert-no-match"),
    pytest.param(lambda n: n.org1_ca.cert_pem, "Org1", False, id="ca-cert-itself-no-match"),
    pytest.param(
        lambda n: b"-----BEGIN CERTIFICATE-----\nzz", "Org1", False, id="garbage-no-match"
    ),
    pytest.param(lambda n: b"\x30\x03\x02\x01\x00", "Org1", False, id="garbage-der-no-match"),
]


def _tls(ca: IssuedCert, org_id: str) -> bytes:
    return issue_cert(ca, org_id, "peer0", "peer", tls=True, hosts=HOSTS, material=AT_NOW).cert_pem


@pytest.mark.parametrize(("make", "org_id", "expected"), TLS_CASES)
def test_tls_org_matches(
    net: Network, make: Callable[[Network], bytes], org_id: str, expected: bool
) -> None:
    assert identity_mod.tls_org_matches(make(net), net.membership, org_id) is expected


class _Caller:
    """A servicer context whose transport carried `cert` as the client's TLS certificate."""

    def __init__(self, cert: bytes) -> None:
        self.cert = cert

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.cert]}


def test_every_tls_check_of_a_call_is_remembered_per_membership(
    net: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link's every call carries the same TLS certificate: the X.509 issuer check runs once
    per (certificate, organisation) and membership, for the orderers' and the notary
    cluster's replica links and the notary service alike (the cluster's link and the notary
    checked it on every call: ~2 % of a cluster member's CPU). A new membership (a config
    change, a revocation) checks again."""
    from types import SimpleNamespace

    from dltmw.rpc import guard, notary, replica
    from dltmw.rpc.tls import caller_tls_cert

    calls: list[str] = []
    real = identity_mod.issued_directly_by

    def counted(cert: x509.Certificate, root: x509.Certificate) -> bool:
        calls.append(root.subject.rfc4514_string())
        return real(cert, root)

    monkeypatch.setattr(identity_mod, "issued_directly_by", counted)
    caller = _Caller(_tls(net.org2_ca, "Org2"))
    cluster = SimpleNamespace(
        membership=net.membership, member_orgs=frozenset({"Org1", "Org2"}), cluster_id="c"
    )
    for _ in range(3):
        replica._check_cluster_tls(caller_tls_cert(caller), cluster)  # type: ignore[arg-type]
        assert notary.caller_org(caller, net.membership) == "Org2"  # type: ignore[arg-type]
        guard.check_tls_org(caller, net.membership, "Org2")  # type: ignore[arg-type]
    assert len(calls) == 2  # each (certificate, organisation) checked once
    other = _Caller(_tls(net.org1_ca, "Org1"))
    with pytest.raises(ClientError):
        guard.check_tls_org(other, net.membership, "Org2")  # type: ignore[arg-type]
    with pytest.raises(ClientError):
        guard.check_tls_org(other, net.membership, "Org2")  # type: ignore[arg-type]
    assert len(calls) == 3  # the refusal is remembered too


# --- CA tooling -----------------------------------------------------------------------------


def test_tls_cert_carries_every_host_and_both_usages(net: Network) -> None:
    cert = x509.load_pem_x509_certificate(_tls(net.org1_ca, "Org1"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "peer0.org1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_ca_and_leaf_shapes(net: Network) -> None:
    ca = x509.load_pem_x509_certificate(net.org1_ca.cert_pem)
    issued_at = datetime.now(UTC)  # not the module's NOW: the suite may run long before this test
    leaf = x509.load_pem_x509_certificate(issue_cert(net.org1_ca, "Org1", "p", "peer").cert_pem)
    ca_bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (ca_bc.ca, ca_bc.path_length) == (True, 0)
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert leaf.not_valid_before_utc < issued_at - timedelta(minutes=50)  # clock-skew allowance


@pytest.mark.parametrize(
    "kwargs",
    [{"role": "janitor"}, {"key_type": "ed25519", "tls": True}, {"hosts": ["h"]}],
    ids=["unknown-role", "ed25519-tls", "hosts-without-tls"],
)
def test_issue_cert_rejects_nonsense(net: Network, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"role": "peer", **kwargs}
    with pytest.raises(ValueError):
        issue_cert(net.org1_ca, "Org1", "x", **args)  # type: ignore[arg-type]
