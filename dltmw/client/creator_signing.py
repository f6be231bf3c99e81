"""The client's signatures over its proposals and envelopes: alone, or once per Transact request.

Why: the client's signatures are 2 of the 4 a transaction costs, and what the nodes verify of
them 4 of its 6 verifications (benchmarks/RESULTS.md, branch kvcpu). A client under load sends
many proposals and envelopes in each Transact request (`client/pipeline.py`), so on channels
that take them (`ChannelConfig.creator_batches`) it leaves their signatures to the moment the
request is packed and signs ONE Merkle root over the request's proposals and one over its
envelopes (`core/creator_batch.py`). A request carrying one item of a kind signs it alone.

Private transactions' envelopes likewise on channels with
`ChannelConfig.private_creator_batches` (a flag of their own: the node's rule per kind,
`creator_batch.takes_proofs`); the client keeps one set of channels per kind.

Which channels: the client reads every channel's genesis config when it loads its files
(`client/files.py`), and that config's `creator_batches` is its first guess. A config update may
turn the flag off later: a node then refuses the proofs with ERROR_REASON_CREATOR_BATCH_REFUSED
before anything was endorsed or ordered, and `GatewayClient` forgets the channel here
(`signs_alone`) and sends the item again signed alone. A flag turned on later only costs the
saving until the client reconnects. The nodes' rule, not this guess, decides what is valid.

A client that reads no genesis block (the SDK `Client`: its profile is independent of the init
layout) starts `presuming`: every channel takes batch proofs until one refuses them, and that
channel alone is then signed alone (`signs_alone`). A refusal costs one extra round trip for the
items of the request that carried the proof, once per channel and signer (the SDK shares one
signer among all the gateway connections of a `Client`, so a fail-over does not re-learn it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from dltmw.core import creator_batch
from dltmw.core.identity import SigningIdentity
from dltmw.v1 import common_pb2, gateway_service_pb2, proposal_pb2

G = gateway_service_pb2
T = TypeVar("T")


class CreatorSigner:
    """One client identity's signing of proposals and envelopes, per channel's setting."""

    def __init__(
        self,
        signer: SigningIdentity,
        batched_channels: Iterable[str] = (),
        private_batched_channels: Iterable[str] = (),
        presuming: bool = False,
    ) -> None:
        """`presuming`: endorser transactions' items of any channel not refused yet are batched
        (module docstring); private envelopes still only on `private_batched_channels`."""
        self.signer = signer
        self._batched = set(batched_channels)
        self._private_batched = set(private_batched_channels)
        self._presuming = presuming
        self._refused: set[str] = set()  # channels that refused a proof (presuming)
        self.batches = 0  # signatures made over a root of several items
        self.batched_items = 0  # items those signatures cover (mean per batch: the ratio)

    def batches_on(self, channel_id: str, private: bool = False) -> bool:
        """Whether items of `channel_id` are left unsigned for the request's one signature
        (`private`: a private transaction's envelope, else an endorser transaction's items)."""
        if private:
            return channel_id in self._private_batched
        if self._presuming:
            return channel_id not in self._refused
        return channel_id in self._batched

    def signs_alone(self, channel_id: str, private: bool = False) -> None:
        """The channel refused a batch proof: sign its items (of that kind) alone from now on."""
        if not private:
            self._refused.add(channel_id)
        (self._private_batched if private else self._batched).discard(channel_id)

    def proposal(self, proposal_bytes: bytes) -> proposal_pb2.SignedProposal:
        """A proposal signed alone."""
        return proposal_pb2.SignedProposal(
            proposal_bytes=proposal_bytes, signature=self.signer.sign(proposal_bytes)
        )

    def envelope(self, payload: bytes) -> common_pb2.Envelope:
        """An envelope signed alone."""
        return common_pb2.Envelope(payload=payload, signature=self.signer.sign(payload))

    def sign_request(
        self, request: G.TransactRequest, unsigned: Callable[[tuple[str, int]], bool]
    ) -> None:
        """Sign, in place, the items of `request` left unsigned (`unsigned(("e"|"s", ref))`):
        one signature over its proposals, one over its envelopes."""
        endorse = [i for i in request.endorse if unsigned(("e", i.ref))]
        submit = [i for i in request.submit if unsigned(("s", i.ref))]
        proposals = [i.request.signed_proposal for i in endorse]
        signed = self._sign(creator_batch.sign_proposals, [p.proposal_bytes for p in proposals])
        for target, done in zip(proposals, signed, strict=True):
            target.CopyFrom(done)
        envelopes = [i.request.envelope for i in submit]
        sealed = self._sign(creator_batch.sign_envelopes, [e.payload for e in envelopes])
        for envelope, sealed_one in zip(envelopes, sealed, strict=True):
            envelope.CopyFrom(sealed_one)

    def _sign(
        self, sign: Callable[[SigningIdentity, Sequence[bytes]], list[T]], items: Sequence[bytes]
    ) -> list[T]:
        if len(items) > 1:
            self.batches += 1
            self.batched_items += len(items)
        return sign(self.signer, items)
