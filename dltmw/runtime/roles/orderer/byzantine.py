"""TEST-ONLY: poison envelopes and the byzantine-orderer hook that sends them.

Nothing here runs in a normal node. `poison_envelopes` builds ~100 kinds of envelope that the
ordering rule (`core/txcheck.check_orderable`) must refuse, using only what one faulty party
holds: its own key, and valid envelopes it has seen on the wire (a "template", for mutations,
replays and forged-creator kinds). `PoisonHook` makes one PBFT-lite orderer byzantine in that
way; it is enabled only when the environment variable `DLTMW_TEST_BYZANTINE` names the node
(`DLTMW_TEST_BYZANTINE=orderer.a:poison`), which only the byzantine-orderer integration test
sets; it is read once, when the node's orderer channel is built, and ignored otherwise.

What the hook does every `EVERY_TICKS` ticks: it builds a fresh set of poison envelopes and
(1) forwards them, signed as itself, to every other replica (a faulty forwarder), and (2) while
it is the primary of the current view, puts them into its own core's pending requests so its
pre-prepares carry them (a faulty primary; its own admission is switched off while it is
primary). When it is no longer primary it takes them out of its pending requests again, so its
own request timer does not push it into view changes alone. While primary it also relays the
valid client requests it holds to the backups (an honest primary has no need to; a censoring
one is a different fault, answered by clients retrying elsewhere): the hook is faulty only in
the junk it sends, which keeps the test about admission, not about censorship or silence.

`CensorHook` (`DLTMW_TEST_BYZANTINE=orderer.a:censor`) is that other fault: as primary it admits
requests and never proposes or relays them, and otherwise behaves. What answers it is the
gateway's ordering deadline (`runtime/roles/gateway/orderer_choice.py`). `<node>:withhold` and
`<node>:forge` (an orderer whose Deliver streams go silent, or show forged blocks, while it
orders correctly) live in `withhold.py`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from google.protobuf.message import DecodeError

from dltmw.aio.clock import utc_now
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import P256_ORDER, SigningIdentity
from dltmw.core.pbft import ClientRequest, Envelope, Replica, request_id
from dltmw.core.timestamps import SECONDS_MAX, SECONDS_MIN
from dltmw.core.wire_field import length_delimited, varint
from dltmw.runtime.roles.orderer.withhold import HOOK_ENV
from dltmw.v1 import (
    block_pb2,
    common_pb2,
    identity_pb2,
    proposal_pb2,
    replica_pb2,
    transaction_pb2,
)

logger = logging.getLogger(__name__)

EVERY_TICKS = 20
SIZE_MAX = 1 << 20  # the PBFT-lite request_bytes_max of real orderers
RELAY_MAX = 400  # requests per relayed message (what a receiving core takes of one)
RELAYED_MEMORY = 100_000
ENDORSER = common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION
PRIVATE = common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION


@dataclass(frozen=True)
class Poison:
    """One poison envelope and the name of its kind (e.g. "header/timestamp-nanos-1e9")."""

    kind: str
    envelope: bytes


def _noise(seed: bytes, size: int) -> bytes:
    return hashlib.shake_256(seed).digest(size)


@dataclass
class _Maker:
    """Builds single-defect envelopes signed by `signer` on `channel_id`."""

    channel_id: str
    signer: SigningIdentity
    serial: int
    out: list[Poison] = field(default_factory=list)

    def nonce(self, kind: str) -> bytes:
        return hashlib.sha256(f"poison/{self.serial}/{kind}".encode()).digest()

    def header(self, kind: str, **changes: object) -> common_pb2.Header:
        nonce = self.nonce(kind)
        creator = self.signer.identity_bytes
        h = common_pb2.Header(
            type=ENDORSER,
            channel_id=self.channel_id,
            tx_id=compute_tx_id(nonce, creator),
            creator=creator,
            nonce=nonce,
        )
        h.timestamp.FromDatetime(utc_now())
        for name, value in changes.items():
            setattr(h, name, value)
        if "nonce" in changes or "creator" in changes:
            h.tx_id = compute_tx_id(h.nonce, h.creator)  # keep the one defect the only one
        return h

    def payload(self, kind: str, header: common_pb2.Header | bytes, data: bytes = b"") -> bytes:
        raw = header if isinstance(header, bytes) else header.SerializeToString()
        data = (
            data or transaction_pb2.Transaction(proposal_bytes=self.nonce(kind)).SerializeToString()
        )
        return common_pb2.Payload(header=raw, data=data).SerializeToString()

    def add(self, kind: str, envelope: bytes) -> None:
        self.out.append(Poison(kind, envelope))

    def signed(self, kind: str, payload: bytes) -> None:
        self.add(kind, _envelope(payload, self.signer.sign(payload)))

    def with_header(self, kind: str, **changes: object) -> None:
        self.signed(kind, self.payload(kind, self.header(kind, **changes)))


def _envelope(payload: bytes, signature: bytes) -> bytes:
    return common_pb2.Envelope(payload=payload, signature=signature).SerializeToString()


def _garbage(m: _Maker) -> None:
    seed = m.nonce("garbage")
    nested = b""
    for _ in range(200):
        nested = length_delimited(1, nested)
    block = block_pb2.Block(header=block_pb2.BlockHeader(channel_id=m.channel_id, number=1))
    for kind, raw in [
        ("empty", b""),
        ("zero-byte", b"\x00"),
        ("ff-8", b"\xff" * 8),
        ("ff-1k", b"\xff" * 1024),
        ("truncated-length", b"\x0a\x10abc"),
        ("wrong-wire-type", b"\x08\x01"),
        ("unknown-field-only", b"\xf8\x01\x01"),
        ("noise-64", _noise(seed, 64)),
        ("noise-4k", _noise(seed, 4096)),
        ("block-bytes", block.SerializeToString()),
        ("deep-nesting", nested),
        ("empty-header", _envelope(length_delimited(1, b""), b"")),
        ("varint-overflow", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
        ("length-past-end", varint(1 << 3 | 2) + varint(1 << 20) + b"x"),
    ]:
        m.add(f"garbage/{kind}", raw)


def _envelope_level(m: _Maker) -> None:
    good = m.payload("envelope", m.header("envelope"))
    signature = m.signer.sign(good)
    m.add("envelope/payload-missing", _envelope(b"", signature))
    m.signed("envelope/payload-noise", _noise(m.nonce("payload-noise"), 200))
    m.add("envelope/unsigned", _envelope(good, b""))
    m.add("envelope/signature-noise", _envelope(good, _noise(m.nonce("sig"), 72)))
    m.add("envelope/signature-truncated", _envelope(good, signature[:-3]))
    other = m.payload("other", m.header("other"))
    m.add("envelope/signature-of-other-payload", _envelope(good, m.signer.sign(other)))
    header_only = m.header("sig-over-header").SerializeToString()
    m.add("envelope/signature-over-header", _envelope(good, m.signer.sign(header_only)))
    m.add("envelope/high-s-signature", _envelope(good, _high_s(signature)))
    canonical = _envelope(good, signature)
    m.add("envelope/trailing-unknown-field", canonical + length_delimited(9, b"x"))
    m.add("envelope/fields-reversed", length_delimited(2, signature) + length_delimited(1, good))
    m.add("envelope/payload-twice", length_delimited(1, b"\x0a\x00") + canonical)


def _high_s(signature: bytes) -> bytes:
    """The ECDSA twin (r, n - s) of a low-S signature (or noise for Ed25519)."""
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        return signature[::-1]
    return encode_dss_signature(r, P256_ORDER - s)


def _timestamps(m: _Maker) -> None:
    stamps = [
        ("nanos-1e9", 0, 1_000_000_000),
        ("nanos-negative", 1_700_000_000, -1),
        ("nanos-int32-max", 1_700_000_000, 2**31 - 1),
        ("nanos-int32-min", 1_700_000_000, -(2**31)),
        ("after-9999", SECONDS_MAX + 1, 0),
        ("before-0001", SECONDS_MIN - 1, 0),
        ("seconds-2^62", 2**62, 0),
        ("seconds-int64-min", -(2**63), 0),
        ("seconds-int64-max", 2**63 - 1, 0),
        ("year-0001", SECONDS_MIN, 0),  # representable, but no certificate is valid then
        ("year-9999", SECONDS_MAX, 999_999_999),
    ]
    for name, seconds, nanos in stamps:
        kind = f"header/timestamp-{name}"
        h = m.header(kind)
        h.timestamp.seconds, h.timestamp.nanos = seconds, nanos
        m.signed(kind, m.payload(kind, h))
    h = m.header("header/timestamp-missing")
    h.ClearField("timestamp")
    m.signed("header/timestamp-missing", m.payload("header/timestamp-missing", h))


def _header_fields(m: _Maker, template_creator: bytes) -> None:
    for name, channel in [("other", "other"), ("empty", ""), ("huge", "c" * 10_000)]:
        m.with_header(f"header/channel-{name}", channel_id=channel)
    m.with_header("header/channel-unicode", channel_id=m.channel_id + "\u00e4")
    m.with_header("header/channel-trailing-space", channel_id=m.channel_id + " ")
    right = m.header("header/tx-id").tx_id
    for name, tx_id in [
        ("wrong", hashlib.sha256(b"other").hexdigest()),
        ("empty", ""),
        ("uppercase", right.upper()),
        ("huge", "f" * 10_000),
        ("of-template-creator", compute_tx_id(m.nonce("header/tx-id"), template_creator)),
    ]:
        m.with_header(f"header/tx-id-{name}", tx_id=tx_id)
    for name, nonce in [("empty", b""), ("one-byte", b"\x01"), ("23-bytes", b"n" * 23)]:
        m.with_header(f"header/nonce-{name}", nonce=nonce)
    cert = m.signer.certificate_der
    creators = [
        ("empty", b""),
        ("noise", _noise(m.nonce("creator"), 300)),
        ("empty-org", identity_pb2.Identity(certificate_der=cert).SerializeToString()),
        (
            "unknown-org",
            identity_pb2.Identity(org_id="Org9", certificate_der=cert).SerializeToString(),
        ),
        (
            "cert-noise",
            identity_pb2.Identity(
                org_id=m.signer.org_id, certificate_der=b"\x30\x03\x02\x01\x00"
            ).SerializeToString(),
        ),
    ]
    member_org = _org_of(template_creator)
    if member_org and member_org != m.signer.org_id:
        wrong_issuer = identity_pb2.Identity(org_id=member_org, certificate_der=cert)
        creators.append(("wrong-issuer", wrong_issuer.SerializeToString()))
    if template_creator and template_creator != m.signer.identity_bytes:
        creators.append(("forged-member", template_creator))  # a member's identity, our key
    for name, creator in creators:
        m.with_header(f"header/creator-{name}", creator=creator)
    for name, kind in [("unspecified", 0), ("config", common_pb2.HEADER_TYPE_CONFIG), ("99", 99)]:
        m.with_header(f"header/type-{name}", type=kind)
    m.signed("header/bytes-noise", m.payload("hdr", _noise(m.nonce("hdr"), 120)))
    m.signed("header/bytes-empty", m.payload("hdr-empty", b""))


def _org_of(identity: bytes) -> str:
    try:
        return identity_pb2.Identity.FromString(identity).org_id
    except DecodeError:
        return ""


def _private_and_size(m: _Maker, size_max: int) -> None:
    h = m.header("private", type=PRIVATE)
    digest = hashlib.sha256(m.nonce("digest")).digest()
    canonical = transaction_pb2.PrivateTransaction(payload_hash=digest).SerializeToString()
    for name, data in [
        ("hash-31", length_delimited(1, digest[:31])),
        ("hash-33", length_delimited(1, digest + b"\x00")),
        ("hash-empty", length_delimited(1, b"")),
        ("extra-field", canonical + length_delimited(9, b"plaintext")),
        ("data-noise", _noise(m.nonce("pdata"), 50)),
        ("endorser-tx-data", transaction_pb2.Transaction(proposal_bytes=b"p").SerializeToString()),
        ("hash-twice", canonical + canonical),
    ]:
        kind = f"private/{name}"
        m.signed(kind, m.payload(kind, m.header(kind, type=PRIVATE), data))
    m.signed(
        "private/data-empty", common_pb2.Payload(header=h.SerializeToString()).SerializeToString()
    )
    big = m.payload("size", m.header("size"), _noise(m.nonce("big"), size_max + 1024))
    m.signed("size/oversize-data", big)
    endorsement = proposal_pb2.Endorsement(endorser=b"e" * 40, signature=b"s" * 60)
    tx = transaction_pb2.Transaction(endorsements=[endorsement] * (size_max // 100 + 10))
    m.signed(
        "size/huge-repeated-endorsements", m.payload("rep", m.header("rep"), tx.SerializeToString())
    )


def _mutations(m: _Maker, template: bytes, size_max: int) -> None:
    """Changes to a valid envelope seen on the wire: every one breaks its signature or its
    canonical encoding (the faulty party cannot re-sign as the creator)."""
    length = len(template)
    for i in range(12):
        position = (length - 1) * i // 11
        flipped = bytearray(template)
        flipped[position] ^= 1 << (i % 8)
        m.add(f"mutation/bit-flip-{i:02d}", bytes(flipped))
    for i in range(1, 11):
        m.add(f"mutation/truncated-{i:02d}", template[: length * i // 11])
    m.add("mutation/appended-byte", template + b"\x00")
    m.add("mutation/prepended-byte", b"\x00" + template)
    original = common_pb2.Envelope.FromString(template)
    if _creator_of(template) != m.signer.identity_bytes:  # else it would be the valid original
        resigned = _envelope(original.payload, m.signer.sign(original.payload))
        m.add("mutation/own-signature", resigned)
    payload = common_pb2.Payload.FromString(original.payload)
    header = common_pb2.Header.FromString(payload.header)
    header.timestamp.nanos = 1_000_000_000
    restamped = common_pb2.Payload(header=header.SerializeToString(), data=payload.data)
    m.add("mutation/restamped", _envelope(restamped.SerializeToString(), original.signature))
    m.add("duplicate/reencoded-unknown-field", template + length_delimited(15, b"dup"))
    m.add(
        "duplicate/fields-reversed",
        length_delimited(2, original.signature) + length_delimited(1, original.payload),
    )
    m.add("size/padded-duplicate", template + length_delimited(15, b"p" * (size_max + 16)))


def poison_envelopes(
    channel_id: str,
    signer: SigningIdentity,
    serial: int,
    template: bytes | None = None,
    size_max: int = SIZE_MAX,
) -> list[Poison]:
    """Poison envelopes for `channel_id` that `signer` can make (see the module docstring).

    `serial` makes each call's envelopes distinct; `template` is a valid envelope seen on the
    wire (None: one signed by `signer` stands in). Every kind is refused by the ordering rule
    whoever `signer` is (a faulty orderer, or a member client colluding with one).
    """
    m = _Maker(channel_id, signer, serial)
    if template is None:
        stand_in = m.payload("template", m.header("template"))
        template = _envelope(stand_in, signer.sign(stand_in))
    creator = _creator_of(template)
    _garbage(m)
    _envelope_level(m)
    _timestamps(m)
    _header_fields(m, creator)
    _private_and_size(m, size_max)
    _mutations(m, template, size_max)
    return m.out


def _creator_of(envelope: bytes) -> bytes:
    try:
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
        return common_pb2.Header.FromString(payload.header).creator
    except DecodeError:
        return b""


# --- the hook ---------------------------------------------------------------------------------


@dataclass
class PoisonHook:
    """TEST-ONLY byzantine behaviour of one PBFT-lite orderer (see the module docstring)."""

    channel_id: str
    signer: SigningIdentity
    size_max: int = SIZE_MAX
    serial: int = 0
    ticks: int = 0
    template: bytes | None = None
    primary: bool = False
    _check: Callable[[bytes], bool] | None = None
    _relayed: set[bytes] = field(default_factory=set)
    proposed: int = 0
    forwarded: int = 0

    @classmethod
    def from_env(
        cls, node_id: str, channel_id: str, signer: SigningIdentity, size_max: int
    ) -> PoisonHook | None:
        """The hook `DLTMW_TEST_BYZANTINE` names for `node_id` ("<node_id>:poison" or
        "<node_id>:censor", `CensorHook`), else None."""
        mode = os.environ.get(HOOK_ENV, "")
        if mode == f"{node_id}:censor":
            logger.warning("TEST-ONLY byzantine hook active on %s: a censoring primary", node_id)
            return CensorHook(channel_id, signer, size_max)
        if mode != f"{node_id}:poison":
            return None
        logger.warning("TEST-ONLY byzantine hook active on %s: this orderer sends poison", node_id)
        return cls(channel_id, signer, size_max)

    def admit(self, check: Callable[[bytes], bool]) -> Callable[[bytes], bool]:
        """The request check for our own core: everything while we are primary."""
        self._check = check
        return lambda request: self.primary or check(request)

    def observe(self, requests: Iterable[bytes]) -> None:
        """Remember a valid envelope (from a decided batch) as the template for mutations."""
        for request in requests:
            self.template = request
            return

    def act(self, replica: Replica) -> list[Envelope]:
        """One tick of misbehaviour: forward fresh poison to every replica and, while primary,
        put it into our own proposals; when not primary, forget poison we still hold. Returns
        the forwards (the core sends them to every other replica)."""
        me = replica.me
        out: list[Envelope] = []
        self.primary = replica.primary() == me and not replica.changing
        check = self._check
        if check is not None and not self.primary:
            junk = [r for r, p in replica.pending.items() if not check(p.request)]
            for rid in junk:
                replica.pending.pop(rid, None)
        elif check is not None:
            valid = [
                p.request
                for rid, p in replica.pending.items()
                if rid not in self._relayed and check(p.request)
            ][:RELAY_MAX]
            if valid:
                out.append(self._forward(me, valid))
                if len(self._relayed) > RELAYED_MEMORY:
                    self._relayed.clear()
                self._relayed.update(request_id(r) for r in valid)
        self.ticks += 1
        if self.ticks % EVERY_TICKS:
            return out
        self.serial += 1
        poison = poison_envelopes(
            self.channel_id, self.signer, self.serial, self.template, self.size_max
        )
        small = [p.envelope for p in poison if len(p.envelope) <= self.size_max]
        large = [p.envelope for p in poison if len(p.envelope) > self.size_max]
        for chunk in [small, *([x] for x in large)]:  # each Exchange call stays under 4 MiB
            out.append(self._forward(me, chunk))
        self.forwarded += len(poison)
        if self.primary:
            for envelope in small:
                replica.step(ClientRequest(envelope))
            self.proposed += len(small)
            logger.warning(
                "byzantine hook: %d poison requests put into our proposals as primary of view %d"
                " (%d so far); %d forwarded so far",
                len(small),
                replica.view,
                self.proposed,
                self.forwarded,
            )
        return out

    def _forward(self, me: int, requests: list[bytes]) -> Envelope:
        """A forward of `requests`, signed as ourselves."""
        message = replica_pb2.ReplicaMessage(
            forwarded=replica_pb2.ForwardedRequests(requests=requests)
        )
        payload = message.SerializeToString()
        return Envelope(payload=payload, replica=me, signature=self.signer.sign(payload))


@dataclass
class CensorHook(PoisonHook):
    """TEST-ONLY: a primary that censors (`DLTMW_TEST_BYZANTINE=<node>:censor`).

    While it is the primary of the current view, every request it admits — from a client or
    relayed by a backup — is admitted (the client's Broadcast waits, as for any request) and
    marked as already proposed (`Replica.proposed_ids`), so its `propose` never cuts it into a
    batch; a primary relays nothing. Otherwise it takes part correctly: it votes, checkpoints,
    takes part in view changes (which clear the marks), and as a backup orders and relays as
    usual. Its clients are answered only if they, or their gateway, also reach a backup
    (`roles/gateway/orderer_choice.py`): the backups then time the request and replace it.
    """

    censored: int = 0
    _replica: Replica | None = None
    _hidden: set[bytes] = field(default_factory=set)  # admitted since the last tick

    def admit(self, check: Callable[[bytes], bool]) -> Callable[[bytes], bool]:
        """The admission rule, unchanged, that hides what it admits as primary."""

        def admit_and_hide(request: bytes) -> bool:
            if not check(request):
                return False
            replica = self._replica
            if replica is not None and replica.primary() == replica.me and not replica.changing:
                rid = request_id(request)
                replica.proposed_ids.add(rid)
                self._hidden.add(rid)
                self.censored += 1
                if self.censored in (1, 100, 1000):
                    logger.warning(
                        "byzantine hook: censoring as primary of view %d (%d requests so far)",
                        replica.view,
                        self.censored,
                    )
            return True

        return admit_and_hide

    def observe(self, requests: Iterable[bytes]) -> None:
        """Nothing to learn."""

    def act(self, replica: Replica) -> list[Envelope]:
        """Remember the replica (for `admit`); as primary, keep what it hides out of `pending`
        too, so its own request timer does not blow the whistle on it (a replica changing
        views relays its pending requests to every replica); send nothing."""
        self._replica = replica
        if replica.primary() == replica.me and not replica.changing:
            for rid in [r for r in self._hidden if r in replica.pending]:
                del replica.pending[rid]
        self._hidden.clear()
        return []
