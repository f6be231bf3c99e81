"""Versions and write records of the world state.

A key's version is the position (block_number, tx_index) of the valid transaction that last
wrote it, exactly as in Fabric. Endorsers record the versions they read; committing peers compare
them with the committed versions (see `validation.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dltmw.v1 import rwset_pb2


@dataclass(frozen=True, order=True)
class Version:
    """Position of the transaction that last wrote a key."""

    block_number: int
    tx_index: int

    def to_proto(self) -> rwset_pb2.Version:
        """Wire form."""
        return rwset_pb2.Version(block_number=self.block_number, tx_index=self.tx_index)

    @staticmethod
    def from_read(read: rwset_pb2.KVRead) -> Version | None:
        """Version recorded by a read, or None when the key did not exist."""
        if not read.HasField("version"):
            return None
        return Version(read.version.block_number, read.version.tx_index)


@dataclass(frozen=True)
class StateWrite:
    """One write to apply at commit: `value` None means delete."""

    namespace: str
    key: str
    value: bytes | None
    version: Version


@dataclass(frozen=True)
class StateEntry:
    """A committed key with its value and version."""

    key: str
    value: bytes
    version: Version
