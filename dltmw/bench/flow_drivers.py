"""Drivers of the flows beside endorse/order/validate (see `flows.py` for their workloads).

Each turns an `Op` into the flow's real calls and classifies the end as `driver.Outcome` does
for the Gateway (committed/decided with a code, or failed before with a reason), so the report
is the same for every flow:

- `NotaryDriver`: builds each notarisation request (`RequestTemplate`: only what differs from one
  bench transaction to the next is computed per request), sends it on long-lived NotariseStreams
  per (client, notary) in batches of whatever is waiting (`notary_batches`), each batch signed once
  with the client's own key (requester batch signature, as a real client must sign), and counts
  it VALID when the notary's answer verifies offline (`AnswerCheck`: its signature over the
  batch root its leaf proof leads to, by the notary's certificate from the network map); for a
  cluster, f+1 consecutive members (rotating) must each sign — what a cluster client accepts;
  the first orders the request, the others are asked to attest it (`ordered_elsewhere`: they
  answer from its decision instead of ordering it a second time).
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
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import grpc

from dltmw.aio.clock import utc_now
from dltmw.aio.coalesce import Coalescer
from dltmw.bench.driver import Driver, GatewayDriver, Outcome, classify, describe
from dltmw.bench.params import Op
from dltmw.bench.topology import NetworkShape
from dltmw.client import GatewayClient
from dltmw.client.notary_batches import Asked
from dltmw.client.notary_batches import notary_batches as batches_to
from dltmw.client.privacy import PrivacyClient
from dltmw.client.utxo import NotaryClient, PartyFiles, VaultClient
from dltmw.core.errors import ClientError
from dltmw.core.identity import Membership
from dltmw.core.notary_batch import proof_of_pb, signed_message
from dltmw.core.utxo.build import TxSpec, build_transaction, state_ref
from dltmw.core.utxo.model import (
    UNBOUNDED,
    Command,
    Components,
    Ref,
    group_hash,
    read_transaction,
    visible_components,
)
from dltmw.core.utxo.verify import check_notary_signature
from dltmw.v1 import errors_pb2, notarisation_pb2, utxo_pb2

VALID = 1
Request = notarisation_pb2.NotarisationRequest
Result = notarisation_pb2.NotarisationResult


class RequestTemplate:
    """A party's requests to notarise the bench's transactions (no outputs, one `cash.move`
    command signed by the party, no references, no time window): the parts that never change
    are computed once from a real transaction (`read_transaction`), so a request costs the
    input and nonce group hashes, the tx_id (`Components.tx_id`) and a short message — not
    building, serialising and re-parsing a whole transaction. The payload's bytes are exactly
    `notarisation_payload(...)`'s (checked by the unit tier)."""

    def __init__(self, notary: str, requester: bytes) -> None:
        self.notary = notary
        self.requester = requester
        probe = TxSpec(notary, bytes(32), (), commands=[Command("cash", "move", (requester,))])
        fixed = read_transaction(build_transaction(probe)).components
        self._fixed = fixed
        # fields 5, 6, 8, 9 of NotarisationPayload; 1-2 come before them and 10 after
        self._middle = notarisation_pb2.NotarisationPayload(
            requester=requester,
            notary=notary,
            outputs_hash=fixed.outputs,
            commands_hash=fixed.commands,
        ).SerializeToString()

    def request(self, nonce: bytes, inputs: Sequence[Ref]) -> Asked:
        """(tx_id, request) of the transaction with `nonce` spending `inputs` (unsigned: its
        batch is signed when it is sent, `notary_batches`)."""
        ins, refs, name, window = visible_components(inputs, (), self.notary, UNBOUNDED)
        nonce_hash = group_hash("nonce", (nonce,))
        f = self._fixed
        tx_id = Components(ins, refs, f.outputs, f.commands, name, window, nonce_hash).tx_id()
        P = notarisation_pb2.NotarisationPayload
        head = P(tx_id=tx_id, inputs=[state_ref(r) for r in inputs]).SerializeToString()
        tail = P(nonce_hash=nonce_hash).SerializeToString()
        return tx_id, Request(payload=head + self._middle + tail)


class AnswerCheck:
    """Verifies a notary's answers offline, as their holder would: each result is about the
    tx_id asked, signed by the notary's certificate from the network map (never the answer's
    word for it), over the root its leaf proof leads to (`check_notary_signature`). One batch's
    results share one signature: it is verified once per distinct (signature, root)."""

    def __init__(self, notary: bytes, membership: Membership) -> None:
        self.notary = notary
        self.membership = membership

    def check(self, asked: Sequence[Asked], results: Sequence[Result]) -> None:
        """Turn every signed result that does not verify into a BAD_SIGNATURE refusal."""
        now = utc_now()
        checked: set[tuple[bytes, bytes]] = set()
        for (tx_id, _), result in zip(asked, results, strict=True):
            if result.reason or not result.response.notary_signature.signature:
                continue
            try:
                self._check_one(tx_id, result.response, now, checked)
            except ClientError as exc:
                result.reason, result.message = exc.reason, f"answer does not verify: {exc}"

    def _check_one(
        self,
        tx_id: str,
        response: notarisation_pb2.NotarisationResponse,
        now: datetime,
        checked: set[tuple[bytes, bytes]],
    ) -> None:
        signed = response.notary_signature
        if response.tx_id != tx_id or signed.signer != self.notary:
            raise ClientError(
                errors_pb2.ERROR_REASON_BAD_SIGNATURE, "not this notary's answer about this tx_id"
            )
        has_proof = response.HasField("batch_proof")
        proof = proof_of_pb(response.batch_proof) if has_proof else None
        if proof is not None:
            root = signed_message(tx_id, proof)
            if (signed.signature, root) in checked:
                return
            checked.add((signed.signature, root))
        check_notary_signature(tx_id, signed.signer, signed.signature, proof, self.membership, now)


def notary_batches(
    client: NotaryClient,
    batch_max: int,
    streams: int,
    party: PartyFiles,
    ordered_elsewhere: bool = False,
) -> Coalescer[Asked, Result]:
    """Concurrent requests to one notary, sent in batches of what waits, each batch signed once
    by the party (`client/notary_batches.py`, the SDK's); every answer is verified
    (`AnswerCheck`) before its caller hears of it."""
    answers = AnswerCheck(party.netmap.identity_of(client.notary_id), party.netmap.membership())
    return batches_to(client, batch_max, streams, party.signer, ordered_elsewhere, answers.check)


def refusal(result: Result) -> str | None:
    """None when the notary signed, else the refusal's reason name."""
    if result.reason == 0 and result.response.notary_signature.signature:
        return None
    try:
        return errors_pb2.ErrorReason.Name(errors_pb2.ErrorReason.ValueType(result.reason))
    except ValueError:
        return f"REASON_{result.reason}"


async def answers(futures: Sequence[asyncio.Future[Result]]) -> list[Result]:
    """The results of one request's futures (one per member asked), awaited in turn.

    `asyncio.gather` of `Coalescer.call` coroutines made a task per member per request — ~14 %
    of the bench client's samples at saturation (RESULTS 2026-12-04 ncl7); the futures from
    `Coalescer.submit` need none. The first failure is raised, as gather's; every future is
    then cancelled: an item not sent yet is withdrawn, and `cancel` of one already settled
    (a no-op) marks its exception as seen, so no "exception was never retrieved" is logged.
    """
    try:
        return [await f for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise


class NotaryDriver:
    """Notarisations through one notary or f+1 members of a cluster (see the module doc)."""

    def __init__(
        self,
        parties: Sequence[PartyFiles],
        batches: dict[tuple[int, str], tuple[NotaryClient, Coalescer[Asked, Result]]],
        notary: str,
        members: Sequence[str],
        attest: dict[tuple[int, str], Coalescer[Asked, Result]] | None = None,
    ) -> None:
        self.parties = list(parties)
        self.batches = batches
        self.attest = attest or {}
        self.notary = notary
        self.members = tuple(members)
        self.quorum = (len(self.members) - 1) // 3 + 1  # f + 1 (1 for a single notary)
        self._turn = itertools.count()
        self._templates = [RequestTemplate(notary, p.signer.identity_bytes) for p in parties]

    @staticmethod
    async def connect(net: Path, shape: NetworkShape, batch: int, streams: int) -> NotaryDriver:
        """A connection per (client, member), up to `streams` batches in flight on each (for a
        cluster, as many again of attest batches)."""
        parties = [PartyFiles.load(net, c) for c in shape.client_ids()]
        opened: dict[tuple[int, str], tuple[NotaryClient, Coalescer[Asked, Result]]] = {}
        attest: dict[tuple[int, str], Coalescer[Asked, Result]] = {}
        cluster = len(shape.notary_ids()) > 1
        for i, party in enumerate(parties):
            for member in shape.notary_ids():
                client = await NotaryClient.connect(party, member)
                coalescer = notary_batches(client, batch, streams, party)
                opened[(i, member)] = (client, coalescer)
                if cluster:
                    attest[(i, member)] = notary_batches(client, batch, streams, party, True)
        return NotaryDriver(parties, opened, shape.notary(), shape.notary_ids(), attest)

    def request(self, who: int, op: Op) -> Asked:
        """(tx_id, request) for `op` (nonce, input tx ids) from party `who`, unsigned (its batch
        is signed when it is sent, `notary_batches`)."""
        inputs = [Ref(t, 0) for t in op.args[1:]]
        return self._templates[who].request(bytes.fromhex(op.args[0]), inputs)

    async def execute(self, op: Op) -> Outcome:
        """Notarise; VALID when every asked member signed."""
        turn = next(self._turn)
        who = turn % len(self.parties)
        started = time.perf_counter()
        asked = self.request(who, op)
        tx_id = asked[0]
        members = [self.members[(turn + k) % len(self.members)] for k in range(self.quorum)]
        # the first member orders; the others attest what it orders (a cluster's f+1)
        futures = [self.batches[(who, members[0])][1].submit(asked)]
        futures += [self.attest[(who, m)].submit(asked) for m in members[1:]]
        try:
            results = await answers(futures)
        except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as exc:
            now = time.perf_counter()
            return Outcome(tx_id, None, classify(exc), started, now, detail=describe(exc))
        refused = [r for r in map(refusal, results) if r is not None]
        if refused:
            detail = next(r.message for r in results if refusal(r) is not None)
            return Outcome(tx_id, None, refused[0], started, time.perf_counter(), detail=detail)
        return Outcome(tx_id, VALID, None, started, time.perf_counter())

    async def close(self) -> None:
        """Stop every coalescer and close every connection."""
        for attest in self.attest.values():
            await attest.close()
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
        # the report's client_signing: their envelopes signed per Transact request
        self.signers = [c.client.signing for c, _ in self.clients]

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
