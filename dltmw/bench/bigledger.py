"""A large ledger, made fast through the real builders: what `--ledger-blocks` starts from.

Why. Memory after a million transactions and restart of a 100,000-block ledger (issue 18) cannot
be measured by submitting that many transactions through a loaded two-core machine (hours). The
orderer's ledger is instead written directly, block by block, with exactly the code the solo
orderer runs (`core.block.make_block`, the orderer's signature over `block_hash`, and
`ChannelLedger.commit_block`), over envelopes built exactly as a client and the two endorsing
peers build them (`GatewayClient.proposal`, `core.contract.simulate` of the built-in `kv`
contract's `put` — a blind write of a distinct key, so its result does not depend on the state —,
the endorser's signature over `payload + identity`, the gateway's `Transaction`, the client's
envelope signature). Every signature is real, made with the network's own keys. Nothing on the
peers is written: when the nodes start, the peers catch up by Deliver and validate and commit
every block through their normal commit path, which is what the benchmark measures.

The orderer file is written with `synchronous=NORMAL` (WAL: no fsync per block): the rows are
the same bytes; only the build's crash safety differs, and a build that crashes is made again.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dltmw.aio.clock import utc_now
from dltmw.contracts import builtin_contract
from dltmw.core.block import block_hash, make_block
from dltmw.core.contract import simulate
from dltmw.core.genesis import genesis_tx_id, read_genesis
from dltmw.core.hashing import compute_tx_id, sha256
from dltmw.core.identity import SigningIdentity
from dltmw.core.lifecycle import genesis_definitions
from dltmw.core.rwset import StateEntry, Version
from dltmw.ledger.sqlite import ChannelLedger
from dltmw.net.signer import key_ref, load_signer
from dltmw.v1 import block_pb2, common_pb2, proposal_pb2, transaction_pb2

CONTRACT = "kv"
# Blocks of envelopes asked of the worker pool ahead of the one being committed.
PREFETCH = 8


@dataclass(frozen=True)
class LedgerPlan:
    """How big a ledger to make: `blocks` blocks after block 0, `txs_per_block` each."""

    blocks: int
    txs_per_block: int
    value_bytes: int = 32

    @property
    def txs(self) -> int:
        """Transactions in the made blocks."""
        return self.blocks * self.txs_per_block


@dataclass(frozen=True)
class Made:
    """What `make_ledger` wrote: the orderer's height after it, and how long it took."""

    height: int
    txs: int
    seconds: float


def node_signer(net: Path, node_id: str) -> SigningIdentity:
    """The signing identity of node `node_id` of a network made by `dltmw init`."""
    home = net / "nodes" / node_id
    with (home / "node.toml").open("rb") as f:
        cfg = tomllib.load(f)
    files = cfg["files"]
    return load_signer(
        cfg["node"]["org"], home / files["identity_cert"], key_ref(home, files["identity_key"])
    )


def client_signer(net: Path, client_id: str) -> SigningIdentity:
    """The signing identity of client `client_id`."""
    home = net / "clients" / client_id
    with (home / "client.toml").open("rb") as f:
        cfg = tomllib.load(f)
    files = cfg["files"]
    return load_signer(
        cfg["client"]["org"], home / files["identity_cert"], key_ref(home, files["identity_key"])
    )


class _NoState:
    """The empty state a blind write is simulated against (it reads nothing)."""

    def last_block_number(self) -> int:
        return 0

    def get(self, namespace: str, key: str) -> tuple[bytes, Version] | None:
        return None

    def tx_record(self, tx_id: str) -> None:
        return None

    def range(self, namespace: str, start: str, end: str, limit: int) -> list[StateEntry]:
        return []


@dataclass(frozen=True)
class EnvelopeMaker:
    """Builds signed, endorsed `kv.put` envelopes, byte for byte as client, gateway and
    endorsers do (module docstring)."""

    channel_id: str
    client: SigningIdentity
    endorsers: tuple[SigningIdentity, ...]
    sequence: int
    value_bytes: int

    def envelope(self, seq: int) -> bytes:
        """The envelope of the `seq`-th transaction: `put k<seq>`."""
        creator = self.client.identity_bytes
        nonce = os.urandom(24)
        header = common_pb2.Header(
            type=common_pb2.HEADER_TYPE_ENDORSER_TRANSACTION,
            channel_id=self.channel_id,
            tx_id=compute_tx_id(nonce, creator),
            creator=creator,
            nonce=nonce,
        )
        header.timestamp.FromDatetime(utc_now())
        args = [f"k{seq}".encode(), str(seq).zfill(self.value_bytes).encode()]
        invocation = proposal_pb2.ContractInvocation(contract=CONTRACT, function="put", args=args)
        header_bytes = header.SerializeToString()
        proposal_bytes = proposal_pb2.Proposal(
            header=header_bytes, payload=invocation.SerializeToString()
        ).SerializeToString()
        contract = builtin_contract(CONTRACT)
        assert contract is not None
        payload = simulate(contract, invocation, _NoState())
        if payload.response.status != 200:
            raise RuntimeError(f"kv.put refused: {payload.response.message}")
        payload.rwset.contract_sequence = self.sequence
        payload.proposal_hash = sha256(proposal_bytes)
        payload_bytes = payload.SerializeToString()
        endorsements = [
            proposal_pb2.Endorsement(
                endorser=e.identity_bytes, signature=e.sign(payload_bytes + e.identity_bytes)
            )
            for e in self.endorsers
        ]
        tx = transaction_pb2.Transaction(
            proposal_bytes=proposal_bytes, response_payload=payload_bytes, endorsements=endorsements
        )
        prepared = common_pb2.Payload(header=header_bytes, data=tx.SerializeToString())
        prepared_bytes = prepared.SerializeToString()
        return common_pb2.Envelope(
            payload=prepared_bytes, signature=self.client.sign(prepared_bytes)
        ).SerializeToString()


_WORKER: dict[str, EnvelopeMaker] = {}  # the maker of this worker process (keys loaded once)


def _init_worker(net: Path, channel_id: str, value_bytes: int) -> None:
    _WORKER["maker"] = maker_for(net, channel_id, value_bytes)


def _envelopes(first: int, count: int) -> list[bytes]:
    maker = _WORKER["maker"]
    return [maker.envelope(seq) for seq in range(first, first + count)]


def maker_for(net: Path, channel_id: str, value_bytes: int = 32) -> EnvelopeMaker:
    """The envelope maker of the bench network `net` (`bench.topology`: user1.org1 submits,
    every org's peer0 endorses, as `AND(Org1.peer, Org2.peer)` asks)."""
    view = read_genesis(genesis_of(net, channel_id))
    sequence = genesis_definitions(view.config)[CONTRACT].sequence
    peers = sorted(n.node_id for n in view.config.peers)
    return EnvelopeMaker(
        channel_id,
        client_signer(net, "user1.org1"),
        tuple(node_signer(net, p) for p in peers),
        sequence,
        value_bytes,
    )


def genesis_of(net: Path, channel_id: str) -> block_pb2.Block:
    """Block 0 of `channel_id` as `dltmw init` wrote it."""
    return block_pb2.Block.FromString((net / "channels" / f"{channel_id}.block").read_bytes())


def orderer_ledger_path(net: Path, orderer_id: str, channel_id: str) -> Path:
    """Where a solo orderer keeps a channel's blocks (`runtime.node`)."""
    return net / "nodes" / orderer_id / "data" / f"{channel_id}.orderer.sqlite"


def make_ledger(
    net: Path,
    channel_id: str,
    plan: LedgerPlan,
    orderer_id: str = "orderer0",
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> Made:
    """Write `plan` into the orderer's ledger of `channel_id` (which must not have started yet,
    or hold only block 0); envelopes are signed on `workers` processes."""
    t0 = time.perf_counter()
    # Spawned, not forked: the caller may run threads (a test runner's, an event loop's pools),
    # and a fork can copy a lock another thread holds into the child, which then never gets it
    # (a worker hung for 12 min in cryptography's certificate parsing in a test run).
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initargs=(net, channel_id, plan.value_bytes),
        initializer=_init_worker,
    )
    with pool:
        batches = _batches(pool, plan)
        height = asyncio.run(_write(net, channel_id, orderer_id, batches, plan.blocks, progress))
    return Made(height, plan.txs, time.perf_counter() - t0)


def _batches(pool: ProcessPoolExecutor, plan: LedgerPlan) -> Iterator[list[bytes]]:
    """The blocks' envelopes in order, `PREFETCH` blocks asked ahead."""
    n = plan.txs_per_block
    asked: list[Future[list[bytes]]] = []
    starts = iter(range(0, plan.txs, n))
    for first in itertools.islice(starts, PREFETCH):
        asked.append(pool.submit(_envelopes, first, n))
    while asked:
        done = asked.pop(0).result()
        nxt = next(starts, None)
        if nxt is not None:
            asked.append(pool.submit(_envelopes, nxt, n))
        yield done


async def _write(
    net: Path,
    channel_id: str,
    orderer_id: str,
    batches: Iterator[list[bytes]],
    blocks: int,
    progress: Callable[[int], None] | None,
) -> int:
    path = orderer_ledger_path(net, orderer_id, channel_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    signer = node_signer(net, orderer_id)
    ledger = await ChannelLedger.open(path, synchronous="NORMAL")
    try:
        if ledger.height == 0:  # as `runtime.node` writes it on the orderer's first start
            genesis = genesis_of(net, channel_id)
            await ledger.commit_block(genesis, [genesis_tx_id(genesis)])
        if ledger.height != 1:
            raise RuntimeError(f"{path} holds {ledger.height} blocks; expected only block 0")
        for i, envelopes in enumerate(batches):
            block = make_block(channel_id, ledger.height, ledger.last_hash, envelopes)
            # as `SoloExecutor.apply`: sign the hash, commit with no tx rows and no writes
            block.metadata.signatures.add(
                signer=signer.identity_bytes, signature=signer.sign(block_hash(block))
            )
            await ledger.commit_block(block, ())
            if progress is not None:
                progress(i + 1)
        if ledger.height != blocks + 1:
            raise RuntimeError(f"wrote {ledger.height - 1} blocks, expected {blocks}")
        return ledger.height
    finally:
        await ledger.close()
