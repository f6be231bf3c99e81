"""What a peer serves to other channels: commit proofs and its channel's config blocks.

A proof is built from the block as this peer stored it (header, the orderer signatures it
checked before committing, the envelopes) and carries this peer's own attestation of the code
it recorded (`core/commit_proof.attest`): a peer vouches only for what it committed. A client
asks peers of several organisations and merges their attestations (`client/crosschain.py`).

Config blocks are found by scanning (block 0, then blocks of one CONFIG_UPDATE envelope whose
recorded code is VALID): no index is kept, so each call scans at most `SCAN_BLOCKS_MAX` blocks,
`SCAN_CHUNK` at a time, and says where it stopped; light clients are few and config blocks rare.
"""

from __future__ import annotations

from dataclasses import dataclass

from dltmw.core.commit_proof import attest, build_proof
from dltmw.core.config_update import is_config_update
from dltmw.core.errors import ClientError
from dltmw.core.identity import SigningIdentity
from dltmw.ledger.backend import Ledger
from dltmw.v1 import block_pb2, crosschain_pb2, errors_pb2, transaction_pb2

SCAN_BLOCKS_MAX = 2_000
SCAN_CHUNK = 100
CONFIG_BLOCKS_MAX = 32  # per answer: the caller asks again from `scanned_to`


@dataclass(frozen=True)
class ConfigBlocks:
    """Config blocks found in [from_block, scanned_to), and the height when scanned."""

    blocks: list[block_pb2.Block]
    scanned_to: int
    height: int


async def commit_proof(
    ledger: Ledger, signer: SigningIdentity, tx_id: str
) -> crosschain_pb2.CommitProof:
    """The proof of `tx_id` as committed here, with this peer's attestation."""
    record = await ledger.tx_record(tx_id)
    if record is None:
        raise ClientError(
            errors_pb2.ERROR_REASON_PROOF_UNAVAILABLE, f"transaction {tx_id} is not committed here"
        )
    block = await ledger.block(record.block_number)
    if block is None or not block.header.tx_root:
        raise ClientError(
            errors_pb2.ERROR_REASON_PROOF_UNAVAILABLE,
            f"block {record.block_number} was made before tx_root existed: no inclusion path",
        )
    proof = build_proof(block, record.tx_index, record.code)
    proof.attestations.append(attest(signer, block, record.tx_index, record.code))
    return proof


def _applies_config(block: block_pb2.Block) -> bool:
    if block.header.number == 0:
        return True
    codes = block.metadata.validation_codes
    return (
        len(block.data.envelopes) == 1
        and len(codes) == 1
        and codes[0] == transaction_pb2.TX_VALIDATION_CODE_VALID
        and is_config_update(block.data.envelopes[0])
    )


async def config_blocks(ledger: Ledger, from_block: int) -> ConfigBlocks:
    """The blocks that applied a config, from `from_block` on (bounded scan)."""
    height = ledger.height
    stop = min(height, from_block + SCAN_BLOCKS_MAX)
    found: list[block_pb2.Block] = []
    at = from_block
    while at < stop and len(found) < CONFIG_BLOCKS_MAX:
        chunk = await ledger.blocks(at, min(stop, at + SCAN_CHUNK))
        if not chunk:
            break
        for block in chunk:
            at = block.header.number + 1
            if _applies_config(block):
                found.append(block)
                if len(found) >= CONFIG_BLOCKS_MAX:
                    break
    return ConfigBlocks(found, max(at, from_block), height)
