"""`TransactionEvent.private_payload_owed` (`rpc/events.block_events`): a private transaction
whose agreements name this node's privacy key as a recipient is reported as owed here, so a
subscriber whose node has not received the payload yet (queued delivery) waits for it instead of
skipping the message as if its organisation were not a recipient. Read from public bytes only."""

from __future__ import annotations

from dltmw.core.block import make_block
from dltmw.rpc.events import block_events
from dltmw.v1 import common_pb2, gateway_service_pb2, transaction_pb2
from dltmw.v1 import private_agreement_pb2 as A

T = transaction_pb2
MINE, OTHER, THIRD = b"\1" * 32, b"\2" * 32, b"\3" * 32


def _private(tx_id: str, recipients: list[bytes]) -> bytes:
    agreements = []
    if recipients:
        body = A.PrivateAgreementBody(tx_id=tx_id, payload_hash=b"\7" * 32)
        body.recipient_keys.extend(recipients)
        agreements.append(A.PrivateAgreement(body=body.SerializeToString(), signer=b"s"))
    data = T.PrivateTransaction(payload_hash=b"\7" * 32, agreements=agreements)
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION, channel_id="trades", tx_id=tx_id
    )
    payload = common_pb2.Payload(header=header.SerializeToString(), data=data.SerializeToString())
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


def _owed(owed_key: bytes) -> list[tuple[str, bool]]:
    envelopes = [
        _private("to-me", [OTHER, MINE]),
        _private("not-to-me", [OTHER, THIRD]),
        _private("no-agreements", []),
    ]
    block = make_block("trades", 3, b"\0" * 32, envelopes)
    block.metadata.validation_codes.extend([T.TX_VALIDATION_CODE_VALID] * 3)
    query = gateway_service_pb2.EventsQuery(private_transactions=True)
    reported = block_events(block, query, owed_key).transactions
    assert all(t.private_payload_hash == b"\7" * 32 for t in reported)
    return [(t.tx_id, t.private_payload_owed) for t in reported]


def test_a_payload_is_owed_where_the_agreements_name_the_node() -> None:
    assert _owed(MINE) == [("to-me", True), ("not-to-me", False), ("no-agreements", False)]


def test_nothing_is_owed_to_a_node_without_a_key_or_another_org_s_client() -> None:
    """The gateway passes no key for a client of another organisation (only its own
    organisation's clients may Receive there) or a node without a privacy key."""
    assert _owed(b"") == [("to-me", False), ("not-to-me", False), ("no-agreements", False)]
