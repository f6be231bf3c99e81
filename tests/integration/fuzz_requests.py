"""Valid requests for every RPC, signed as any party, and the mutations the fuzzer applies.

`GENERATORS` maps each method path to a function building that method's request messages (one
for a unary request, a few for a request stream) from a `Party` (whose TLS connection and whose
signer) and a `World` (ids the network already holds: a committed tx_id, a private payload's hash,
a notarised transaction...). Every generator takes a `tweak` applied to the innermost signed body
(a Header, a signed query, a FlowMessage, a NotarisationPayload, a ReplicaMessage) BEFORE it is
serialised and signed, so a mutated field still carries a valid signature and reaches the checks
behind signature verification. `test_fuzz_rpc.py` fails if a node serves a method missing here.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from dltmw.client.files import ClientFiles
from dltmw.contracts import builtin_package
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import P256_ORDER, SigningIdentity
from dltmw.core.privacy.envelope import PrivacyKey, payload_hash, seal
from dltmw.pki.ca import issue_cert, make_ca
from dltmw.rpc import reflection as _reflection  # noqa: F401 (puts grpc.reflection.v1 in the pool)
from dltmw.rpc.tls import TlsMaterial
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.roles.privacy.hybrid import load_privacy_key
from dltmw.v1 import admin_service_pb2 as A
from dltmw.v1 import (
    common_pb2,
    notarisation_pb2,
    notary_service_pb2,
    proposal_pb2,
    replica_pb2,
    utxo_pb2,
)
from dltmw.v1 import crosschain_pb2 as X
from dltmw.v1 import endorser_service_pb2 as E
from dltmw.v1 import flow_service_pb2 as F
from dltmw.v1 import gateway_service_pb2 as G
from dltmw.v1 import orderer_service_pb2 as O
from dltmw.v1 import privacy_manager_service_pb2 as P
from dltmw.v1 import private_agreement_pb2 as PA
from dltmw.v1 import vault_recovery_pb2 as VR
from dltmw.v1 import vault_service_pb2 as V

Tweak = Callable[[Message], None]


def no_tweak(_: Message) -> None:
    """Leave the body as built."""


class Signer(Protocol):
    """What a request needs of whoever signs it."""

    @property
    def identity_bytes(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


class ForgedSigner:
    """A real member's identity bytes, signing with a key that is not its certificate's."""

    def __init__(self, identity_bytes: bytes) -> None:
        self.identity_bytes = identity_bytes
        self._key = ec.generate_private_key(ec.SECP256R1())

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return encode_dss_signature(r, min(s, P256_ORDER - s))


@dataclass(frozen=True)
class Party:
    """Who sends a request: the TLS identity of its connection and the signer of its bodies."""

    name: str
    tls: TlsMaterial
    signer: Signer


def _node_signer(net: Path, node_id: str) -> tuple[TlsMaterial, SigningIdentity]:
    config = NodeConfig.load(net / "nodes" / node_id / "node.toml")
    signer = SigningIdentity.from_pem(
        config.org_id, config.identity_cert.read_bytes(), config.identity_key.read_bytes()
    )
    tls = TlsMaterial.load(config.tls_cert, config.tls_key, config.tls_roots)
    return tls, signer


def parties(net: Path, who: str, foreign_signer: Signer, is_node: bool = False) -> list[Party]:
    """The four identities the fuzzer sends as, all over `who`'s TLS connection: `who` itself
    (a valid member), another organisation's signer, `who`'s identity with a wrong key, and a
    certificate of `who`'s organisation issued by a CA outside the network."""
    if is_node:
        tls, signer = _node_signer(net, who)
    else:
        files = ClientFiles.load(net, who)
        tls, signer = files.tls, files.signer
    rogue_ca = make_ca(signer.org_id)
    rogue = issue_cert(rogue_ca, signer.org_id, f"rogue-{who}", "client")
    unknown = SigningIdentity.from_pem(signer.org_id, rogue.cert_pem, rogue.key_pem)
    return [
        Party("member", tls, signer),
        Party("foreign-org", tls, foreign_signer),
        Party("forged-signer", tls, ForgedSigner(signer.identity_bytes)),
        Party("unknown-ca", tls, unknown),
    ]


@dataclass
class World:
    """What valid requests refer to: built by the test's setup from the running network."""

    channel_id: str = "trades"
    tx_id: str = ""  # a committed transaction
    prepared_payload: bytes = b""  # an endorsed, not yet submitted transaction payload
    payload_hash: bytes = b""  # a private payload sent by Org1 to Org2
    genesis: bytes = b""  # the channel's config block
    notary: str = "notary0"
    owner: bytes = b""  # a vault node's identity (owner of issued states)
    utxo_tx_id: str = ""  # a notarised UTXO transaction shared with the node fuzzed
    signed_utxo_tx: bytes = b""  # its SignedUtxoTransaction bytes
    push_sender: PrivacyKey | None = None  # privacy key of the pushing node
    push_recipient: bytes = b""  # privacy public key of the node pushed to
    cluster_id: str = ""  # a notary cluster (network B)
    replica_index: int = 1  # the fuzzing member's index in it
    extra: dict[str, Any] = field(default_factory=dict)


def now_stamp() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime.now(UTC))
    return ts


def signed(body: Message, party: Party, tweak: Tweak) -> tuple[bytes, bytes]:
    """(bytes, signature) of a signed body: requester and timestamp filled in, then `tweak`."""
    names = {f.name for f in body.DESCRIPTOR.fields}
    if "requester" in names and not body.requester:
        body.requester = party.signer.identity_bytes  # type: ignore[attr-defined]
    if "timestamp" in names:
        body.timestamp.CopyFrom(now_stamp())  # type: ignore[attr-defined]
    tweak(body)
    raw = body.SerializeToString()
    return raw, party.signer.sign(raw)


def header(party: Party, world: World, kind: int, tweak: Tweak) -> bytes:
    nonce = secrets.token_bytes(24)
    creator = party.signer.identity_bytes
    h = common_pb2.Header(
        type=kind,  # type: ignore[arg-type]
        channel_id=world.channel_id,
        tx_id=compute_tx_id(nonce, creator),
        creator=creator,
        nonce=nonce,
    )
    h.timestamp.CopyFrom(now_stamp())
    tweak(h)
    return h.SerializeToString()


def proposal(
    party: Party, world: World, tweak: Tweak, fn: str = "get", args: tuple[bytes, ...] = (b"k",)
) -> proposal_pb2.SignedProposal:
    invocation = proposal_pb2.ContractInvocation(contract="kv", function=fn, args=list(args))
    raw = proposal_pb2.Proposal(
        header=header(party, world, common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION, tweak),
        payload=invocation.SerializeToString(),
    ).SerializeToString()
    return proposal_pb2.SignedProposal(proposal_bytes=raw, signature=party.signer.sign(raw))


def envelope(party: Party, world: World, tweak: Tweak) -> common_pb2.Envelope:
    """The world's endorsed payload signed by `party` (as is for the member when not tweaked;
    otherwise under a fresh header of `party`'s own, tweaked)."""
    payload = world.prepared_payload
    if party.name != "member" or tweak is not no_tweak:
        data = common_pb2.Payload.FromString(payload).data
        kind = common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION
        payload = common_pb2.Payload(
            header=header(party, world, kind, tweak), data=data
        ).SerializeToString()
    return common_pb2.Envelope(payload=payload, signature=party.signer.sign(payload))


def _query(cls: type[Message], body: Message, party: Party, tweak: Tweak, key: str = "query"):
    data, signature = signed(body, party, tweak)
    return cls(**{key: data, "signature": signature})


def _utxo_request(party: Party, world: World, tweak: Tweak) -> notarisation_pb2.NotarisationRequest:
    """A fresh cash issue asking the world's notary (non-validating request)."""
    from dltmw.core.utxo.build import TxSpec, build_transaction, cash_output, notarisation_payload
    from dltmw.core.utxo.model import Command, read_transaction

    me = party.signer.identity_bytes
    spec = TxSpec(
        notary=world.notary,
        nonce=secrets.token_bytes(32),
        outputs=[cash_output(me, me, "JPY", 1)],
        commands=[Command("cash", "issue", (me,))],
    )
    payload = notarisation_payload(read_transaction(build_transaction(spec)), me)
    tweak(payload)
    raw = payload.SerializeToString()
    return notarisation_pb2.NotarisationRequest(payload=raw, signature=party.signer.sign(raw))


def _push(party: Party, world: World, tweak: Tweak) -> P.PushRequest:
    assert world.push_sender is not None
    sealed = seal(
        os.urandom(16),
        world.push_sender,
        [world.push_recipient],
        os.urandom(32),
        os.urandom(12),
        [os.urandom(12) for _ in range(2)],
    )
    batch = P.PushBatch(
        channel_id=world.channel_id, payloads=[sealed], payload_hashes=[payload_hash(sealed)]
    )
    return _query(P.PushRequest, batch, party, tweak, key="batch")


def _exchange(party: Party, world: World, tweak: Tweak) -> replica_pb2.ExchangeRequest:
    message = replica_pb2.ReplicaMessage(state_request=replica_pb2.StateRequest(from_sequence=0))
    tweak(message)
    raw = message.SerializeToString()
    signed_message = replica_pb2.SignedReplicaMessage(
        payload=raw, replica=world.replica_index, signature=party.signer.sign(raw)
    )
    return replica_pb2.ExchangeRequest(channel_id=world.cluster_id, messages=[signed_message])


def _flow(cls: type[Message], party: Party, tweak: Tweak, **fields: Any) -> Message:
    return _query(cls, F.FlowMessage(**fields), party, tweak, key="message")


def _run_flow(party: Party, world: World, tweak: Tweak) -> V.RunFlowRequest:
    issue = V.IssueFlow(contract="cash", owner=world.owner, asset="JPY", amount=1)
    command = V.FlowCommand(issue=issue, notary=world.notary)
    return _query(V.RunFlowRequest, command, party, tweak, key="command")


Build = Callable[[Party, World, Tweak], list[Message]]
CH = "trades"
ORG2 = ["Org2"]

GENERATORS: dict[str, Build] = {
    # GatewayService
    "/dltmw.v1.GatewayService/Evaluate": lambda p, w, t: [
        G.EvaluateRequest(signed_proposal=proposal(p, w, t))
    ],
    "/dltmw.v1.GatewayService/Endorse": lambda p, w, t: [
        G.EndorseRequest(signed_proposal=proposal(p, w, t, "put", (b"fz", b"v")))
    ],
    "/dltmw.v1.GatewayService/Submit": lambda p, w, t: [
        G.SubmitRequest(envelope=envelope(p, w, t))
    ],
    "/dltmw.v1.GatewayService/CommitStatus": lambda p, w, t: [
        _query(G.CommitStatusRequest, G.CommitStatusQuery(channel_id=CH, tx_id=w.tx_id), p, t)
    ],
    "/dltmw.v1.GatewayService/Events": lambda p, w, t: [
        _query(G.EventsRequest, G.EventsQuery(channel_id=CH), p, t)
    ],
    "/dltmw.v1.GatewayService/Transact": lambda p, w, t: [
        G.TransactRequest(
            endorse=[
                G.EndorseItem(
                    ref=1,
                    request=G.EndorseRequest(
                        signed_proposal=proposal(p, w, t, "put", (b"t", b"v"))
                    ),
                )
            ],
            submit=[G.SubmitItem(ref=2, request=G.SubmitRequest(envelope=envelope(p, w, t)))],
        )
    ],
    # EndorserService
    "/dltmw.v1.EndorserService/ProcessProposal": lambda p, w, t: [
        E.ProcessProposalRequest(signed_proposal=proposal(p, w, t))
    ],
    "/dltmw.v1.EndorserService/ProcessProposals": lambda p, w, t: [
        E.ProcessProposalsRequest(signed_proposals=[proposal(p, w, t), proposal(p, w, t)])
    ],
    # CrossChainService (unsigned queries: the caller's TLS organisation is checked)
    "/dltmw.v1.CrossChainService/GetCommitProof": lambda p, w, t: [
        X.GetCommitProofRequest(channel_id=CH, tx_id=w.tx_id)
    ],
    "/dltmw.v1.CrossChainService/GetConfigBlocks": lambda p, w, t: [
        X.GetConfigBlocksRequest(channel_id=CH, from_block=0)
    ],
    # OrdererService
    "/dltmw.v1.OrdererService/Broadcast": lambda p, w, t: [
        O.BroadcastRequest(envelopes=[envelope(p, w, t).SerializeToString()])
    ],
    "/dltmw.v1.OrdererService/Deliver": lambda p, w, t: [
        _query(
            O.DeliverRequest,
            O.SeekInfo(channel_id=CH, start_block=0, stop_block=1),
            p,
            t,
            key="seek_info",
        )
    ],
    # AdminService
    "/dltmw.v1.AdminService/JoinChannel": lambda p, w, t: [
        _query(A.JoinChannelRequest, A.JoinChannelCommand(config_block=w.genesis), p, t, "command")
    ],
    "/dltmw.v1.AdminService/NodeStatus": lambda p, w, t: [
        _query(A.NodeStatusRequest, A.NodeStatusQuery(), p, t)
    ],
    "/dltmw.v1.AdminService/Audit": lambda p, w, t: [
        _query(
            A.AuditRequest,
            A.AuditQuery(channel_id=CH, block_numbers=[0, 1], recompute=True),
            p,
            t,
        )
    ],
    "/dltmw.v1.AdminService/InstallContract": lambda p, w, t: [
        _query(
            A.InstallContractRequest,
            A.InstallContractCommand(package=builtin_package("kv")),
            p,
            t,
            "command",
        )
    ],
    "/dltmw.v1.AdminService/ListInstalledContracts": lambda p, w, t: [
        _query(A.ListInstalledContractsRequest, A.NodeStatusQuery(), p, t)
    ],
    # PrivacyManagerService
    "/dltmw.v1.PrivacyManagerService/Send": lambda p, w, t: [
        _query(
            P.SendRequest,
            P.SendBody(channel_id=CH, payload=b"fuzz", recipient_organizations=["Org2"]),
            p,
            t,
            key="body",
        )
    ],
    "/dltmw.v1.PrivacyManagerService/SendBatch": lambda p, w, t: [
        _query(
            P.SendBatchRequest,
            P.SendBatchBody(
                channel_id=CH, items=[P.SendItem(payload=b"f", recipient_organizations=["Org2"])]
            ),
            p,
            t,
            key="body",
        )
    ],
    "/dltmw.v1.PrivacyManagerService/AddRecipients": lambda p, w, t: [
        _query(
            P.AddRecipientsRequest,
            P.AddRecipientsBody(
                channel_id=CH, payload_hash=w.payload_hash, recipient_organizations=["Org2"]
            ),
            p,
            t,
            key="body",
        )
    ],
    "/dltmw.v1.PrivacyManagerService/Push": lambda p, w, t: [_push(p, w, t)],
    "/dltmw.v1.PrivacyManagerService/Receive": lambda p, w, t: [
        _query(P.ReceiveRequest, P.ReceiveQuery(channel_id=CH, payload_hash=w.payload_hash), p, t)
    ],
    "/dltmw.v1.PrivacyManagerService/Resend": lambda p, w, t: [
        _query(P.ResendRequest, P.ResendQuery(channel_id=CH), p, t)
    ],
    "/dltmw.v1.PrivacyManagerService/PrivateStateHash": lambda p, w, t: [
        _query(
            P.PrivateStateHashRequest,
            P.PrivateStateHashQuery(channel_id=CH, payload_hash=w.payload_hash),
            p,
            t,
        )
    ],
    "/dltmw.v1.PrivacyManagerService/ValidatePrivateState": lambda p, w, t: [
        _query(
            P.ValidatePrivateStateRequest,
            P.ValidatePrivateStateQuery(channel_id=CH, payload_hash=w.payload_hash),
            p,
            t,
        )
    ],
    "/dltmw.v1.PrivacyManagerService/Recover": lambda p, w, t: [
        _query(P.RecoverRequest, P.RecoverQuery(channel_id=CH), p, t)
    ],
    "/dltmw.v1.PrivacyManagerService/PendingDeliveries": lambda p, w, t: [
        _query(
            P.PendingDeliveriesRequest,
            P.PendingDeliveriesQuery(channel_id=CH, after_payload_hash=w.payload_hash),
            p,
            t,
        )
    ],
    "/dltmw.v1.PrivacyManagerService/AbandonDelivery": lambda p, w, t: [
        _query(
            P.AbandonDeliveryRequest,
            P.AbandonDeliveryQuery(channel_id=CH, payload_hash=w.payload_hash),
            p,
            t,
        )
    ],
    "/dltmw.v1.PrivacyManagerService/CollectAgreements": lambda p, w, t: [
        _query(
            PA.CollectAgreementsRequest,
            PA.CollectAgreementsQuery(channel_id=CH, payload_hash=w.payload_hash, tx_id="0" * 64),
            p,
            t,
        )
    ],
    "/dltmw.v1.PrivacyManagerService/Agree": lambda p, w, t: [
        _query(
            PA.AgreeRequest,
            PA.AgreeQuery(
                channel_id=CH,
                payload_hash=w.payload_hash,
                tx_id="0" * 64,
                pre_state_hash=bytes(32),
                delta_hash=bytes(32),
            ),
            p,
            t,
        )
    ],
    "/dltmw.v1.PrivacyManagerService/CollectAgreementsBatch": lambda p, w, t: [
        _query(
            PA.CollectAgreementsBatchRequest,
            PA.CollectAgreementsBatchQuery(
                channel_id=CH,
                queries=[PA.CollectAgreementsQuery(payload_hash=w.payload_hash, tx_id="0" * 64)],
            ),
            p,
            t,
        )
    ],
    "/dltmw.v1.PrivacyManagerService/AgreeBatch": lambda p, w, t: [
        _query(
            PA.AgreeBatchRequest,
            PA.AgreeBatchQuery(
                channel_id=CH,
                queries=[
                    PA.AgreeQuery(
                        payload_hash=w.payload_hash,
                        tx_id="0" * 64,
                        pre_state_hash=bytes(32),
                        delta_hash=bytes(32),
                    )
                ],
            ),
            p,
            t,
        )
    ],
    # FlowService (node to node)
    "/dltmw.v1.FlowService/ProposeTransaction": lambda p, w, t: [
        _flow(F.ProposeTransactionRequest, p, t, signed_transaction=w.signed_utxo_tx)
    ],
    "/dltmw.v1.FlowService/OfferInputs": lambda p, w, t: [
        _flow(
            F.OfferInputsRequest,
            p,
            t,
            terms=utxo_pb2.DvpTerms(
                buyer=w.owner,
                seller=p.signer.identity_bytes,
                isin="JP1",
                quantity=1,
                currency="JPY",
                amount=1,
            ),
        )
    ],
    "/dltmw.v1.FlowService/FetchTransaction": lambda p, w, t: [
        _flow(F.FetchTransactionRequest, p, t, tx_id=w.utxo_tx_id)
    ],
    "/dltmw.v1.FlowService/RecordTransaction": lambda p, w, t: [
        _flow(F.RecordTransactionRequest, p, t, signed_transaction=w.signed_utxo_tx)
    ],
    # VaultService (client to its own node)
    "/dltmw.v1.VaultService/QueryStates": lambda p, w, t: [
        _query(V.QueryStatesRequest, V.VaultQuery(contract="cash"), p, t)
    ],
    "/dltmw.v1.VaultService/RunFlow": lambda p, w, t: [_run_flow(p, w, t)],
    # VaultRecoveryService (node to node; admin)
    "/dltmw.v1.VaultRecoveryService/ListTransactions": lambda p, w, t: [
        _query(VR.ListTransactionsRequest, VR.TransactionPageQuery(page_max=8), p, t)
    ],
    "/dltmw.v1.VaultRecoveryService/RecoverVault": lambda p, w, t: [
        _query(VR.RecoverVaultRequest, VR.RecoverVaultCommand(), p, t, key="command")
    ],
    # NotaryService
    "/dltmw.v1.NotaryService/Notarise": lambda p, w, t: [
        notary_service_pb2.NotariseRequest(request=_utxo_request(p, w, t))
    ],
    "/dltmw.v1.NotaryService/NotariseStream": lambda p, w, t: [
        notary_service_pb2.NotariseStreamRequest(
            requests=[_utxo_request(p, w, t), _utxo_request(p, w, t)]
        )
    ],
    # ReplicaService
    "/dltmw.v1.ReplicaService/Exchange": lambda p, w, t: [_exchange(p, w, t)],
    "/dltmw.v1.ReplicaService/ExchangeStream": lambda p, w, t: [
        replica_pb2.ExchangeStreamRequest(batch=_exchange(p, w, t)),
        replica_pb2.ExchangeStreamRequest(batch=_exchange(p, w, t)),
    ],
    # standard services
    "/grpc.health.v1.Health/Check": lambda p, w, t: [_tweaked(health_pb2.HealthCheckRequest(), t)],
    "/grpc.health.v1.Health/Watch": lambda p, w, t: [_tweaked(health_pb2.HealthCheckRequest(), t)],
    "/grpc.health.v1.Health/List": lambda p, w, t: [_tweaked(health_pb2.HealthListRequest(), t)],
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": lambda p, w, t: [
        _tweaked(reflection_pb2.ServerReflectionRequest(list_services=""), t)
    ],
    # (v1 is the same message under another package name: same bytes, see dltmw/rpc/reflection.py)
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": lambda p, w, t: [
        _tweaked(reflection_pb2.ServerReflectionRequest(list_services=""), t)
    ],
}


def _tweaked(message: Message, tweak: Tweak) -> Message:
    tweak(message)
    return message


# --- mutations ---------------------------------------------------------------------------------

BAD_TIMESTAMPS = [
    (2**62, 0),
    (-(2**62), 0),
    (253_402_300_800, 0),  # 10000-01-01
    (-62_135_596_801, 0),  # before 0001-01-01
    (0, -1),
    (0, 1_000_000_000),
    (1_700_000_000, 2**31 - 1),
]
INTS = {
    "int32": [0, -1, 1, 2**31 - 1, -(2**31)],
    "int64": [0, -1, 1, 2**63 - 1, -(2**63), 2**62],
    "uint32": [0, 1, 2**32 - 1, 2**31],
    "uint64": [0, 1, 2**64 - 1, 2**63, 2**62],
}
TYPE_INT = {
    1: None, 2: None,  # double, float: not used
    3: "int64", 4: "uint64", 5: "int32", 6: "uint64", 7: "uint32", 13: "uint32",
    15: "int32", 16: "int64", 17: "int32", 18: "int64",
}  # fmt: skip
T_BOOL, T_STRING, T_MESSAGE, T_BYTES, T_ENUM = 8, 9, 11, 12, 14


def timestamps_of(message: Message, depth: int = 0) -> list[timestamp_pb2.Timestamp]:
    """Every Timestamp field of `message` (set or not), to depth 3."""
    out: list[timestamp_pb2.Timestamp] = []
    if depth > 3:
        return out
    for f in message.DESCRIPTOR.fields:
        if f.type != T_MESSAGE or f.is_repeated:
            continue
        if f.message_type.full_name == "google.protobuf.Timestamp":
            out.append(getattr(message, f.name))
        else:
            out.extend(timestamps_of(getattr(message, f.name), depth + 1))
    return out


def bad_timestamp(rng: random.Random) -> Tweak:
    """Tweak: every Timestamp of the body gets one out-of-range value (or, without one, fields)."""

    def tweak(message: Message) -> None:
        stamps = timestamps_of(message)
        if not stamps:
            mutate_fields(message, rng)
            return
        seconds, nanos = rng.choice(BAD_TIMESTAMPS)
        for ts in stamps:
            ts.seconds, ts.nanos = seconds, nanos

    return tweak


def field_tweak(rng: random.Random) -> Tweak:
    """Tweak: a few random field mutations."""

    def tweak(message: Message) -> None:
        for _ in range(rng.randint(1, 3)):
            mutate_fields(message, rng)

    return tweak


def _value(f: Any, rng: random.Random) -> Any:
    kind = TYPE_INT.get(f.type)
    if kind is not None:
        return rng.choice(INTS[kind])
    if f.type == T_BOOL:
        return rng.random() < 0.5
    if f.type == T_ENUM:
        return rng.choice([0, 1, 2, 7, 99, 12345, -1])
    if f.type == T_STRING:
        return rng.choice(["", "x", "trades", "\u00e9\u4e2d", "x" * rng.choice([100, 5000])])
    if f.type == T_BYTES:
        return rng.choice(
            [b"", os.urandom(rng.randint(1, 64)), b"\x00" * rng.choice([32, 1000, 70_000])]
        )
    return None


def mutate_fields(message: Message, rng: random.Random, depth: int = 0) -> None:
    """One random mutation of one (possibly nested) field: an extreme or random value, a huge or
    repeated value, an out-of-range timestamp or enum, or a cleared field."""
    fields = list(message.DESCRIPTOR.fields)
    if not fields:
        return
    f = rng.choice(fields)
    if f.type == T_MESSAGE:
        sub = getattr(message, f.name)
        if f.is_repeated:
            if rng.random() < 0.3:
                message.ClearField(f.name)
            else:
                for _ in range(rng.choice([1, 2, 50, 1001])):
                    sub.add()
            return
        if f.message_type.full_name == "google.protobuf.Timestamp":
            sub.seconds, sub.nanos = rng.choice(BAD_TIMESTAMPS)
        elif rng.random() < 0.2 or depth > 3:
            message.ClearField(f.name)
        else:
            mutate_fields(sub, rng, depth + 1)
            if not sub.ListFields():
                sub.SetInParent()
        return
    value = _value(f, rng)
    if value is None:
        return
    if f.is_repeated:
        entries = getattr(message, f.name)
        if rng.random() < 0.3:
            message.ClearField(f.name)
        else:
            entries.extend([value] * rng.choice([1, 2, 100, 1001]))
    elif f.containing_oneof is not None and rng.random() < 0.2:
        message.ClearField(f.containing_oneof.name)
    else:
        setattr(message, f.name, value)


def mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    """Bit flips, truncation, insertion, duplication or emptiness of serialised bytes."""
    choice = rng.randrange(6)
    data = bytearray(raw)
    if choice == 0 and data:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif choice == 1:
        data = data[: rng.randrange(len(data) + 1)]
    elif choice == 2:
        i = rng.randrange(len(data) + 1)
        data[i:i] = os.urandom(rng.randint(1, 16))
    elif choice == 3:
        data = data * rng.randint(2, 4)  # repeated fields multiply, singular ones are replaced
    elif choice == 4:
        data = bytearray()
    else:
        data = bytearray(os.urandom(len(data)))
    return bytes(data)


def random_bytes(rng: random.Random) -> bytes:
    """Noise: mostly short, sometimes large."""
    size = rng.choice([0, 1, 2, 7, 50, 300, 5000, 70_000])
    return os.urandom(size)


@dataclass(frozen=True)
class Request:
    """One fuzzed call: the serialised request messages and how they were made."""

    messages: list[bytes]
    strategy: str


STRATEGIES = ("random-bytes", "byte-mutation", "outer-fields", "body-fields", "timestamps", "valid")


def fuzzed(path: str, party: Party, world: World, rng: random.Random, strategy: str) -> Request:
    """A request for `path` made with `strategy` (one of STRATEGIES)."""
    build = GENERATORS[path]
    if strategy == "random-bytes":
        return Request([random_bytes(rng) for _ in range(rng.randint(1, 3))], strategy)
    if strategy in ("body-fields", "timestamps"):
        tweak = field_tweak(rng) if strategy == "body-fields" else bad_timestamp(rng)
        return Request([m.SerializeToString() for m in build(party, world, tweak)], strategy)
    messages = build(party, world, no_tweak)
    if strategy == "outer-fields":
        for m in messages:
            mutate_fields(m, rng)
        return Request([m.SerializeToString() for m in messages], strategy)
    raws = [m.SerializeToString() for m in messages]
    if strategy == "byte-mutation":
        return Request([mutate_bytes(r, rng) for r in raws], strategy)
    return Request(raws, strategy)


def load_push_keys(net: Path, sender: str, recipient: str) -> tuple[PrivacyKey, bytes]:
    """(privacy key of `sender`, privacy public key of `recipient`) from their node files."""
    key = load_privacy_key((net / "nodes" / sender / "privacy.key").read_bytes())
    other = load_privacy_key((net / "nodes" / recipient / "privacy.key").read_bytes())
    return key, other.public_key
