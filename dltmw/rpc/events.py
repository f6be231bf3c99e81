"""What the Gateway's Events stream reports of a committed block, and its filters.

Without filters, every transaction of the block (tx id, validation code, and the contract events
of the VALID ones). A transaction found invalid before its creator's signature verified is
reported with an empty tx id (`BlockMetadata.unauthenticated`): its header's tx id is only a
claim, which a forged envelope could make about another client's transaction.

A private transaction whose agreements name this node's privacy key (`owed_key`) as a
recipient is reported with `private_payload_owed`: its payload is this node's to hold, so a
subscriber that cannot read it yet (a queued delivery still on its way) waits for it instead of
taking "not held" for "not a recipient" and skipping the message for good.

With filters (`EventsQuery.filters`), only the VALID transactions with an event of a wanted
contract and name — with all their events, so a subscriber's positions (block,
tx index, event index) stay those of the ledger — plus, when asked, every VALID private
transaction (its payload hash only). A block is reported even when nothing in it matches, so a
subscriber's checkpoint advances past blocks with nothing for it; `filtered` and every
transaction's `tx_index` tell the subscriber what was left out.

Filtering on the node saves the bandwidth and parsing of everything a subscriber does not want
(a bus topic among many); it is a pure function of the block and the query.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError

from dltmw.core.block import block_hash
from dltmw.core.errors import ClientError
from dltmw.core.privacy.agreement import agreed_body
from dltmw.core.txcheck import tx_details
from dltmw.v1 import block_pb2, common_pb2, errors_pb2, gateway_service_pb2, transaction_pb2

G = gateway_service_pb2
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
FILTERS_MAX = 16
NAMES_MAX = 256


def check_filters(filters: Sequence[G.EventFilter]) -> None:
    """INVALID_FIELD for filters beyond their bounds or without a contract."""
    if len(filters) > FILTERS_MAX:
        raise ClientError(
            errors_pb2.ERROR_REASON_INVALID_FIELD, f"more than {FILTERS_MAX} event filters"
        )
    for i, f in enumerate(filters):
        if not f.contract:
            raise ClientError(
                errors_pb2.ERROR_REASON_INVALID_FIELD, f"filters[{i}].contract is empty"
            )
        if len(f.names) > NAMES_MAX:
            raise ClientError(
                errors_pb2.ERROR_REASON_INVALID_FIELD,
                f"filters[{i}] names more than {NAMES_MAX} events",
            )


def _wanted(filters: Sequence[G.EventFilter], contract: str, name: str) -> bool:
    return any(f.contract == contract and (not f.names or name in f.names) for f in filters)


def _owed(envelope: bytes, key: bytes) -> bool:
    """Whether the agreements of a private transaction name `key` as a recipient."""
    try:
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
        body = agreed_body(transaction_pb2.PrivateTransaction.FromString(payload.data).agreements)
    except DecodeError:
        return False
    return body is not None and key in body.recipient_keys


def block_events(
    block: block_pb2.Block, query: G.EventsQuery | None = None, owed_key: bytes = b""
) -> G.EventsResponse:
    """EventsResponse for a committed block under `query`'s filters; `owed_key`: this node's
    privacy public key (module docstring)."""
    filters = list(query.filters) if query is not None else []
    private = bool(query is not None and query.private_transactions)
    out = G.EventsResponse(
        block_number=block.header.number, block_hash=block_hash(block), filtered=bool(filters)
    )
    codes = list(block.metadata.validation_codes)
    unauthenticated = set(block.metadata.unauthenticated)
    for i, env in enumerate(block.data.envelopes):
        code = codes[i] if i < len(codes) else 0
        tx_id, events, payload_hash = tx_details(env)
        if i in unauthenticated:  # invalid before its creator signature verified: a claim
            tx_id = ""
        if filters:
            matches = any(_wanted(filters, e.contract, e.name) for e in events)
            if code != VALID or not (matches or (private and payload_hash)):
                continue
        out.transactions.add(
            tx_id=tx_id,
            validation_code=code,
            events=events if code == VALID else [],
            tx_index=i,
            private_payload_hash=payload_hash,
            private_payload_owed=bool(payload_hash and owed_key and _owed(env, owed_key)),
        )
    return out
