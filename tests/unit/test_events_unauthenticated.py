"""What the Events stream says of a transaction invalid before its creator's signature verified
(`rpc/events.block_events`, `BlockMetadata.unauthenticated`): an empty tx_id, never the one its
header claims — a forged envelope claiming another client's tx_id must not show that client's
transaction as invalid to an Events reader. The peer's committer fills the indices from the tx_ids
its checks left empty (`core/txcheck`)."""

from __future__ import annotations

from dltmw.core.block import make_block
from dltmw.rpc.events import block_events
from dltmw.v1 import common_pb2, transaction_pb2

T = transaction_pb2


def _envelope(tx_id: str) -> bytes:
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_CONFIG_UPDATE, channel_id="trades", tx_id=tx_id
    )
    payload = common_pb2.Payload(header=header.SerializeToString())
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


def test_an_unauthenticated_transaction_is_reported_without_its_claimed_tx_id() -> None:
    block = make_block("trades", 3, b"\0" * 32, [_envelope("victim"), _envelope("mine")])
    block.metadata.validation_codes.extend(
        [T.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE, T.TX_VALIDATION_CODE_VALID]
    )
    block.metadata.unauthenticated.append(0)
    reported = block_events(block).transactions
    assert [(t.tx_id, t.validation_code, t.tx_index) for t in reported] == [
        ("", T.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE, 0),
        ("mine", T.TX_VALIDATION_CODE_VALID, 1),
    ]


def test_an_authenticated_invalid_transaction_keeps_its_tx_id() -> None:
    """Invalid after its signature verified (an MVCC conflict, a policy failure): its client
    must learn it, by its tx_id."""
    block = make_block("trades", 3, b"\0" * 32, [_envelope("mine")])
    block.metadata.validation_codes.append(T.TX_VALIDATION_CODE_MVCC_READ_CONFLICT)
    (reported,) = block_events(block).transactions
    assert reported.tx_id == "mine"
