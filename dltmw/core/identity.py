"""Who signed this, and may they speak on this channel? Pure X.509 and signature checks.

A channel trusts a fixed set of organisations, each through one root CA certificate (Fabric's
MSP idea, reduced to one level: member certificates are issued directly by the root). An
identity on the wire is a serialised `dltmw.v1.Identity` — org id plus DER certificate — and
its exact bytes are what every signer and verifier carries and hashes, so nothing here ever
re-serialises it to check it.

Signatures are ECDSA P-256/SHA-256 (DER, low-S only) or Ed25519, or, as a post-quantum option,
ML-DSA-65 (FIPS 204, pure, empty context: a member certificate whose key is ML-DSA-65, issued
by the organisation's classical CA). Low-S is enforced because an
ECDSA signature (r, s) has a twin (r, n - s) that is equally valid: accepting both would let
anyone change signed envelope bytes — and any id computed over them — without a key.
`Identity.signature_algorithm` (algorithms.proto) may name the algorithm: absent, the
certificate's key decides; present, it must match that key; unknown, the identity is refused
with UNSUPPORTED_ALGORITHM before anything else is trusted.

Time is never read here: callers pass `now` (timezone-aware), which keeps the module pure and
lets simulations move the clock. Verifying a certificate costs a public-key operation, so
successful identifications are cached by identity bytes; the validity window, which does
depend on `now`, is re-checked on every hit. Likewise each signature is verified once per
`Membership` (per node and channel): a successful check is remembered by (signer, SHA-256 of
the data, signature), so the gateway's peer does not verify again at commit the endorsement and
envelope signatures it verified at endorsement and submission; and once per process
(`verified_memo.IN_PROCESS`), so the nodes `dltmw.open` runs side by side do not verify again
what one of them just did — or what a signing identity of the process just signed
(`SigningIdentity.sign`). The identity checks, which depend on `now`, run on every call, in
every `Membership`.

Identity references (`Identity.certificate_ref`, on channels with
`ChannelConfig.identity_references`): a node the channel's config lists (its
`NodeConfig.identity`, a peer or an orderer) may sign as `Identity{org_id, certificate_ref}`,
the SHA-256 of its certificate, ~40 bytes where the certificate is ~450 — in every endorsement
and agreement of every block, and in an orderer's signature of every block (solo, JetStream,
and each of a PBFT-lite block's 2f+1 replica signatures: `light_client.block_signer`),
forever. A `Membership` built with the config's node identities
(`references`) resolves such bytes to the config's full identity and then runs every check on
it exactly as on the certificate sent in full (`_check`: root, CA flag, revocation; validity at
`now` on every call), caching by the bytes as sent. Resolution reads the config in force and
nothing else, so every node resolves alike at the same block. A reference the config does not
list is `UnknownReference`; on a channel without the flag (`references` None) a reference is
`MalformedIdentity`, as a release that does not know the field judges it (its empty
certificate does not parse), and an identity carrying both a certificate and a reference is
taken as the certificate with an unknown extra field, as such a release takes it. With the
flag, exactly one of the two must be set.

Clients by reference (stage (b), `ChannelConfig.client_identity_references`): a peer gives the
membership of such a channel its identity table (`use_clients`: `core/identity_table.py`, the
client certificates earlier blocks carried in full), and a reference the config does not list
is looked up there, then checked in full the same way. Resolution from the table is as
deterministic as the table: a peer validating block N holds exactly the entries of blocks
before N (it adds a block's entries after committing it). A cached resolution cannot be early
either: an entry, once there, stays. Orderers hold no table (docs/wire.md "Identity
references"): their membership refuses a client's reference as `UnknownReference`, which their
admission takes as "checked at commit" (`core/txcheck.py`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError

from dltmw.core.verified_memo import (
    IN_PROCESS,
    VERIFIED_GENERATION,
    VerifiedMemo,
    verified_key,
)
from dltmw.v1 import algorithms_pb2, identity_pb2

__all__ = [
    "ROLE_OU",
    "BadSignature",
    "ExternalKey",
    "IdentityError",
    "MalformedIdentity",
    "Membership",
    "NotAMember",
    "Revoked",
    "SigningIdentity",
    "UnknownAlgorithm",
    "UnknownReference",
    "reference_bytes",
    "algorithm_of",
    "identity_bytes",
    "VerifiedIdentity",
    "tls_org_matches",
    "tls_revoked",
    "tls_roles",
    "verify_signature",
]

ROLE_OU: frozenset[str] = frozenset({"peer", "orderer", "client", "admin"})
"""Roles, carried as subject OrganizationalUnitName values (Fabric NodeOUs style)."""

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P256_HALF_ORDER = P256_ORDER // 2
ED25519_SIGNATURE_SIZE = 64
CACHE_SIZE = 4096
REFERENCE_SIZE = 32  # Identity.certificate_ref: SHA-256 of the certificate (`reference_bytes`)

# One ECDSA-over-SHA-256 parameter object for every sign and verify: building it costs more than
# a sixtieth of a verification (~1.2 us of ~50-90 us), and with seven verifications and four
# signatures per transaction on the endorse -> order -> validate path it was a measurable share
# of the peers' GIL time (benchmarks/RESULTS.md, lane HOT). It holds no state, so sharing it
# between threads is safe.
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey
ML_DSA_65_SIGNATURE_SIZE = 3309
SA = algorithms_pb2


@runtime_checkable
class ExternalKey(Protocol):
    """A P-256 private key held outside the process (an HSM, `net/hsm.Pkcs11Key`): it gives its
    public key and DER ECDSA signatures over SHA-256 of the data, and nothing else."""

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key's public half."""
        ...

    def sign_sha256(self, data: bytes) -> bytes:
        """A DER ECDSA-SHA256 signature of `data` (any S; the caller normalises to low-S)."""
        ...


class IdentityError(Exception):
    """Base of identity failures; `reason` is an ErrorReason name without its prefix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class MalformedIdentity(IdentityError):
    """The identity bytes do not decode to an org id plus an X.509 certificate."""

    def __init__(self, message: str) -> None:
        super().__init__("MALFORMED", message)


class BadSignature(IdentityError):
    """The signature does not verify, is malformed, or is a non-canonical (high-S) ECDSA one."""

    def __init__(self, message: str) -> None:
        super().__init__("BAD_SIGNATURE", message)


class UnknownAlgorithm(IdentityError):
    """An identity naming a signature algorithm this node does not implement."""

    def __init__(self, message: str) -> None:
        super().__init__("UNSUPPORTED_ALGORITHM", message)


class NotAMember(IdentityError):
    """A well-formed identity that the channel's organisations do not vouch for (now)."""

    def __init__(self, message: str) -> None:
        super().__init__("NOT_A_MEMBER", message)


class Revoked(IdentityError):
    """A certificate its organisation revoked (a serial in the channel config's list)."""

    def __init__(self, message: str) -> None:
        super().__init__("CERTIFICATE_REVOKED", message)


class UnknownReference(IdentityError):
    """An identity by reference (`Identity.certificate_ref`) that the channel's config in force
    does not list (no peer or orderer with that organisation and certificate)."""

    def __init__(self, message: str) -> None:
        super().__init__("UNKNOWN_IDENTITY_REFERENCE", message)


@dataclass(frozen=True)
class VerifiedIdentity:
    """An identity whose certificate chains to its organisation's root CA."""

    # The serialised Identity in full: the bytes as sent, or for a reference the config's
    # identity it names (so a map keyed by the config's `NodeConfig.identity` finds it).
    identity_bytes: bytes
    # SHA-256 of the certificate (not of identity_bytes): extra unknown fields in the Identity
    # bytes must not let one certificate count as two identities in a policy.
    identity_id: bytes
    org_id: str
    roles: frozenset[str]
    common_name: str
    public_key: PublicKey


def _is_p256(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> bool:
    return isinstance(key.curve, ec.SECP256R1)


def verify_signature(public_key: PublicKey, data: bytes, signature: bytes) -> None:
    """Raise BadSignature unless `signature` is a valid, canonical signature of `data`."""
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            if len(signature) != ED25519_SIGNATURE_SIZE:
                raise BadSignature("Ed25519 signature must be 64 bytes")
            public_key.verify(signature, data)
            return
        if isinstance(public_key, ec.EllipticCurvePublicKey) and _is_p256(public_key):
            r, s = decode_dss_signature(signature)
            if encode_dss_signature(r, s) != signature:
                raise BadSignature("ECDSA signature is not canonical DER")
            if s > _P256_HALF_ORDER:
                raise BadSignature("ECDSA signature is high-S (s > n/2)")
            public_key.verify(signature, data, ECDSA_SHA256)
            return
        if isinstance(public_key, mldsa.MLDSA65PublicKey):
            if len(signature) != ML_DSA_65_SIGNATURE_SIZE:
                raise BadSignature(f"ML-DSA-65 signature must be {ML_DSA_65_SIGNATURE_SIZE} bytes")
            public_key.verify(signature, data)
            return
    except (InvalidSignature, ValueError, TypeError, OverflowError) as exc:
        raise BadSignature(f"signature does not verify: {type(exc).__name__}") from None
    raise BadSignature(f"unsupported public key type {type(public_key).__name__}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def issued_directly_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    """Is `cert` signed by `root`'s key under `root`'s name (one link of a chain)?"""
    try:
        cert.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _name_values(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [
        attr.value if isinstance(attr.value, str) else attr.value.decode("utf-8", "replace")
        for attr in cert.subject.get_attributes_for_oid(oid)
    ]


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("`now` must be a timezone-aware datetime")


@dataclass(frozen=True)
class _CacheEntry:
    identity: VerifiedIdentity
    not_before: datetime
    not_after: datetime


class Membership:
    """The set of organisations trusted on one channel: org_id -> root CA certificate.

    Immutable after construction; a configuration change builds a new Membership (and with it
    a fresh cache, so a removed organisation or a newly revoked certificate cannot linger in
    it). `revoked` is each organisation's certificate revocation list: serial numbers its root
    issued that count as no identity at all (`Revoked`), for signatures and TLS alike.
    """

    def __init__(
        self,
        roots_pem: Mapping[str, bytes],
        revoked: Mapping[str, Iterable[int]] | None = None,
        memo_generation: int = VERIFIED_GENERATION,
        references: Iterable[bytes] | None = None,
    ) -> None:
        """`memo_generation`: the verified-signature memo's generation (`VerifiedMemo`): what
        the callers' second checks need; `REPLICA_MEMO_GENERATION` for the orderers'.
        `references`: the serialised identities that may be named by reference (the channel
        config's nodes, on a channel with `identity_references`); None: references are
        refused as malformed (module docstring)."""
        roots: dict[str, x509.Certificate] = {}
        for org_id, pem in roots_pem.items():
            if not org_id:
                raise ValueError("organisation id must not be empty")
            try:
                root = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise ValueError(f"root CA certificate of {org_id!r} is not PEM: {exc}") from exc
            if not _is_ca(root):
                raise ValueError(f"root certificate of {org_id!r} is not a CA certificate")
            roots[org_id] = root
        self._roots = roots
        self._revoked = {org: frozenset(serials) for org, serials in (revoked or {}).items()}
        self._cache: dict[bytes, _CacheEntry] = {}
        self._verified = VerifiedMemo(memo_generation)  # successful verifications (`verified_key`)
        # Peers verify a block's signatures on several threads (cryptography releases the GIL);
        # the lock keeps cache eviction consistent between them.
        self._cache_lock = threading.Lock()
        self._referable: dict[tuple[str, int, bytes], bytes] | None = None
        # (org_id, certificate_ref) -> an entry with `certificate_der` (`use_clients`)
        self._clients: Mapping[tuple[str, bytes], Any] | None = None
        self._reference_of: dict[bytes, bytes] = {}
        if references is not None:
            self._referable = {}
            for full in references:
                ref = reference_bytes(full)
                if ref is not None:
                    key = _reference_key(identity_pb2.Identity.FromString(ref))
                    self._referable.setdefault(key, full)
                    self._reference_of.setdefault(full, ref)

    def use_clients(self, table: Mapping[tuple[str, bytes], Any]) -> None:
        """Resolve clients' references through `table` too (`core/identity_table.IdentityTable`,
        the peer ledger's, which only grows): set once, before the membership is used, by the
        holder of a channel's config on a peer (`channel.CurrentConfig`). Only where references
        are taken at all."""
        if self._referable is not None:
            self._clients = table

    @property
    def takes_client_references(self) -> bool:
        """Whether clients' references are resolved here (a peer's table is attached)."""
        return self._clients is not None

    def checked(self, identity_bytes: bytes) -> VerifiedIdentity:
        """The time-independent checks of `identify` alone (cached alike): no validity window.
        What registering a client certificate asks (`core/identity_table.new_entries`)."""
        entry = self._cache.get(identity_bytes)
        return (entry if entry is not None else self._check(identity_bytes)).identity

    @property
    def takes_references(self) -> bool:
        """Whether identities by reference are taken here (`ChannelConfig.identity_references`)."""
        return self._referable is not None

    def reference_of(self, identity_bytes: bytes) -> bytes:
        """What a node signing as `identity_bytes` puts where its identity goes: its reference
        if this membership takes references and lists it (a config node), else the bytes."""
        return self._reference_of.get(identity_bytes, identity_bytes)

    def is_client_reference(self, identity_bytes: bytes) -> bool:
        """Whether `identity_bytes` is a reference that no node of the config names: a client's,
        resolvable (if at all) only through a peer's table. A config update must name its creator
        otherwise: orderers keep no table, so a peer and an orderer would judge it apart."""
        return self.client_reference(identity_bytes) is not None

    def client_reference(self, identity_bytes: bytes) -> identity_pb2.Identity | None:
        """`identity_bytes` parsed, if it is a reference that no node of the config names
        (`is_client_reference`), else None: what an orderer, which keeps no table, asks before
        it orders a creator unchecked (`txcheck._unresolvable`: a member organisation's, a
        `REFERENCE_SIZE` hash)."""
        if self._referable is None:
            return None
        try:
            msg = identity_pb2.Identity.FromString(identity_bytes)
        except DecodeError:
            return None
        if not msg.certificate_ref or msg.certificate_der:
            return None
        return None if _reference_key(msg) in self._referable else msg

    def resolved(self, identity_bytes: bytes) -> bytes:
        """The config identity (in full) that `identity_bytes` names by reference, else the bytes
        themselves: which config node it names (the explorer's display, a block's orderer
        signatures counted once per orderer), no check made (`identify` checks)."""
        if self._referable is None:
            return identity_bytes
        try:
            msg = identity_pb2.Identity.FromString(identity_bytes)
        except DecodeError:
            return identity_bytes
        if not msg.certificate_ref or msg.certificate_der:
            return identity_bytes
        full = self._referable.get(_reference_key(msg))
        if full is None:
            full = self._client_identity(msg)
        return identity_bytes if full is None else full

    @property
    def org_ids(self) -> frozenset[str]:
        """The organisations trusted on this channel."""
        return frozenset(self._roots)

    def root_certificate(self, org_id: str) -> x509.Certificate | None:
        """The root CA certificate of `org_id`, or None if it is not a member."""
        return self._roots.get(org_id)

    def is_revoked(self, org_id: str, serial: int) -> bool:
        """True iff `org_id` revoked the certificate with this serial number."""
        return serial in self._revoked.get(org_id, frozenset())

    def identify(self, identity_bytes: bytes, now: datetime) -> VerifiedIdentity:
        """Check that `identity_bytes` names a current member certificate; return who it is."""
        _require_aware(now)
        entry = self._cache.get(identity_bytes)
        if entry is None:
            entry = self._check(identity_bytes)
            with self._cache_lock:
                if len(self._cache) >= CACHE_SIZE:
                    del self._cache[next(iter(self._cache))]
                self._cache[identity_bytes] = entry
        if not entry.not_before <= now <= entry.not_after:
            raise NotAMember(
                f"certificate of {entry.identity.common_name!r} ({entry.identity.org_id}) is "
                f"not valid at {now.isoformat()} (valid {entry.not_before.isoformat()} .. "
                f"{entry.not_after.isoformat()})"
            )
        return entry.identity

    def verify(
        self,
        identity_bytes: bytes,
        data: bytes,
        signature: bytes,
        now: datetime,
        remember: bool = True,
    ) -> VerifiedIdentity:
        """Identify the signer, then check its signature over `data`; return the identity.
        `remember=False`: a signature nobody checks twice (an orderer's over a delivered
        block), so the memo keeps room, and memory, for those that are."""
        identity = self.identify(identity_bytes, now)
        key = verified_key(identity.identity_id, data, signature)
        if key in self._verified or key in IN_PROCESS:
            return identity
        verify_signature(identity.public_key, data, signature)
        IN_PROCESS.add(key)  # another node of the process checks it too (a block's, both peers)
        if remember:
            self._remember(key)
        return identity

    def remember_own_signature(
        self, signer: SigningIdentity, data: bytes, signature: bytes
    ) -> None:
        """Record a signature this node just made with its own key (an endorsement), so checking
        it again at commit costs no public-key operation. `SigningIdentity` guarantees the key
        belongs to its certificate; the identity itself is still checked by every `verify`."""
        key = verified_key(signer.identity_id, data, signature)
        IN_PROCESS.add(key)  # the other endorsers' peers of the process check it at commit
        self._remember(key)

    def _remember(self, key: bytes) -> None:
        with self._cache_lock:
            self._verified.add(key)

    def _check(self, identity_bytes: bytes) -> _CacheEntry:
        """Every time-independent check; the result is safe to cache. A reference is resolved
        first and its identity checked in full (`_resolved`)."""
        msg = identity_pb2.Identity()
        try:
            msg.ParseFromString(identity_bytes)
        except (DecodeError, TypeError, ValueError) as exc:
            raise MalformedIdentity(f"identity does not parse: {exc}") from None
        if not msg.org_id:
            raise MalformedIdentity("identity has an empty org_id")
        if self._referable is not None and msg.certificate_ref:
            return self._resolved(msg, self._referable)
        try:
            cert = x509.load_der_x509_certificate(msg.certificate_der)
            public_key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
            # (InvalidVersion is not a ValueError: a DER certificate with version 10 raised it
            # out of admission as UNKNOWN; found by tests/integration/test_fuzz_rpc.py)
            raise MalformedIdentity(f"identity certificate is not DER X.509: {exc}") from None
        public_key = _checked_key(msg.signature_algorithm, public_key)
        root = self._roots.get(msg.org_id)
        if root is None:
            raise NotAMember(f"organisation {msg.org_id!r} is not a member of this channel")
        if not issued_directly_by(cert, root):
            raise NotAMember(f"certificate is not issued by the root CA of {msg.org_id!r}")
        if _is_ca(cert):
            raise NotAMember("a CA certificate cannot act as an identity")
        if self.is_revoked(msg.org_id, cert.serial_number):
            raise Revoked(f"certificate {cert.serial_number:x} of {msg.org_id!r} is revoked")
        common_names = _name_values(cert, NameOID.COMMON_NAME)
        identity = VerifiedIdentity(
            identity_bytes=identity_bytes,
            identity_id=hashlib.sha256(msg.certificate_der).digest(),
            org_id=msg.org_id,
            roles=frozenset(_name_values(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)) & ROLE_OU,
            common_name=common_names[0] if common_names else "",
            public_key=public_key,
        )
        return _CacheEntry(
            identity=identity,
            not_before=max(cert.not_valid_before_utc, root.not_valid_before_utc),
            not_after=min(cert.not_valid_after_utc, root.not_valid_after_utc),
        )

    def _resolved(
        self, msg: identity_pb2.Identity, referable: Mapping[tuple[str, int, bytes], bytes]
    ) -> _CacheEntry:
        """The check of the config identity a reference names (in `referable`): the very entry
        its full bytes get (every check of `_check` on its certificate), found through the
        config alone."""
        if msg.certificate_der:
            raise MalformedIdentity("identity carries both a certificate and a reference")
        if msg.signature_algorithm not in SA.SignatureAlgorithm.values():
            raise UnknownAlgorithm(
                f"signature algorithm {msg.signature_algorithm} is not supported"
            )
        full = referable.get(_reference_key(msg))
        if full is None:
            full = self._client_identity(msg)
        if full is None:
            whose = "no node of this channel's config" + (
                " and no earlier block's client" if self._clients is not None else ""
            )
            raise UnknownReference(
                f"{whose} has certificate {msg.certificate_ref.hex()}"
                f" in {msg.org_id!r} (signature algorithm {msg.signature_algorithm})"
            )
        entry = self._cache.get(full)
        return entry if entry is not None else self._check(full)

    def _client_identity(self, msg: identity_pb2.Identity) -> bytes | None:
        """The full identity a client's reference names through the table, or None: the
        registered certificate under the reference's organisation and named algorithm."""
        if self._clients is None:
            return None
        entry = self._clients.get((msg.org_id, msg.certificate_ref))
        if entry is None:
            return None
        return identity_pb2.Identity(
            org_id=msg.org_id,
            certificate_der=entry.certificate_der,
            signature_algorithm=msg.signature_algorithm,
        ).SerializeToString()


def _reference_key(msg: identity_pb2.Identity) -> tuple[str, int, bytes]:
    """What a reference must match to name a config identity: its organisation, certificate
    hash and named algorithm (the reference form of that identity, `reference_bytes`)."""
    return msg.org_id, msg.signature_algorithm, msg.certificate_ref


def reference_bytes(identity_bytes: bytes) -> bytes | None:
    """The serialised reference form of a full identity — `Identity{org_id, certificate_ref =
    SHA-256(certificate_der), signature_algorithm}` — or None for bytes that are not a full
    identity (no org, no certificate, a reference already, or not an Identity)."""
    try:
        msg = identity_pb2.Identity.FromString(identity_bytes)
    except DecodeError:
        return None
    if not msg.org_id or not msg.certificate_der or msg.certificate_ref:
        return None
    return identity_pb2.Identity(
        org_id=msg.org_id,
        certificate_ref=hashlib.sha256(msg.certificate_der).digest(),
        signature_algorithm=msg.signature_algorithm,
    ).SerializeToString()


def algorithm_of(public_key: object) -> int:
    """The SignatureAlgorithm of a certificate key (UNSPECIFIED: not one dltmw accepts)."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return SA.SIGNATURE_ALGORITHM_ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey) and _is_p256(public_key):
        return SA.SIGNATURE_ALGORITHM_ECDSA_P256_SHA256
    if isinstance(public_key, mldsa.MLDSA65PublicKey):
        return SA.SIGNATURE_ALGORITHM_ML_DSA_65
    return SA.SIGNATURE_ALGORITHM_UNSPECIFIED


def _checked_key(named: int, public_key: object) -> PublicKey:
    """The certificate key, if dltmw accepts it: an unknown named algorithm is refused as such,
    a known one must be the key's."""
    if named not in SA.SignatureAlgorithm.values():
        raise UnknownAlgorithm(f"signature algorithm {named} is not supported")
    actual = algorithm_of(public_key)
    if actual == SA.SIGNATURE_ALGORITHM_UNSPECIFIED:
        raise MalformedIdentity(f"unsupported certificate key {type(public_key).__name__}")
    if named not in (SA.SIGNATURE_ALGORITHM_UNSPECIFIED, actual):
        raise MalformedIdentity(
            f"identity names {SA.SignatureAlgorithm.Name(named)}"  # type: ignore[arg-type]
            f" but its certificate key is {SA.SignatureAlgorithm.Name(actual)}"  # type: ignore[arg-type]
        )
    if not isinstance(
        public_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey
    ):
        raise MalformedIdentity(f"unsupported certificate key {type(public_key).__name__}")
    return public_key


def tls_org_matches(tls_cert_pem_or_der: bytes, membership: Membership, org_id: str) -> bool:
    """True iff the TLS certificate (PEM or DER) is a leaf issued directly by `org_id`'s root CA.

    Validity dates are the TLS handshake's business; this only binds the peer to an org.
    """
    root = membership.root_certificate(org_id)
    if root is None:
        return False
    cert = _load_cert(tls_cert_pem_or_der)
    if cert is None:
        return False
    if membership.is_revoked(org_id, cert.serial_number):
        return False
    return not _is_ca(cert) and issued_directly_by(cert, root)


def tls_roles(tls_cert_pem_or_der: bytes) -> frozenset[str]:
    """The roles (`ROLE_OU`) a TLS certificate names in its organisational units; none for one
    that does not parse. Says nothing of who issued it: pair it with `tls_org_matches`."""
    cert = _load_cert(tls_cert_pem_or_der)
    if cert is None:
        return frozenset()
    return frozenset(_name_values(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)) & ROLE_OU


def tls_revoked(tls_cert_pem_or_der: bytes, membership: Membership) -> bool:
    """True iff the TLS certificate is one a member organisation issued and revoked (so a
    refused link can say why: CERTIFICATE_REVOKED, not a mismatch)."""
    cert = _load_cert(tls_cert_pem_or_der)
    if cert is None:
        return False
    for org in membership.org_ids:
        root = membership.root_certificate(org)
        revoked = membership.is_revoked(org, cert.serial_number)
        if revoked and root is not None and issued_directly_by(cert, root):
            return True
    return False


def _load_cert(pem_or_der: bytes) -> x509.Certificate | None:
    try:
        if pem_or_der.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(pem_or_der)
        return x509.load_der_x509_certificate(pem_or_der)
    except (ValueError, x509.InvalidVersion):
        return None


def identity_bytes(org_id: str, cert_pem: bytes) -> bytes:
    """The serialised Identity of a member certificate (PEM): what a node or party is named by
    in configs and maps, and what it signs as (`SigningIdentity.identity_bytes`)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return _identity(org_id, der)


def _identity(org_id: str, certificate_der: bytes) -> bytes:
    return identity_pb2.Identity(org_id=org_id, certificate_der=certificate_der).SerializeToString()


class SigningIdentity:
    """A private key plus the serialised identity it signs as."""

    __slots__ = (
        "_identity_id",
        "_in_process",
        "_private_key",
        "certificate_der",
        "identity_bytes",
        "org_id",
    )

    def __init__(
        self, org_id: str, certificate_der: bytes, private_key: PrivateKey | ExternalKey
    ) -> None:
        if not org_id:
            raise ValueError("organisation id must not be empty")
        if isinstance(private_key, ec.EllipticCurvePrivateKey) and not _is_p256(private_key):
            raise ValueError("ECDSA signing keys must be on P-256")
        if not isinstance(
            private_key,
            ec.EllipticCurvePrivateKey
            | ed25519.Ed25519PrivateKey
            | mldsa.MLDSA65PrivateKey
            | ExternalKey,
        ):
            raise ValueError(f"unsupported private key {type(private_key).__name__}")
        cert = x509.load_der_x509_certificate(certificate_der)
        raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if cert.public_key().public_bytes(*raw) != private_key.public_key().public_bytes(*raw):
            raise ValueError("private key does not match the certificate's public key")
        self.org_id = org_id
        self.certificate_der = certificate_der
        self._private_key = private_key
        # Serialised once: tx ids hash these bytes, so they must never change.
        self.identity_bytes: bytes = _identity(org_id, certificate_der)
        # Hashed once: an endorser asks for it with every endorsement it remembers.
        self._identity_id = hashlib.sha256(certificate_der).digest()
        # A key this process holds signs correctly by construction (its public half is the
        # certificate's, checked above): its signatures go into the process memo (`sign`). An
        # external key (an HSM) is not trusted so far: what it returns is checked as anyone's.
        self._in_process = not isinstance(private_key, ExternalKey)

    @property
    def identity_id(self) -> bytes:
        """SHA-256 of the certificate, the same value VerifiedIdentity.identity_id carries."""
        return self._identity_id

    def sign(self, data: bytes) -> bytes:
        """Sign `data`: low-S DER ECDSA-SHA256, a raw 64-byte Ed25519 signature, or a 3309-byte
        ML-DSA-65 one.

        While the process runs two nodes or more (`verified_memo.IN_PROCESS`), the signature
        is also remembered there as checked: the nodes of the process that would verify it —
        the endorsers an embedded client's proposal, the gateway its envelope, the peers the
        solo orderer's block signature — then find it (3 public-key verifications of a lone
        bus message's 3, benchmarks/RESULTS.md, branch bus7). Sound as the memo is: the digest
        binds this certificate, the data and the signature, and a key held in this process
        whose public half is the certificate's makes only valid signatures (low-S: normalised
        below). Every node still identifies the signer itself on every check."""
        signature = self._sign(data)
        if self._in_process and IN_PROCESS.shared:
            IN_PROCESS.add(verified_key(self._identity_id, data, signature))
        return signature

    def _sign(self, data: bytes) -> bytes:
        key = self._private_key
        if isinstance(key, ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey):
            return key.sign(data)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            der = key.sign(data, ECDSA_SHA256)
        else:
            der = key.sign_sha256(data)
        r, s = decode_dss_signature(der)
        if s > _P256_HALF_ORDER:
            s = P256_ORDER - s
        return encode_dss_signature(r, s)

    @classmethod
    def from_external(cls, org_id: str, cert_pem: bytes, key: ExternalKey) -> SigningIdentity:
        """Load a certificate PEM whose private key is held elsewhere (an HSM)."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        return cls(org_id, cert.public_bytes(serialization.Encoding.DER), key)

    @classmethod
    def from_pem(cls, org_id: str, cert_pem: bytes, key_pem: bytes) -> SigningIdentity:
        """Load a certificate PEM and an unencrypted PKCS8 (or SEC1) private key PEM."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(
            key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | mldsa.MLDSA65PrivateKey
        ):
            raise ValueError(f"unsupported private key {type(key).__name__}")
        return cls(org_id, cert.public_bytes(serialization.Encoding.DER), key)
