"""Cheap deterministic signatures for simulation: a keyed BLAKE2b per replica and per client.

Forging needs the secret, so a byzantine replica can only sign as itself (twins share one
secret on purpose); verification is a constant-time compare. Real nodes use ECDSA identities
(`dltmw.core.identity`) through the same sign/verify callables.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

MAC_BYTES = 16


def secret(kind: str, index: int) -> bytes:
    """The simulation secret of replica or client `index`."""
    return hashlib.sha256(f"dltmw-sim-{kind}-{index}".encode()).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed hash of `data`."""
    return hashlib.blake2b(data, key=key, digest_size=MAC_BYTES).digest()


class Keys:
    """Signers and verifiers of n replicas and the request check of the clients."""

    def __init__(self, n: int, clients: int) -> None:
        self.replica_secrets = [secret("replica", i) for i in range(n)]
        self.client_secrets = [secret("client", c) for c in range(clients)]

    def signer(self, replica: int) -> Callable[[bytes], bytes]:
        """sign(payload) for `replica`."""
        key = self.replica_secrets[replica]
        return lambda payload: mac(key, payload)

    def verify(self, replica: int, payload: bytes, signature: bytes) -> bool:
        """Does `signature` verify as `replica`'s over `payload`?"""
        if not 0 <= replica < len(self.replica_secrets):
            return False
        return hmac.compare_digest(mac(self.replica_secrets[replica], payload), signature)

    def make_request(self, client: int, counter: int, lone: bool = False) -> bytes:
        """A client request: readable name, then the client's MAC over it; a lone one (the
        stand-in for a config update, ordered in a batch of its own) has a name ending in "!"."""
        name = f"c{client}.{counter}{'!' if lone else ''}".encode()
        return name + b"|" + mac(self.client_secrets[client], name)

    @staticmethod
    def lone(request: bytes) -> bool:
        """Must `request` be ordered alone (the replicas' `alone` predicate)?"""
        return request.partition(b"|")[0].endswith(b"!")

    def request_ok(self, request: bytes) -> bool:
        """Was `request` made by one of the clients (validity: no invented requests)?"""
        name, sep, tag = request.partition(b"|")
        if not sep or not name.startswith(b"c"):
            return False
        client = name[1:].split(b".")[0]
        if not client.isdigit() or int(client) >= len(self.client_secrets):
            return False
        return hmac.compare_digest(mac(self.client_secrets[int(client)], name), tag)


def request_name(request: bytes) -> str:
    """Readable name of a simulated request (for traces)."""
    return request.partition(b"|")[0].decode(errors="replace")
