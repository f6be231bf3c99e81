"""The explorer's JSON API and its static page, as the operations endpoint serves them.

- `GET /explorer/` (and `app.js`, `style.css`): the page, static files shipped in the package;
- `GET /api/node`: node id, organisation, and per channel its height, roles here, PBFT-lite view;
- `GET /api/channels/<c>/blocks?before=<n>&limit=<m>`: up to m (1..100, default 20) block
  summaries numbered below n (default: the height), newest first, and the next page's `before`;
- `GET /api/channels/<c>/blocks/<n>`: one block: header, orderer signatures, transactions with
  their validation codes, contract events and creators;
- `GET /api/channels/<c>/txs/<tx_id>`: where a transaction committed and what it holds;
- `GET /api/channels/<c>/identities/<org>/<certificate_ref>`: the client certificate a
  reference names (`core/identity_table.py`, hex SHA-256 of the certificate) and the block that
  registered it, from a peer's table (an orderer keeps none: 404);
- `GET /api/notaries/<n>/txs/<tx_id>`: on a notary node (`n`: `notary` or a cluster id), its
  decision on a transaction it signed.

Theory of operation. Read-only: every answer is one indexed read of the node's own ledger files
through the store (`ledger/sqlite.ChannelLedger`: `blocks_before` walks the block table's primary
key backwards from `before`; a tx id is a primary-key lookup), so a page costs the same on block
10 and on block 10,000,000 — plus, for a block or transaction shown in full, the config in force
at its block (`epochs.py`: a point read of the config entry; a block older than the current
config, a replay of the chain made once). A channel the node is a peer of is read from its peer
ledger (it holds this peer's validation codes); one it only orders, from its orderer ledger (no
codes: shown as `NOT_VALIDATED_HERE`).

Errors are the caller's: a bad parameter is 400, an unknown channel, block or transaction 404,
each a JSON body `{"error": ...}`; nothing a request says can make a 500 (a store fault is not a
request's fault and propagates to the endpoint, which logs it and answers 500).

Who may read: the endpoint asks no client certificate, and a ledger's content is more than a
process monitor should see, so by default (`[operations] explorer = "loopback"`) only callers on
the node's host get the explorer; `"any"` serves everybody who reaches the port, `"off"` nobody.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from importlib import resources
from typing import Any, Protocol, TypeVar, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dltmw.core.block import TxRecord
from dltmw.core.channel import ChannelView
from dltmw.core.identity_table import TableEntry, takes_client_references
from dltmw.core.notary_batch import decode
from dltmw.ledger.backend import StateReader
from dltmw.runtime.explorer.epochs import ConfigEpochs
from dltmw.runtime.explorer.view import (
    Resolve,
    block_detail,
    block_summary,
    identity,
    transaction,
)
from dltmw.runtime.metrics import validation_code_name as code_name
from dltmw.v1 import block_pb2, identity_pb2

JSON = "application/json"
PAGE_MAX = 100
PAGE_DEFAULT = 20
TX_ID = re.compile(r"[0-9a-f]{64}")
CERT_REF = TX_ID  # a certificate reference: SHA-256, hex
STATIC = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}
Reply = tuple[int, bytes, str]  # status, body, content type
T = TypeVar("T")


class LedgerReads(Protocol):
    """The reads the explorer makes of a channel ledger (`ledger/sqlite.ChannelLedger`)."""

    @property
    def height(self) -> int:
        """Blocks held."""
        ...

    async def blocks_before(self, before: int, limit: int) -> list[block_pb2.Block]:
        """Up to `limit` blocks below `before`, newest first."""
        ...

    async def block(self, number: int) -> block_pb2.Block | None:
        """One block, or None."""
        ...

    async def tx_record(self, tx_id: str) -> TxRecord | None:
        """Where a transaction committed, or None."""
        ...

    async def blocks(self, start: int, stop: int) -> list[block_pb2.Block]:
        """Blocks `start` to `stop - 1` held, in order (`epochs.py`'s replay)."""
        ...

    async def read_snapshot(self, fn: Callable[[StateReader], T]) -> T:
        """`fn` on one snapshot of committed state (`epochs.py`: the config entry)."""
        ...

    @property
    def identities(self) -> Mapping[tuple[str, bytes], TableEntry]:
        """The channel's client identity table (`core/identity_table.py`; empty on orderers)."""
        ...


class Holder(Protocol):
    """A role holding one channel's ledger."""

    @property
    def ledger(self) -> LedgerReads:
        """Its ledger."""
        ...


@runtime_checkable
class Configured(Protocol):
    """A holder that also knows its channel's config (peer and orderer channels): its blocks
    can name identities by reference, shown through the config in force at each block
    (`epochs.py`, `view.py`)."""

    @property
    def view(self) -> ChannelView:
        """The channel's current view."""
        ...


class Viewed(Protocol):
    """A PBFT-lite orderer channel (`roles/orderer/pbft.py`)."""

    @property
    def current_view(self) -> int:
        """The replica's view."""
        ...


class NotaryReads(Protocol):
    """The explorer's read of a notary's spent-set (`ledger/notary_store.NotaryStore`)."""

    @property
    def executor(self) -> Executor:
        """The store thread."""
        ...

    def notarised(self, tx_id: str) -> tuple[bytes, int] | None:
        """(signature, inputs consumed) of a notarised tx id, or None (on the store thread)."""
        ...


class Notary(Protocol):
    """A notary role, single or a cluster replica (`roles/notary/`)."""

    @property
    def store(self) -> NotaryReads:
        """Its spent-set."""
        ...


class BadRequest(Exception):
    """The caller's mistake: answered with `status` and the message as JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(status: int, body: object) -> Reply:
    return status, json.dumps(body, separators=(",", ":")).encode(), JSON


def _static(name: str) -> bytes:
    return resources.files("dltmw.runtime.explorer").joinpath("static", name).read_bytes()


class Explorer:
    """Answers `/explorer/...` and `/api/...` for one node (see the module docstring). The maps
    are the node's own (read, never copied): channels joined later appear at once."""

    def __init__(
        self,
        node_id: str,
        org_id: str,
        peers: Mapping[str, Holder],
        orderers: Mapping[str, Holder],
        pbft_orderers: Mapping[str, Viewed],
        notaries: Callable[[], Mapping[str, Notary]] = dict,
    ) -> None:
        self.node_id = node_id
        self.org_id = org_id
        self._peers = peers
        self._orderers = orderers
        self._pbft = pbft_orderers
        self._notaries = notaries  # asked per request: notary roles start after the explorer
        self._files = {key: (_static(name), kind) for key, (name, kind) in STATIC.items()}
        self._epochs: dict[str, ConfigEpochs] = {}  # per channel: its configs by block

    async def answer(self, method: str, path: str, query: Mapping[str, list[str]]) -> Reply:
        """The reply to one request whose path starts with /explorer or /api/."""
        if method != "GET":
            return _json(405, {"error": "GET only"})
        try:
            if path == "/explorer":
                return 308, b"", "text/plain"  # the endpoint adds Location: /explorer/
            if path.startswith("/explorer/"):
                return self._file(path.removeprefix("/explorer/"))
            return await self._api(path.removeprefix("/api/").split("/"), query)
        except BadRequest as exc:
            return _json(exc.status, {"error": str(exc)})

    def _file(self, name: str) -> Reply:
        found = self._files.get(name)
        if found is None:
            raise BadRequest(404, f"no such file: {name}")
        return 200, found[0], found[1]

    async def _api(self, parts: list[str], query: Mapping[str, list[str]]) -> Reply:
        match parts:
            case ["node"]:
                return _json(200, self.node())
            case ["channels", channel, "blocks"]:
                return _json(200, await self.blocks(channel, query))
            case ["channels", channel, "blocks", number]:
                return _json(200, await self.block(channel, _int("block number", number)))
            case ["channels", channel, "txs", tx_id]:
                return _json(200, await self.tx(channel, tx_id))
            case ["channels", channel, "identities", org, ref]:
                return _json(200, self.client_identity(channel, org, ref))
            case ["notaries", name, "txs", tx_id]:
                return _json(200, await self.notarised(name, tx_id))
        raise BadRequest(
            404, "no such API: /api/node, /api/channels/<c>/..., /api/notaries/<n>/..."
        )

    def node(self) -> dict[str, Any]:
        """The node and its channels."""
        channels = []
        for cid in sorted({*self._peers, *self._orderers}):
            roles = [
                r
                for r, found in (("peer", self._peers), ("orderer", self._orderers))
                if cid in found
            ]
            pbft = self._pbft.get(cid)
            channels.append(
                {
                    "id": cid,
                    "height": self._ledger(cid).height,
                    "roles": roles,
                    "ordering": "pbft-lite"
                    if pbft is not None
                    else ("solo" if "orderer" in roles else ""),
                    "view": pbft.current_view if pbft is not None else None,
                }
            )
        notaries = sorted(self._notaries())
        return {
            "node": self.node_id,
            "org": self.org_id,
            "channels": channels,
            "notaries": notaries,
        }

    async def blocks(self, channel: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """A page of block summaries, newest first, and the `before` of the next page."""
        ledger = self._ledger(channel)
        height = ledger.height
        before = _param(query, "before", height, 0, 2**62)
        limit = _param(query, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
        blocks = await ledger.blocks_before(min(before, height), limit)
        rows = [block_summary(b) for b in blocks]
        last = rows[-1]["number"] if rows else 0
        return {"channel": channel, "height": height, "blocks": rows, "next_before": last or None}

    async def block(self, channel: str, number: int) -> dict[str, Any]:
        """One block in full."""
        found = await self._ledger(channel).block(number)
        if found is None:
            raise BadRequest(404, f"channel {channel}: no block {number}")
        return block_detail(found, await self._resolver(channel, number))

    async def tx(self, channel: str, tx_id: str) -> dict[str, Any]:
        """One transaction by id: where it committed, its code, what it holds."""
        if not TX_ID.fullmatch(tx_id):
            raise BadRequest(400, "a tx id is 64 lower-case hex digits")
        ledger = self._ledger(channel)
        record = await ledger.tx_record(tx_id)
        found = await ledger.block(record.block_number) if record is not None else None
        if record is None or found is None:
            raise BadRequest(404, f"channel {channel}: no transaction {tx_id}")
        resolve = await self._resolver(channel, record.block_number)
        detail = transaction(found.data.envelopes[record.tx_index], resolve)
        code = code_name(record.code) if found.metadata.validation_codes else "NOT_VALIDATED_HERE"
        return {
            **detail,
            "block_number": record.block_number,
            "tx_index": record.tx_index,
            "code": code,
        }

    def client_identity(self, channel: str, org: str, ref: str) -> dict[str, Any]:
        """The client certificate a reference names, with the block that registered it (an
        audit of a block whose creators are references resolves them here)."""
        if not CERT_REF.fullmatch(ref):
            raise BadRequest(400, "a certificate reference is 64 lower-case hex digits")
        entry = self._ledger(channel).identities.get((org, bytes.fromhex(ref)))
        if entry is None:
            raise BadRequest(404, f"channel {channel}: no client certificate {ref} of {org!r}")
        full = identity_pb2.Identity(org_id=org, certificate_der=entry.certificate_der)
        return {
            **identity(full.SerializeToString()),
            "certificate_ref": ref,
            "certificate_pem": x509.load_der_x509_certificate(entry.certificate_der)
            .public_bytes(serialization.Encoding.PEM)
            .decode(),
            "registered_in_block": entry.first_block,
        }

    async def notarised(self, notary: str, tx_id: str) -> dict[str, Any]:
        """A notary's decision on a transaction: signed, with how many inputs it consumed (a
        primary-key lookup of its spent-set; refusals are not stored, only counted in
        `dltmw_notary_decisions_total`)."""
        if not TX_ID.fullmatch(tx_id):
            raise BadRequest(400, "a tx id is 64 lower-case hex digits")
        role = self._notaries().get(notary)
        if role is None:
            raise BadRequest(404, f"no notary {notary!r} on this node")
        store = role.store
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(store.executor, store.notarised, tx_id)
        if found is None:
            raise BadRequest(404, f"notary {notary}: no notarised transaction {tx_id}")
        stored, inputs = found
        signature, proof = decode(stored)
        out: dict[str, Any] = {
            "notary": notary,
            "tx_id": tx_id,
            "inputs_consumed": inputs,
            "signature": signature.hex(),
        }
        if proof is not None:  # signed in a batch: the leaf proof makes it checkable alone
            out["batch_proof"] = {
                "leaf_index": proof.index,
                "leaf_count": proof.count,
                "path": [h.hex() for h in proof.path],
            }
        return out

    async def _resolver(self, channel: str, number: int) -> Resolve:
        """How identities by reference are shown in block `number` of `channel`: through the
        config in force at that block (`epochs.py`)."""
        holder = self._peers.get(channel) or self._orderers.get(channel)
        if not isinstance(holder, Configured):
            return lambda identity_bytes: identity_bytes
        epochs = self._epochs.get(channel)
        if epochs is None or epochs.ledger is not holder.ledger:  # a ledger opened again
            epochs = self._epochs[channel] = ConfigEpochs(holder.ledger)
        view = await epochs.view_at(number)
        if takes_client_references(view.config):  # clients' references: the peer's table
            view.membership.use_clients(holder.ledger.identities)
        return view.membership.resolved

    def _ledger(self, channel: str) -> LedgerReads:
        holder = self._peers.get(channel) or self._orderers.get(channel)
        if holder is None:
            raise BadRequest(404, f"no channel {channel!r} on this node")
        return holder.ledger


def _int(what: str, text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise BadRequest(400, f"{what} must be a non-negative integer, got {text[:40]!r}")
    return int(text)


def _param(query: Mapping[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = query.get(name)
    if not values:
        return default
    value = _int(name, values[0])
    if not low <= value <= high:
        raise BadRequest(400, f"{name} must be in {low}..{high}, got {value}")
    return value
