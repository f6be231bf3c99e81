"""A peer's cost per committed block, measured directly (issue 13, lane peerblk).

Why: end to end, the CPU per transaction of a small block is dominated by fixed costs per block
(benchmarks/RESULTS.md, lat13: ~5 ms per block on each peer of a loaded host), but an end-to-end
bench mixes every process and the block size the host's contention produces. This harness puts
one real peer's commit path alone in a process and feeds it the same blocks one at a time:

1. `gen`: an in-process network (`dltmw.open`, the default topology: solo orderer, two peers
   with privacy keys, `kv` contract) commits `--blocks` blocks of `--txs` kv puts each (waves of
   concurrent submits); the orderer's blocks are saved to `blocks.bin` (length-prefixed).
2. `run`: a copy of that network directory in which only `peer0.org2` starts, with its channel
   ledger and private store removed, and no orderer (its Deliver loop fails to connect and backs
   off: a constant, small). Every saved block after genesis goes through
   `PeerChannel.commit`, awaited one by one, so commit, Events, the private executor and
   metrics see one block at a time, as at low load. Process CPU (`time.process_time`, all
   threads) per block and, with `--profile`, cProfile call counts per block (deterministic)
   are printed.

    python benchmarks/peer_block_cost.py gen --dir /tmp/pb/net7 --txs 7 --blocks 200
    python benchmarks/peer_block_cost.py run --dir /tmp/pb/net7 [--profile OUT.pstats]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

import dltmw
from dltmw.runtime.config import NodeConfig
from dltmw.runtime.node import Node
from dltmw.v1 import block_pb2

PEER = "peer0.org2"
CHANNEL = "main"
WARMUP = 20  # blocks committed before the measurement starts (imports, caches, first fsyncs)


async def gen(directory: Path, txs: int, blocks: int) -> None:
    """Commit `blocks` waves of `txs` concurrent kv puts and save the orderer's blocks."""
    async with dltmw.open(directory / "net") as net:
        client = net.client("user1.org1")
        seq = 0
        for _ in range(blocks):
            ops = []
            for _ in range(txs):
                ops.append(client.submit(CHANNEL, "kv", "put", f"k{seq % 997}", f"v{seq:08d}"))
                seq += 1
            await asyncio.gather(*ops)
        ledger = net.nodes["orderer0"].orderers[CHANNEL].ledger
        data = await ledger.block_data(0, ledger.height)
    with (directory / "blocks.bin").open("wb") as out:
        for raw in data:
            out.write(struct.pack(">I", len(raw)) + raw)
    sizes = [len(block_pb2.Block.FromString(r).data.envelopes) for r in data[1:]]
    print(
        json.dumps(
            {"blocks": len(sizes), "txs": sum(sizes), "tx_per_block": sum(sizes) / len(sizes)}
        )
    )


def saved_blocks(directory: Path) -> list[block_pb2.Block]:
    raw = (directory / "blocks.bin").read_bytes()
    out, at = [], 0
    while at < len(raw):
        (size,) = struct.unpack_from(">I", raw, at)
        out.append(block_pb2.Block.FromString(raw[at + 4 : at + 4 + size]))
        at += 4 + size
    return out


def fresh_peer(directory: Path, tmp: Path) -> Path:
    """A copy of the generated network whose `PEER` has no ledger or store yet: its home."""
    shutil.copytree(directory / "net", tmp / "net")
    home = tmp / "net" / "nodes" / PEER
    for path in home.rglob("*"):  # the peer's ledgers and stores: it starts from genesis
        if path.is_file() and ".sqlite" in path.name:
            path.unlink()
    return home


async def run(blocks: list[block_pb2.Block], home: Path, profile: str | None) -> dict[str, float]:
    """Commit the saved blocks through a fresh `PEER`, one at a time; CPU per block."""
    node = Node(NodeConfig.load(home / "node.toml"))
    await node.start()
    try:
        channel = node.peers[CHANNEL]
        todo = [b for b in blocks if b.header.number >= channel.ledger.height]
        for block in todo[:WARMUP]:
            await channel.commit(block)
        measured = todo[WARMUP:]
        prof = cProfile.Profile() if profile else None
        t0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        for block in measured:
            await channel.commit(block)
        await asyncio.sleep(0)  # the followers (Events, private executor) see the last one
        if prof:
            prof.disable()
        c1, t1 = time.process_time(), time.perf_counter()
        if prof and profile:
            prof.dump_stats(profile)
        n = len(measured)
        txs = sum(len(b.data.envelopes) for b in measured)
        return {
            "blocks": n,
            "tx_per_block": txs / n,
            "cpu_ms_per_block": 1000 * (c1 - c0) / n,
            "wall_ms_per_block": 1000 * (t1 - t0) / n,
            "load1": os.getloadavg()[0],
        }
    finally:
        await node.stop(grace_s=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["gen", "run"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--txs", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=200)
    parser.add_argument("--profile")
    args = parser.parse_args()
    if args.mode == "gen":
        if args.dir.exists():
            shutil.rmtree(args.dir)
        asyncio.run(gen(args.dir, args.txs, args.blocks))
        return
    blocks = saved_blocks(args.dir)
    with tempfile.TemporaryDirectory(prefix="dltmw-pb-") as tmp:
        home = fresh_peer(args.dir, Path(tmp))
        print(json.dumps(asyncio.run(run(blocks, home, args.profile))))


if __name__ == "__main__":
    main()
