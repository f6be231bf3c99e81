"""Signed PBFT-lite messages for unit tests (simulation keys: cheap, deterministic)."""

from __future__ import annotations

from dltmw.core.pbft import Envelope, batch_digest
from dltmw.sim.keys import Keys
from dltmw.v1 import replica_pb2

KEYS = Keys(4, 1)


def signed(replica: int, message: replica_pb2.ReplicaMessage) -> Envelope:
    payload = message.SerializeToString()
    return Envelope(payload=payload, replica=replica, signature=KEYS.signer(replica)(payload))


def pre_prepare(view: int, seq: int, requests: list[bytes], by: int | None = None) -> Envelope:
    pp = replica_pb2.PrePrepare(
        view=view, sequence=seq, digest=batch_digest(requests), requests=requests
    )
    return signed(view % 4 if by is None else by, replica_pb2.ReplicaMessage(pre_prepare=pp))


def vote(kind: str, replica: int, view: int, seq: int, digest: bytes) -> Envelope:
    message = replica_pb2.ReplicaMessage()
    getattr(message, kind).CopyFrom(replica_pb2.Vote(view=view, sequence=seq, digest=digest))
    return signed(replica, message)


def garbled(envelope: Envelope) -> Envelope:
    sig = bytes([envelope.signature[0] ^ 1]) + envelope.signature[1:]
    return Envelope(payload=envelope.payload, replica=envelope.replica, signature=sig)


class CountingLone:
    """`KEYS.lone` that counts its calls (`alone` parses a request's header: how often a
    replica judges it is a cost the tests bound)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: bytes) -> bool:
        self.calls += 1
        return KEYS.lone(request)
