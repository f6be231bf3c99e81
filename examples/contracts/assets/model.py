"""The asset record, stored as canonical JSON under its id."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Asset:
    """An asset: who owns it (an organisation) and what it is worth."""

    asset_id: str
    owner_org: str
    value: Decimal

    def to_bytes(self) -> bytes:
        record = asdict(self) | {"value": str(self.value)}
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def from_bytes(data: bytes) -> Asset:
        record = json.loads(data)
        return Asset(record["asset_id"], record["owner_org"], Decimal(record["value"]))
