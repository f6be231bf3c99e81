"""Typed results of the SDK: plain frozen dataclasses, never protobuf messages.

A program embedding dltmw should not need the wire contract's generated classes to read what a
call returned; these are the few shapes it sees. Conversion from the wire lives here, next to
the types, so every entry point converts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from dltmw.v1 import gateway_service_pb2, transaction_pb2

__all__ = [
    "Block",
    "Committed",
    "ContractEvent",
    "EventFilter",
    "Transaction",
    "TxStatus",
    "block_of",
    "code_name",
    "status_of",
]


def code_name(code: int) -> str:
    """ "VALID", "MVCC_READ_CONFLICT", ... for a TxValidationCode value."""
    name: str = transaction_pb2.TxValidationCode.Name(
        transaction_pb2.TxValidationCode.ValueType(code)
    )
    return name.removeprefix("TX_VALIDATION_CODE_")


@dataclass(frozen=True)
class Committed:
    """A transaction committed VALID: where, and what its contract function returned."""

    tx_id: str
    block_number: int
    tx_index: int
    payload: bytes  # the contract function's return value

    @property
    def text(self) -> str:
        """The return value as UTF-8 text (the built-in contracts return text)."""
        return self.payload.decode()


@dataclass(frozen=True)
class TxStatus:
    """Where and how a transaction committed, as a gateway's peer has it (`Client.commit_status`,
    `Submitted.status`): any validation code, not only VALID."""

    tx_id: str
    validation_code: str  # "VALID", "MVCC_READ_CONFLICT", ...
    block_number: int
    tx_index: int

    @property
    def valid(self) -> bool:
        """Did it commit VALID (only then were its writes applied)?"""
        return self.validation_code == "VALID"


def status_of(tx_id: str, response: gateway_service_pb2.CommitStatusResponse) -> TxStatus:
    """The TxStatus for one CommitStatus answer."""
    code = code_name(response.result)
    return TxStatus(tx_id, code, response.block_number, response.tx_index)


@dataclass(frozen=True)
class ContractEvent:
    """An event a contract emitted in a committed VALID transaction."""

    contract: str
    name: str
    payload: bytes


@dataclass(frozen=True)
class Transaction:
    """One transaction of a committed block, with its validation code."""

    tx_id: str
    validation_code: str
    events: tuple[ContractEvent, ...]
    index: int  # in its block
    private_payload_hash: bytes = b""  # a private transaction's payload hash
    # The node is one of its recipients: the payload is (or will be, by queued delivery) its own.
    private_payload_owed: bool = False

    @property
    def valid(self) -> bool:
        """Did it commit VALID (only then do its writes and events count)?"""
        return self.validation_code == "VALID"


@dataclass(frozen=True)
class EventFilter:
    """Which contract events a block stream wants: `names` of `contract` (all when empty)."""

    contract: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    """A committed block of a channel, as the Events stream reports it."""

    channel_id: str
    number: int
    hash: bytes
    transactions: tuple[Transaction, ...]


def block_of(channel_id: str, response: gateway_service_pb2.EventsResponse) -> Block:
    """The Block for one Events message."""
    return Block(
        channel_id=channel_id,
        number=response.block_number,
        hash=response.block_hash,
        transactions=tuple(
            Transaction(
                tx_id=t.tx_id,
                validation_code=code_name(t.validation_code),
                events=tuple(ContractEvent(e.contract, e.name, e.payload) for e in t.events),
                # A node that applied filters numbers the transactions; otherwise all are here.
                index=t.tx_index if response.filtered else i,
                private_payload_hash=t.private_payload_hash,
                private_payload_owed=t.private_payload_owed,
            )
            for i, t in enumerate(response.transactions)
        ),
    )
