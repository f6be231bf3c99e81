"""The config block (block 0): building it and checking one that a node is handed.

Block 0 carries one CONFIG envelope whose data is the ChannelConfig. It is signed twice by an
orderer named in that config: the envelope (as its creator) and the block hash (as its orderer).
A node that joins a channel checks both, so the channel's trust roots come with a signature of
the ordering service they name. The builder takes nonce and time as arguments to stay pure.
"""

from __future__ import annotations

from datetime import datetime

from google.protobuf.message import DecodeError

from dltmw.core.block import block_hash, chain_error, make_block
from dltmw.core.channel import ChannelView, ConfigError, channel_view
from dltmw.core.hashing import ZERO_HASH, compute_tx_id
from dltmw.core.identity import IdentityError, SigningIdentity
from dltmw.core.timestamps import to_datetime
from dltmw.v1 import block_pb2, common_pb2, config_pb2


def make_genesis(
    config: config_pb2.ChannelConfig, orderer: SigningIdentity, nonce: bytes, at: datetime
) -> block_pb2.Block:
    """Block 0 of a channel, signed by `orderer` (who must be named in `config.orderers`)."""
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_CONFIG,
        channel_id=config.channel_id,
        tx_id=compute_tx_id(nonce, orderer.identity_bytes),
        creator=orderer.identity_bytes,
        nonce=nonce,
    )
    header.timestamp.FromDatetime(at)
    payload = common_pb2.Payload(
        header=header.SerializeToString(), data=config.SerializeToString()
    ).SerializeToString()
    envelope = common_pb2.Envelope(payload=payload, signature=orderer.sign(payload))
    block = make_block(config.channel_id, 0, ZERO_HASH, [envelope.SerializeToString()])
    block.metadata.signatures.add(
        signer=orderer.identity_bytes, signature=orderer.sign(block_hash(block))
    )
    return block


def genesis_tx_id(block: block_pb2.Block) -> str:
    """tx_id of the config envelope of block 0."""
    env = common_pb2.Envelope.FromString(block.data.envelopes[0])
    payload = common_pb2.Payload.FromString(env.payload)
    return common_pb2.Header.FromString(payload.header).tx_id


def read_genesis(block: block_pb2.Block) -> ChannelView:
    """Check a config block and return its channel view; raises ConfigError."""
    if len(block.data.envelopes) != 1:
        raise ConfigError("block 0 must carry exactly one config envelope")
    err = chain_error(block, block.header.channel_id, 0, ZERO_HASH)
    if err is not None:
        raise ConfigError(err)
    try:
        env = common_pb2.Envelope.FromString(block.data.envelopes[0])
        payload = common_pb2.Payload.FromString(env.payload)
        header = common_pb2.Header.FromString(payload.header)
        config = config_pb2.ChannelConfig.FromString(payload.data)
    except DecodeError as exc:
        raise ConfigError(f"config block does not parse: {exc}") from exc
    if header.type != common_pb2.HEADER_TYPE_CONFIG or header.channel_id != config.channel_id:
        raise ConfigError("block 0 is not a config block of its channel")
    if config.channel_id != block.header.channel_id:
        raise ConfigError("config names another channel than the block")
    view = channel_view(config)
    at = to_datetime(header.timestamp)
    if at is None:
        raise ConfigError("config envelope timestamp is not a valid time")
    orderer_ids = {n.identity for n in config.orderers}
    if header.creator not in orderer_ids:
        raise ConfigError("config envelope is not created by a configured orderer")
    try:
        view.orderer_membership.verify(header.creator, env.payload, env.signature, at)
        signed = [s for s in block.metadata.signatures if s.signer in orderer_ids]
        if not signed:
            raise ConfigError("block 0 carries no signature of a configured orderer")
        view.orderer_membership.verify(signed[0].signer, block_hash(block), signed[0].signature, at)
    except IdentityError as exc:
        raise ConfigError(f"config block signature: {exc}") from exc
    return view
