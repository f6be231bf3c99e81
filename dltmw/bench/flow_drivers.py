"""Drivers of the flows beside endorse/order/validate (see `flows.py` for their workloads).

Each turns an `Op` into the flow's real calls and classifies the end as `driver.Outcome` does
for the Gateway (committed/decided with a code, or failed before with a reason), so the report
is the same for every flow:

- `NotaryDriver`: builds each notarisation request, sends it on a long-lived NotariseStream per
  (client, notary, stream) in batches of whatever is waiting (`NotaryStream`), each batch signed
  once with the client's own key (requester batch signature, as a real client must sign), and
  counts it VALID when the notary signed it; for a
  cluster, f+1 consecutive members (rotating) must each sign — what a cluster client accepts.
- `PrivateDriver`: `PrivacyClient.submit_private` (send to the recipients, order the hash, await
  the commit status) to every organisation but the sender's.
- `VaultDriver`: the client of the seller's organisation runs a DvP flow on its vault (issue
  flows for the setup), one at a time per (seller, buyer); VALID when the flow returns the
  notarised transaction.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from pathlib import Path

import grpc

from dltmw.aio.coalesce import Coalescer
from dltmw.bench.driver import Driver, GatewayDriver, Outcome, classify, describe
from dltmw.bench.params import Op
from dltmw.bench.topology import NetworkShape
from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.utxo import NotaryClient, PartyFiles, VaultClient, signed_batch
from dltmw.core.identity import SigningIdentity
from dltmw.core.utxo.build import TxSpec, build_transaction, notarisation_payload
from dltmw.core.utxo.model import Command, Ref, read_transaction
from dltmw.v1 import errors_pb2, notarisation_pb2, utxo_pb2
from dltmw.v1.notary_service_pb2 import NotariseStreamRequest

VALID = 1
Request = notarisation_pb2.NotarisationRequest
Result = notarisation_pb2.NotarisationResult


def notary_batches(
    client: NotaryClient, batch_max: int, streams: int, signer: SigningIdentity
) -> Coalescer[Request, Result]:
    """Concurrent requests to one notary, sent in batches of what waits (`aio/coalesce.py`):
    each batch is one NotariseStream message signed once by `signer` (requester batch
    signature: the requests carry only their payloads), `streams` batches in progress at once."""

    async def send(batch: Sequence[Request]) -> list[Result]:
        async def one() -> AsyncIterator[NotariseStreamRequest]:
            yield signed_batch([r.payload for r in batch], signer)

        async for results in client.notarise_batches(one()):
            return results
        raise ConnectionError(f"{client.notary_id} closed the stream without an answer")

    return Coalescer(
        send, batch_max=batch_max, name=f"bench-{client.notary_id}", max_concurrent=streams
    )


def refusal(result: Result) -> str | None:
    """None when the notary signed, else the refusal's reason name."""
    if result.reason == 0 and result.response.notary_signature.signature:
        return None
    try:
        return errors_pb2.ErrorReason.Name(errors_pb2.ErrorReason.ValueType(result.reason))
    except ValueError:
        return f"REASON_{result.reason}"


class NotaryDriver:
    """Notarisations through one notary or f+1 members of a cluster (see the module doc)."""

    def __init__(
        self,
        parties: Sequence[PartyFiles],
        batches: dict[tuple[int, str], tuple[NotaryClient, Coalescer[Request, Result]]],
        notary: str,
        members: Sequence[str],
    ) -> None:
        self.parties = list(parties)
        self.batches = batches
        self.notary = notary
        self.members = tuple(members)
        self.quorum = (len(self.members) - 1) // 3 + 1  # f + 1 (1 for a single notary)
        self._turn = itertools.count()

    @staticmethod
    async def connect(net: Path, shape: NetworkShape, batch: int, streams: int) -> NotaryDriver:
        """A connection per (client, member), up to `streams` batches in flight on each."""
        parties = [PartyFiles.load(net, c) for c in shape.client_ids()]
        opened: dict[tuple[int, str], tuple[NotaryClient, Coalescer[Request, Result]]] = {}
        for i, party in enumerate(parties):
            for member in shape.notary_ids():
                client = await NotaryClient.connect(party, member)
                coalescer = notary_batches(client, batch, streams, party.signer)
                opened[(i, member)] = (client, coalescer)
        return NotaryDriver(parties, opened, shape.notary(), shape.notary_ids())

    def request(self, party: PartyFiles, op: Op) -> tuple[str, Request]:
        """The request for `op` (nonce, input tx ids), unsigned (its batch is signed when it is
        sent, `notary_batches`), and its transaction id."""
        me = party.signer.identity_bytes
        spec = TxSpec(
            notary=self.notary,
            nonce=bytes.fromhex(op.args[0]),
            inputs=[Ref(t, 0) for t in op.args[1:]],
            commands=[Command("cash", "move", (me,))],
        )
        wire = read_transaction(build_transaction(spec))
        payload = notarisation_payload(wire, me).SerializeToString()
        return wire.tx_id, Request(payload=payload)

    async def execute(self, op: Op) -> Outcome:
        """Notarise; VALID when every asked member signed."""
        turn = next(self._turn)
        who = turn % len(self.parties)
        started = time.perf_counter()
        tx_id, request = self.request(self.parties[who], op)
        asked = [self.members[(turn + k) % len(self.members)] for k in range(self.quorum)]
        calls = [self.batches[(who, m)][1].call(request) for m in asked]
        try:
            results = await asyncio.gather(*calls)
        except (grpc.aio.AioRpcError, ConnectionError) as exc:
            now = time.perf_counter()
            return Outcome(tx_id, None, classify(exc), started, now, detail=describe(exc))
        refused = [r for r in map(refusal, results) if r is not None]
        if refused:
            detail = next(r.message for r in results if refusal(r) is not None)
            return Outcome(tx_id, None, refused[0], started, time.perf_counter(), detail=detail)
        return Outcome(tx_id, VALID, None, started, time.perf_counter())

    async def close(self) -> None:
        """Stop every coalescer and close every connection."""
        for client, batches in self.batches.values():
            await batches.close()
            await client.close()


async def _outcome_of(call: Awaitable[tuple[str, int, int, int]]) -> Outcome:
    """Run `call` -> (tx_id, code, block, index); classify a failure before commit."""
    started = time.perf_counter()
    try:
        tx_id, code, block, index = await call
    except (grpc.aio.AioRpcError, TimeoutError, ConnectionError) as exc:
        return Outcome("", None, classify(exc), started, time.perf_counter(), detail=describe(exc))
    return Outcome(tx_id, code, None, started, time.perf_counter(), block, index=index)


class PrivateDriver:
    """Private transactions through each organisation's gateway (round-robin)."""

    def __init__(self, clients: Sequence[tuple[PrivacyClient, list[str]]]) -> None:
        self.clients = list(clients)
        self._next = itertools.cycle(self.clients)

    @staticmethod
    async def connect(net: Path, shape: NetworkShape) -> PrivateDriver:
        """One PrivacyClient per client; its recipients are every other organisation."""
        orgs = [f"Org{i + 1}" for i in range(shape.orgs)]
        out: list[tuple[PrivacyClient, list[str]]] = []
        for i, cid in enumerate(shape.client_ids()):
            client = PrivacyClient(await GatewayClient.connect(net, cid))
            out.append((client, [o for j, o in enumerate(orgs) if j != i]))
        return PrivateDriver(out)

    async def execute(self, op: Op) -> Outcome:
        """Send privately, order the hash, await the public commit status."""
        client, recipients = next(self._next)

        async def call() -> tuple[str, int, int, int]:
            done = await client.submit_private(
                op.channel, recipients, op.contract, op.function, *op.args
            )
            s = done.status
            return done.tx_id, int(s.result), int(s.block_number), int(s.tx_index)

        return await _outcome_of(call())

    async def close(self) -> None:
        """Close every client."""
        for client, _ in self.clients:
            await client.close()


class VaultDriver:
    """Flows on the vaults: `issue` (setup) and `dvp` (the seller's vault runs it)."""

    def __init__(self, vaults: dict[str, VaultClient]) -> None:
        self.vaults = vaults
        # One DvP at a time per (seller, buyer): the buyer keeps one open offer per seller
        # (flows.UtxoDvpWorkload), so overlapping ones would refuse each other for the
        # harness's sake. The wait counts in the latency: it is what a caller would see.
        self._pairs: dict[tuple[str, str], asyncio.Lock] = {}

    @staticmethod
    async def connect(net: Path, shape: NetworkShape) -> VaultDriver:
        """Each organisation's client to its own vault."""
        vaults: dict[str, VaultClient] = {}
        for cid, vid in zip(shape.client_ids(), shape.vault_ids(), strict=True):
            vaults[vid] = await VaultClient.connect(PartyFiles.load(net, cid), vid)
        return VaultDriver(vaults)

    async def execute(self, op: Op) -> Outcome:
        """Run the flow; its transaction is final (notarised) when the flow returns."""
        vault = self.vaults[op.channel]
        if op.function == "issue":
            owner, asset, amount = op.args
            flow = vault.issue(op.contract, vault.identity_of(owner), asset, int(amount))
        else:
            buyer, isin, quantity, currency, amount = op.args
            terms = utxo_pb2.DvpTerms(
                buyer=vault.identity_of(buyer),
                seller=vault.identity_of(op.channel),
                isin=isin,
                quantity=int(quantity),
                currency=currency,
                amount=int(amount),
            )
            flow = vault.dvp(terms)

        lock = self._pairs.setdefault((op.channel, op.args[0]), asyncio.Lock())

        async def call() -> tuple[str, int, int, int]:
            async with lock:
                reply = await flow
            return reply.tx_id, VALID, -1, -1

        return await _outcome_of(call())

    async def close(self) -> None:
        """Close every vault connection."""
        for v in self.vaults.values():
            await v.close()


async def make_driver(
    kind: str, network_dir: Path, shape: NetworkShape, options: Mapping[str, int]
) -> Driver:
    """The driver a workload names (`Workload.driver_kind`); raises ValueError if unknown.

    "gateway" is `driver.GatewayDriver`; the others are this module's.
    """
    if kind == "gateway":
        return await GatewayDriver.connect(network_dir, shape.client_ids())
    if kind in ("notary", "notary-cluster"):
        batch, streams = options.get("batch", 500), options.get("streams", 2)
        return await NotaryDriver.connect(network_dir, shape, batch, streams)
    if kind == "private":
        return await PrivateDriver.connect(network_dir, shape)
    if kind == "vault":
        return await VaultDriver.connect(network_dir, shape)
    raise ValueError(f"unknown driver kind {kind!r}")
