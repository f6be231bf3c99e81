"""Client side of commit proofs: fetch a proof from peers of several organisations, fetch a
channel's config blocks, and keep a light client current.

Nothing fetched here is trusted: the proof is checked by whoever acts on it
(`core/commit_proof.verify_proof`, against its own light client), and config blocks by
`core/light_client.advance`. Fetching only gathers: a peer's answer that disagrees with the
others on what the proof is about (header, envelope, position, code) is that peer's fault
(PeerError) and is not merged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import grpc

from dltmw.aio.rpc_errors import from_rpc_error
from dltmw.core.errors import ClientError, DltmwError, PeerError
from dltmw.core.light_client import LightClient, advance
from dltmw.v1 import block_pb2, crosschain_pb2, crosschain_pb2_grpc, errors_pb2

X = crosschain_pb2
CALL_TIMEOUT_S = 30.0
LAG_S = 15.0  # how long a proof is asked for again while no peer has committed it yet
LAG_BACKOFF_FIRST_S, LAG_BACKOFF_MAX_S = 0.1, 2.0
CONFIG_ROUNDS_MAX = 1_000  # GetConfigBlocks calls per fetch (each scans up to 2,000 blocks)


def _same_subject(a: X.CommitProof, b: X.CommitProof) -> bool:
    return (
        a.header.SerializeToString(deterministic=True)
        == b.header.SerializeToString(deterministic=True)
        and a.envelope == b.envelope
        and a.tx_index == b.tx_index
        and a.code == b.code
    )


async def _ask(
    peers: Sequence[tuple[str, grpc.aio.Channel]],
    channel_id: str,
    tx_id: str,
    min_block_number: int,
    timeout_s: float,
) -> list[X.CommitProof | BaseException]:
    request = X.GetCommitProofRequest(
        channel_id=channel_id, tx_id=tx_id, min_block_number=min_block_number
    )

    async def one(node_id: str, channel: grpc.aio.Channel) -> X.CommitProof:
        stub = crosschain_pb2_grpc.CrossChainServiceStub(channel)
        try:
            return (await stub.GetCommitProof(request, timeout=timeout_s)).proof
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, node_id) from exc

    return list(await asyncio.gather(*(one(n, c) for n, c in peers), return_exceptions=True))


async def _ask_until_one_has_it(
    peers: Sequence[tuple[str, grpc.aio.Channel]],
    channel_id: str,
    tx_id: str,
    timeout_s: float,
    lag_s: float,
) -> list[X.CommitProof | BaseException]:
    """`_ask`, again (backing off, for up to `lag_s`) while every peer answers PROOF_UNAVAILABLE:
    the caller learnt of the commit from another peer (its gateway's) and these lag behind it,
    e.g. while they reconnect to an orderer that restarted. Peers that never committed it are
    told apart only by the time bound."""
    deadline = asyncio.get_running_loop().time() + lag_s
    delay = LAG_BACKOFF_FIRST_S
    while True:
        answers = await _ask(peers, channel_id, tx_id, 0, timeout_s)
        lagging = all(
            isinstance(a, DltmwError) and a.reason == errors_pb2.ERROR_REASON_PROOF_UNAVAILABLE
            for a in answers
        )
        if not answers or not lagging or asyncio.get_running_loop().time() + delay > deadline:
            return answers
        await asyncio.sleep(delay)
        delay = min(delay * 2, LAG_BACKOFF_MAX_S)


async def fetch_commit_proof(
    peers: Sequence[tuple[str, grpc.aio.Channel]],
    channel_id: str,
    tx_id: str,
    timeout_s: float = CALL_TIMEOUT_S,
    lag_s: float = LAG_S,
) -> X.CommitProof:
    """The proof of `tx_id` with the attestations of every peer in `peers` (node id, channel)
    that answered and agreed; raises the first peer's error if none answered. All are asked at
    once (again for up to `lag_s` while none has committed it yet); a peer that has not
    committed the transaction yet (it lags the one that has) is asked again, once, to answer
    when it reaches the block the others named."""
    answers = await _ask_until_one_has_it(peers, channel_id, tx_id, timeout_s, lag_s)
    found = [a for a in answers if isinstance(a, X.CommitProof)]
    late = [p for p, a in zip(peers, answers, strict=True) if isinstance(a, DltmwError)]
    if found and late:
        again = await _ask(late, channel_id, tx_id, found[0].header.number, timeout_s)
        retried = dict(zip([n for n, _ in late], again, strict=True))
        answers = [retried.get(n, a) for (n, _), a in zip(peers, answers, strict=True)]
    merged: X.CommitProof | None = None
    first_error: BaseException | None = None
    signers: set[bytes] = set()
    for (node_id, _), answer in zip(peers, answers, strict=True):
        if isinstance(answer, DltmwError):
            first_error = first_error or answer
            continue
        if isinstance(answer, BaseException):
            raise answer
        if merged is None:
            merged = X.CommitProof()
            merged.CopyFrom(answer)
            merged.ClearField("attestations")
        elif not _same_subject(merged, answer):
            first_error = first_error or PeerError(
                errors_pb2.ERROR_REASON_PROOF_MISMATCH,
                f"{node_id} answers a proof of another block, position or code for {tx_id}",
            )
            continue
        for a in answer.attestations:
            if a.signature.signer not in signers:
                signers.add(a.signature.signer)
                merged.attestations.append(a)
    if merged is None:
        raise first_error or ClientError(errors_pb2.ERROR_REASON_MISSING_FIELD, "no peer given")
    return merged


async def fetch_config_blocks(
    node_id: str, channel: grpc.aio.Channel, channel_id: str, from_block: int
) -> list[block_pb2.Block]:
    """Every config block of `channel_id` from `from_block` to the peer's height."""
    stub = crosschain_pb2_grpc.CrossChainServiceStub(channel)
    found: list[block_pb2.Block] = []
    at = from_block
    for _ in range(CONFIG_ROUNDS_MAX):
        request = X.GetConfigBlocksRequest(channel_id=channel_id, from_block=at)
        try:
            reply = await stub.GetConfigBlocks(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, node_id) from exc
        found.extend(reply.blocks)
        if reply.scanned_to >= reply.height or reply.scanned_to <= at:
            return found
        at = reply.scanned_to
    return found


async def follow_config(
    client: LightClient, node_id: str, channel: grpc.aio.Channel, at: datetime
) -> LightClient:
    """`client` advanced over the config blocks the peer holds beyond the last one it knows."""
    start = client.latest.config_block + 1
    for block in await fetch_config_blocks(node_id, channel, client.channel_id, start):
        client = advance(client, block, at)
    return client
