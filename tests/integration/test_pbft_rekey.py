"""Re-keying a PBFT-lite replica the way an operator does it, on real processes
(services/networks/bft-four.toml; docs/governance.md, "Changing the replica set").

OrdererB's operator replaces orderer.b by orderer.b2, a node with a new identity:
`dltmw org add-node --role orderer` issues its material from OrdererB's CA, it is started and
joined to the channel (`channel join`: a follower), `channel update --add-orderer` (two admins)
adds it — it catches up and signs —, then `--remove-orderer orderer.b` removes the old one. The
removal is ordered while orderer.b is suspended with clients' Broadcasts waiting on it: once it
resumes and learns it was removed it refuses them at once (ORDERING_UNAVAILABLE, "no longer ...
an orderer"), not after the 60 s submit timeout, and refuses new ones too. After the re-key
every block is signed by the new set only (orderer.b2's key in, orderer.b's out), and a block
signature or a replica message made with orderer.b's key is refused by the replicas in force.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.core.block import block_hash
from dltmw.core.identity import SigningIdentity, reference_bytes
from dltmw.rpc.tls import TlsMaterial, secure_channel
from dltmw.v1 import errors_pb2, orderer_service_pb2, orderer_service_pb2_grpc, replica_pb2

from .cli import dltmw
from .test_pbft_ordering import (
    ORDERERS,
    TOPOLOGY,
    VALID,
    _blocks,
    _cli_add_orderer,
    _orderer_identity,
    _refused,
    _replica_stub,
    _same_chain,
    _signed,
    _wait,
)

pytestmark = pytest.mark.integration
S = grpc.StatusCode
WAITING = 4  # Broadcasts left waiting on the removed replica (after one that opens the stream)
REFUSED_WITHIN_S = 15.0  # far below the 60 s submit timeout, with room for a loaded machine


def _broadcast_stub(net: Path, node: str) -> tuple[grpc.aio.Channel, object]:
    home = net / "clients" / "user1.org1"
    tls = TlsMaterial.load(home / "tls.pem", home / "tls.key", net / "tls-roots.pem")
    address = (net / "run" / "endpoints" / node).read_text().strip()
    channel = secure_channel(address, node, tls, 8 * 1024 * 1024)
    return channel, orderer_service_pb2_grpc.OrdererServiceStub(channel)


async def _envelopes(client: GatewayClient, prefix: str, count: int) -> list[bytes]:
    """Endorsed, signed envelopes ready for an orderer's Broadcast."""
    out = []
    for i in range(count):
        proposal, _ = client.proposal("trades", "kv", "put", [f"{prefix}{i}", "v"])
        endorsed = await client.endorse(proposal)
        out.append(client.envelope(endorsed.prepared_payload).SerializeToString())
    return out


async def _remove_while_suspended(
    net: Path, sup, tmp_path: Path, stub, waiting: list[bytes]
) -> tuple[int, list[orderer_service_pb2.BroadcastResult], float]:
    """Suspend orderer.b, order its removal, leave `waiting[1:]` Broadcasts on it (the first
    opened the stream and was ordered), resume it; returns the removal's block, the waiting
    Broadcasts' results and seconds from resume to answer."""
    pid = sup.node_pid("orderer.b")
    assert pid is not None
    call = stub.Broadcast()  # connected now: no TLS handshake with a suspended process
    await call.write(orderer_service_pb2.BroadcastRequest(envelopes=waiting[:1]))
    assert [r.accepted for r in (await call.read()).results] == [True]
    os.kill(pid, signal.SIGSTOP)
    try:
        upd, net_s = str(tmp_path / "rm-b.update"), str(net)
        run = asyncio.to_thread
        await run(dltmw, "channel", "update", net_s, "trades", "--remove-orderer", "orderer.b",
                  "-o", upd, "-c", "admin.org1")  # fmt: skip
        for admin in ("admin.org1", "admin.org2"):
            await run(dltmw, "channel", "update", net_s, "trades", "--sign", upd, "-c", admin)
        said = await run(
            dltmw, "channel", "update", net_s, "trades", "--submit", upd, "-c", "admin.org1"
        )
        assert " VALID in block " in said, said
        await call.write(orderer_service_pb2.BroadcastRequest(envelopes=waiting[1:]))
        answer = asyncio.ensure_future(call.read())
        await asyncio.sleep(0.5)  # the request reaches the suspended process's socket
        assert not answer.done()
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    response = await asyncio.wait_for(answer, 70)
    took = time.monotonic() - resumed
    await call.done_writing()
    return int(said.rsplit(" ", 1)[-1]), list(response.results), took


async def test_an_orderer_is_rekeyed_by_add_node_add_then_remove(network, tmp_path: Path) -> None:
    net, sup = network(TOPOLOGY)
    old_key = _orderer_identity(net, "orderer.b", "OrdererB")
    b_channel, b_stub = _broadcast_stub(net, "orderer.b")
    async with await GatewayClient.connect(net, "user1.org1", pipelined=False) as client:

        async def put(key: str) -> int:
            return (await client.submit_transaction("trades", "kv", "put", key, "v")).status.result

        try:
            assert await put("before") == VALID
            said = await asyncio.to_thread(
                dltmw, "org", "add-node", str(net), "orderer.b2", "--role", "orderer",
                "--org", "OrdererB",
            )  # fmt: skip
            assert "orderer.b2 (orderer) written to" in said
            sup.start("orderer.b2")
            sup.wait_ready("orderer.b2", timeout_s=60)
            joined = await asyncio.to_thread(
                dltmw, "channel", "join", str(net), "trades", "orderer.b2"
            )
            assert "joined trades" in joined
            first = await _cli_add_orderer(net, tmp_path, "orderer.b2")
            new_key = _orderer_identity(net, "orderer.b2", "OrdererB")
            assert new_key != old_key
            five = [*ORDERERS, "orderer.b2"]
            assert await put("between") == VALID
            await _wait(lambda: _same_chain(net, five), 60, "orderer.b2 to follow and join")
            assert await put("joined") == VALID
            await _wait(lambda: _same_chain(net, five), 60, "all five after the join")
            signed = _blocks(net, "orderer.b2")[first + 1 :]
            # named by its reference (the channel takes identity references)
            named = reference_bytes(new_key)
            assert any(s.signer == named for b in signed for s in b.metadata.signatures)

            waiting = await _envelopes(client, "waiting", WAITING + 1)
            second, results, took = await _remove_while_suspended(
                net, sup, tmp_path, b_stub, waiting
            )
            unavailable = errors_pb2.ERROR_REASON_ORDERING_UNAVAILABLE
            assert [(r.accepted, r.reason) for r in results] == [(False, unavailable)] * WAITING
            assert "no longer" in results[0].message, results[0].message
            assert took < REFUSED_WITHIN_S, f"refused after {took:.1f} s"
            print(f"waiting Broadcasts refused {took:.2f} s after orderer.b resumed")
            late = await _envelopes(client, "late", 1)
            start = time.monotonic()
            call = b_stub.Broadcast()
            await call.write(orderer_service_pb2.BroadcastRequest(envelopes=late))
            (result,) = (await call.read()).results
            await call.done_writing()
            assert (result.accepted, result.reason) == (False, unavailable)
            assert time.monotonic() - start < REFUSED_WITHIN_S
            assert [await put(f"after{i}") for i in range(3)] == [VALID] * 3
        finally:
            await b_channel.close()
    left = ["orderer.a", "orderer.c", "orderer.d", "orderer.b2"]
    await _wait(lambda: _same_chain(net, left), 60, "the four in force to agree")
    chain = _blocks(net, "orderer.a")
    # the channel takes identity references: the replicas in force name themselves so
    in_force = {reference_bytes(_orderer_identity(net, n, f"Orderer{n[8].upper()}")) for n in left}
    after = chain[second + 1 :]
    assert after, "blocks after the re-key"
    for block in after:
        signers = {s.signer for s in block.metadata.signatures}
        assert signers <= in_force and len(signers) >= 3, block.header.number
        assert not signers & {old_key, reference_bytes(old_key)}
    # Not asserted: that orderer.b2's own signature is among them. A block needs 3 of the 4,
    # and under load b2 can be the slowest every time (a fresh-clone run failed on it); b2
    # holding the same chain is checked above.
    await _old_key_is_refused(net, chain[-1])


async def _old_key_is_refused(net: Path, head) -> None:
    """orderer.b's key, after the re-key: its signature of the head block and a prepare it
    signs are refused by orderer.a whatever replica index they claim (index 1 is orderer.c's
    now; 4 is none); orderer.b's TLS (OrdererB still orders) lets them reach the check."""
    home = net / "nodes" / "orderer.b"
    old = SigningIdentity.from_pem(
        "OrdererB", (home / "identity.pem").read_bytes(), (home / "identity.key").read_bytes()
    )
    channel, stub = _replica_stub(net, "orderer.a", "orderer.b")
    try:
        digest = block_hash(head)
        for index, code, reason in ((1, S.PERMISSION_DENIED, "BAD_SIGNATURE"),
                                    (4, S.PERMISSION_DENIED, "NOT_A_MEMBER")):  # fmt: skip
            sig = replica_pb2.BlockSignature(
                number=head.header.number, block_hash=digest, replica=index,
                signature=old.sign(digest),
            )  # fmt: skip
            request = replica_pb2.ExchangeRequest(channel_id="trades", block_signatures=[sig])
            await _refused(stub.Exchange(request), code, reason)
            vote = replica_pb2.Vote(view=0, sequence=1, digest=b"d" * 32)
            prepare = _signed(old, index, replica_pb2.ReplicaMessage(prepare=vote))
            request = replica_pb2.ExchangeRequest(channel_id="trades", messages=[prepare])
            await _refused(stub.Exchange(request), code, reason)
    finally:
        await channel.close()
