"""An asset registry: create, transfer between organisations, read, list."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from dltmw.contract_sdk import Context, Contract, ContractError, Text, query, transaction

from .model import Asset

Id = Annotated[str, Text(1, 64)]


class Assets(Contract):
    name = "assets"

    @transaction
    def create(self, ctx: Context, asset_id: Id, value: Decimal) -> Asset:
        """The caller's organisation creates an asset it owns."""
        if ctx.get(asset_id) is not None:
            raise ContractError(f"asset {asset_id} already exists", 409)
        if value < 0:
            raise ContractError("value must not be negative")
        owner = ctx.tx.creator_org if ctx.tx else ""
        asset = Asset(asset_id, owner, value)
        ctx.put(asset_id, asset.to_bytes())
        ctx.emit("created", asset)
        return asset

    @transaction
    def transfer(self, ctx: Context, asset_id: Id, new_owner: Id) -> Asset:
        """Only the owning organisation may transfer an asset."""
        asset = self._load(ctx, asset_id)
        if ctx.tx is None or ctx.tx.creator_org != asset.owner_org:
            raise ContractError(f"only {asset.owner_org} may transfer {asset_id}", 403)
        moved = Asset(asset_id, new_owner, asset.value)
        ctx.put(asset_id, moved.to_bytes())
        ctx.emit("transferred", moved)
        return moved

    @query
    def read(self, ctx: Context, asset_id: Id) -> Asset:
        return self._load(ctx, asset_id)

    @query
    def total(self, ctx: Context, owner_org: str) -> Decimal:
        """The value of every asset an organisation owns."""
        assets = [Asset.from_bytes(value) for _, value in ctx.range("")]
        return sum((a.value for a in assets if a.owner_org == owner_org), Decimal(0))

    def _load(self, ctx: Context, asset_id: str) -> Asset:
        data = ctx.get(asset_id)
        if data is None:
            raise ContractError(f"asset {asset_id} does not exist", 404)
        return Asset.from_bytes(data)
