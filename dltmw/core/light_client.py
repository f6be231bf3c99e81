"""A light client of another channel: its config, tracked from config blocks only.

Why: a peer of channel B must judge a commit proof of channel A (core/commit_proof.py) without
trusting whoever hands it over and without holding A's ledger. What it needs is A's config at
the proof's height: who A's orderers are (whose signatures make a block), how many must sign,
which peers may attest validation codes. It starts from A's block 0 — the trust root, whose hash
B's members agree on out of band, as they agree on any channel's genesis — and takes A's config
blocks one by one, each checked exactly as A's own peers check it when it commits:

- the block is A's, later than the last config block taken, its data hash and tx_root match its
  one envelope, and it carries the orderer signatures A's config in force requires (solo: 1,
  PBFT-lite: 2f+1 of distinct configured orderers);
- its one envelope is a config update that `txcheck.check_transaction` finds VALID against the
  config in force (creator signature, sequence = current sequence, admin policy, resulting
  config): the very verdict every peer of A reaches for that block, because it is the same pure
  function of the same bytes and the same config.

The sequence rule makes the chain of configs gap-free: an update names the sequence it replaces,
so a client handed config 3 while it knows config 1 refuses it (it needs config 2 first). What it
cannot know is a config block it has not been shown yet; docs/cross-channel.md states that trust
assumption (the orderers of the latest config it knows do not sign a fork). Nothing here trusts
the sender: every input is checked against state the client built itself.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import DecodeError

from dltmw.core.block import block_hash, data_error
from dltmw.core.channel import ChannelView, ConfigError, channel_view
from dltmw.core.errors import ClientError, InvariantViolation
from dltmw.core.genesis import read_genesis
from dltmw.core.handlers.pbft_blocks import signatures_needed
from dltmw.core.identity import IdentityError
from dltmw.core.txcheck import check_transaction
from dltmw.v1 import block_pb2, config_pb2, crosschain_pb2, errors_pb2, transaction_pb2

R = errors_pb2
EPOCHS_MAX = 10_000  # config changes a client keeps: each is one verified ChannelView


class LightClientRejected(ClientError):
    """A config block that does not follow the config the client tracks."""

    def __init__(self, message: str) -> None:
        super().__init__(R.ERROR_REASON_LIGHT_CLIENT_REJECTED, message)


@dataclass(frozen=True)
class Epoch:
    """One config of the tracked channel and the blocks it governs: from `first_block` until the
    next epoch's first block. `config_block` is the block that applied it (0 for genesis)."""

    config_block: int
    view: ChannelView

    @property
    def first_block(self) -> int:
        """The first block ordered under this config (block 0 is self-signed under its own)."""
        return self.config_block + 1 if self.config_block else 0


@dataclass(frozen=True)
class LightClient:
    """Immutable: `advance` returns a new client."""

    genesis_hash: bytes
    epochs: tuple[Epoch, ...]

    @property
    def channel_id(self) -> str:
        """The tracked channel."""
        return self.epochs[0].view.channel_id

    @property
    def latest(self) -> Epoch:
        """The newest config known."""
        return self.epochs[-1]

    def view_at(self, block_number: int) -> ChannelView:
        """The config that governed block `block_number` as far as this client knows."""
        firsts = [e.first_block for e in self.epochs]
        return self.epochs[bisect.bisect_right(firsts, block_number) - 1].view


def track(genesis: block_pb2.Block) -> LightClient:
    """A client from the channel's block 0 (the caller has checked its hash is the agreed one)."""
    try:
        view = read_genesis(genesis)
    except ConfigError as exc:
        raise LightClientRejected(f"block 0: {exc}") from exc
    return LightClient(block_hash(genesis), (Epoch(0, view),))


def trusted_roots(config: config_pb2.ChannelConfig) -> tuple[tuple[str, bytes], ...]:
    """(channel id, block 0 hash) of each channel `config` trusts (`trusted_channels`, 160)."""
    return tuple((t.channel_id, t.genesis_hash) for t in config.trusted_channels)


def check_orderer_quorum(
    view: ChannelView,
    digest: bytes,
    signatures: Sequence[tuple[bytes, bytes]],
    at: datetime,
    remember: bool = True,
) -> tuple[int, int] | str:
    """(valid, needed) for `signatures` (signer, signature) over `digest`, or why one is bad.

    Every signature must be a valid one of a configured orderer: a proof is built from a block's
    metadata by an honest peer, so anything else is a forgery and is named as such. A signer
    that appears twice counts once, in full or by reference alike (on a channel with
    `identity_references` an orderer may sign as the reference the config resolves,
    core/identity.py). `remember=False`: the signatures are checked once here
    (`Membership.verify`), as a peer checks a delivered block's."""
    configured = {n.identity for n in view.config.orderers}
    membership = view.orderer_membership
    distinct: set[bytes] = set()
    for i, (signer, signature) in enumerate(signatures):
        orderer = signer if signer in configured else membership.resolved(signer)
        if orderer not in configured:
            return f"signature {i} is not by a configured orderer"
        try:
            membership.verify(signer, digest, signature, at, remember)
        except IdentityError as exc:
            return f"signature {i}: {exc}"
        distinct.add(orderer)
    return len(distinct), orderers_needed(view)


def block_signer(view: ChannelView, identity: bytes) -> bytes:
    """What an orderer whose identity is `identity` puts in `Signature.signer` of a block it
    signs under `view` (the config in force before that block, as every checker of the block
    holds it): its reference on a channel with `identity_references`, else `identity`."""
    return view.orderer_membership.reference_of(identity)


def orderers_needed(view: ChannelView) -> int:
    """Orderer signatures a block needs: 2f+1 of n = 3f+1 for PBFT-lite, else 1."""
    return signatures_needed(view.config)


def advance(client: LightClient, block: block_pb2.Block, at: datetime) -> LightClient:
    """The client after taking config block `block`, or LightClientRejected saying why not."""
    h = block.header
    latest = client.latest
    if h.channel_id != client.channel_id:
        raise LightClientRejected(f"block of channel {h.channel_id!r}, not {client.channel_id!r}")
    if h.number <= latest.config_block:
        raise LightClientRejected(
            f"block {h.number} is not after the last config block {latest.config_block}"
        )
    if len(client.epochs) >= EPOCHS_MAX:
        raise LightClientRejected(f"more than {EPOCHS_MAX} config changes tracked")
    envelopes = block.data.envelopes
    if len(envelopes) != 1:
        raise LightClientRejected(f"block {h.number} holds {len(envelopes)} envelopes, not 1")
    if data_error(block) is not None:
        raise LightClientRejected(f"block {h.number} header does not match its data")
    pairs = [(s.signer, s.signature) for s in block.metadata.signatures]
    counted = check_orderer_quorum(latest.view, block_hash(block), pairs, at)
    if isinstance(counted, str):
        raise LightClientRejected(f"block {h.number}: {counted}")
    if counted[0] < counted[1]:
        raise LightClientRejected(
            f"block {h.number} has {counted[0]} orderer signature(s), needs {counted[1]}"
        )
    checked = check_transaction(envelopes[0], latest.view)
    if checked.code != transaction_pb2.TX_VALIDATION_CODE_VALID or checked.config is None:
        name = transaction_pb2.TxValidationCode.Name(checked.code)  # type: ignore[arg-type]
        raise LightClientRejected(f"block {h.number} applies no config here ({name})")
    return LightClient(client.genesis_hash, (*client.epochs, Epoch(h.number, checked.config)))


def to_record(client: LightClient) -> bytes:
    """The client as bytes to store (`LightClientState`)."""
    return crosschain_pb2.LightClientState(
        genesis_hash=client.genesis_hash,
        configs=[
            crosschain_pb2.TrackedConfig(config_block=e.config_block, config=e.view.config)
            for e in client.epochs
        ],
    ).SerializeToString(deterministic=True)


def from_record(data: bytes) -> LightClient:
    """A client stored by `to_record` (it was verified before it was stored: the views are
    rebuilt, not verified again)."""
    try:
        state = crosschain_pb2.LightClientState.FromString(data)
        epochs = tuple(Epoch(c.config_block, channel_view(c.config)) for c in state.configs)
    except (DecodeError, ConfigError) as exc:
        raise InvariantViolation(f"stored light client does not load: {exc}") from exc
    if not epochs:
        raise InvariantViolation("stored light client has no config")
    return LightClient(state.genesis_hash, epochs)
