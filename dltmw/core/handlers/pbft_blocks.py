"""Turning decided PBFT-lite batches into blocks that carry 2f+1 orderer signatures.

Block number = decided sequence (block 0 is the config block; a null batch becomes an empty
block), so every correct replica builds the same block at every number and the hash chain is
fixed by the agreed order. After executing sequence s a replica builds block s, signs its hash
with its identity and sends the signature to the other replicas — or, in view 0, it built and
signed the block already when it prepared s and the signature went in its Commit
(`pbft_speculative.py`); a signature counts only if it is over the hash of the block built
here from the decided slot. A block is committed (and
served by Deliver) once it holds 2f+1 valid signatures of distinct replicas over its hash —
what peers check before committing it. `BlockAssembler` is pure bookkeeping; the PBFT
orderer's core (`pbft_orderer.py`) owns one.

Signers are named in the block (`BlockMetadata.signatures[].signer`) as `PendingBlock.names`
says, fixed when the block is built: on a channel with `identity_references` each replica's
~40-byte reference under the config in force before that block (`light_client.block_signer`,
what every peer checks the block against), so a config update that turns the flag on takes
effect at the same height on every replica; else (and with no names given) its identity in
full. Replicas still sign and check each other's signatures by index (`BlockSignature.replica`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dltmw.core.block import block_hash, make_block
from dltmw.core.errors import InvariantViolation
from dltmw.core.quorum import quorum_of
from dltmw.v1 import block_pb2, config_pb2, replica_pb2

Verify = Callable[[int, bytes, bytes], bool]


def signatures_needed(config: config_pb2.ChannelConfig) -> int:
    """Orderer signatures a peer requires on a block: the replica quorum of the config's orderer
    list for PBFT-lite (2f+1 for n = 3f+1; `core/quorum.py`), else 1. Peers call it with
    the config in force at the block's height, so the block after a config block that changes
    the replica set needs a quorum of the NEW set."""
    if config.ordering == config_pb2.ORDERING_TYPE_PBFT and len(config.orderers) >= 4:
        return quorum_of(len(config.orderers))
    if config.ordering == config_pb2.ORDERING_TYPE_PBFT:
        return 2 * ((len(config.orderers) - 1) // 3) + 1
    return 1


EARLY_MAX = 64


@dataclass
class PendingBlock:
    """A built block waiting for signatures."""

    block: block_pb2.Block
    digest: bytes
    signatures: dict[int, bytes] = field(default_factory=dict)
    ids: tuple[bytes, ...] = ()  # the envelopes' request ids when the builder had them
    names: tuple[bytes, ...] = ()  # signer of replica i in the block (): `identities[i]`


class BlockAssembler:
    """Builds blocks in order and collects their signatures (pure bookkeeping, no I/O)."""

    def __init__(
        self, channel_id: str, me: int, quorum: int, identities: Sequence[bytes], verify: Verify
    ) -> None:
        self.channel_id = channel_id
        self.me = me
        self.quorum = quorum
        self.identities = list(identities)
        self.verify = verify
        self.pending: dict[int, PendingBlock] = {}
        self._early: dict[int, dict[int, tuple[bytes, bytes]]] = {}

    def build(
        self,
        number: int,
        requests: Sequence[bytes],
        height: int,
        last_hash: bytes,
        ids: tuple[bytes, ...] = (),
        built: tuple[block_pb2.Block, bytes] | None = None,
        names: tuple[bytes, ...] = (),
    ) -> PendingBlock | None:
        """Block `number` from a decided batch (None if the ledger already has it); `ids`: the
        requests' ids (SHA-256) when known, which are also the block's content digests;
        `built`: (block, hash) made of exactly these requests before (`pbft_speculative`),
        used when it continues the chain here; `names`: how the block names each replica that
        signs it (module docstring; (): by its identity)."""
        if number < height or number in self.pending:
            return None
        if number == height:
            previous = last_hash
        elif number - 1 in self.pending:
            previous = self.pending[number - 1].digest
        else:
            raise InvariantViolation(f"block {number} built before block {number - 1}")
        if built is not None and built[0].header.previous_hash == previous:
            pending = PendingBlock(built[0], built[1], ids=ids, names=names)
        else:
            block = make_block(self.channel_id, number, previous, list(requests), ids)
            pending = PendingBlock(block, block_hash(block), ids=ids, names=names)
        self.pending[number] = pending
        for replica, (digest, signature) in self._early.pop(number, {}).items():
            self._add(pending, replica, digest, signature)
        return pending

    def add_signature(self, sig: replica_pb2.BlockSignature, height: int) -> bool:
        """Record a peer's block signature; False if it is invalid or out of range."""
        if sig.replica >= len(self.identities) or sig.replica == self.me:
            return False
        pending = self.pending.get(sig.number)
        if pending is not None:
            return self._add(pending, sig.replica, sig.block_hash, sig.signature)
        if height <= sig.number <= height + EARLY_MAX:
            self._early.setdefault(sig.number, {})[sig.replica] = (sig.block_hash, sig.signature)
            return True
        return False

    def _add(self, pending: PendingBlock, replica: int, digest: bytes, signature: bytes) -> bool:
        if digest != pending.digest or not self.verify(replica, digest, signature):
            return False
        pending.signatures[replica] = signature
        return True

    def forget_below(self, height: int) -> None:
        """Drop blocks and early signatures below `height` (committed from fetched blocks)."""
        self.pending = {n: p for n, p in self.pending.items() if n >= height}
        self._early = {n: s for n, s in self._early.items() if n >= height}

    def complete(self, height: int) -> PendingBlock | None:
        """The next block to commit, if it has a quorum of signatures (removed from pending)."""
        pending = self.pending.get(height)
        if pending is None or len(pending.signatures) < self.quorum:
            return None
        del self.pending[height]
        names = pending.names or self.identities
        for replica in sorted(pending.signatures):
            pending.block.metadata.signatures.add(
                signer=names[replica], signature=pending.signatures[replica]
            )
        return pending
