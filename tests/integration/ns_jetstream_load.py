"""A steady load of kv puts as a client process (used inside a network namespace by
test_jetstream_partition.py): `python ns_jetstream_load.py NET CLIENT PREFIX`.

Eight workers put keys `PREFIX<i>` one after another, each waiting for its commit status, until
a line `stop` arrives on stdin (or 3,000 puts, or 150 s). A submission refused as UNAVAILABLE
is resubmitted (the same envelope, as a client retries) for up to 60 s. Prints `committed N`
after each VALID commit, then one line `RESULT {json}`: the acknowledged-and-valid tx ids,
the acknowledged ones that never committed (`lost`) and the ones never acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import grpc

from dltmw.client import GatewayClient
from dltmw.rpc.status import reason_of
from dltmw.v1 import transaction_pb2

VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
WORKERS = 8
MAX_PUTS = 3000
MAX_S = 150.0
RETRY_S = 60.0


async def put(client: GatewayClient, key: str, retry_s: float = RETRY_S) -> tuple[str, str]:
    """Put `key` once: (tx_id, "") when the submission was acknowledged, else (tx_id, why not).
    A submission refused as UNAVAILABLE is resubmitted (the same envelope, as a client retries)
    for up to `retry_s`: it may then be ordered once or not at all, never twice. Shared with
    test_jetstream_ordering.py."""
    signed, tx_id = client.proposal("trades", "kv", "put", (key, "v"))
    envelope = client.envelope((await client.endorse(signed)).prepared_payload)
    deadline = time.monotonic() + retry_s
    while True:
        try:
            await client.submit(envelope)
            return tx_id, ""
        except grpc.aio.AioRpcError as exc:
            if reason_of(exc) == "DUPLICATE_TX_ID":
                return tx_id, ""  # an earlier attempt was ordered after all: acknowledged now
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                return tx_id, f"{exc.code().name} {reason_of(exc)}"
            await asyncio.sleep(0.2)


async def main(net: Path, client_id: str, prefix: str) -> None:
    committed: list[str] = []
    lost: list[str] = []
    unacknowledged: list[str] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(
        sys.stdin.fileno(), lambda: stop.set() if "stop" in sys.stdin.readline() else None
    )
    numbers = iter(range(MAX_PUTS))
    async with await GatewayClient.connect(net, client_id) as client:

        async def put_one(i: int) -> None:
            tx_id, refused = await put(client, f"{prefix}{i}")
            if refused:
                unacknowledged.append(f"{tx_id[:12]}: {refused}")
                return
            try:
                status = await client.commit_status("trades", tx_id)
            except grpc.aio.AioRpcError as exc:
                lost.append(f"{tx_id[:12]}: {reason_of(exc)}")
                return
            if status.result == VALID:
                committed.append(tx_id)
                print(f"committed {len(committed)}", flush=True)

        async def worker() -> None:
            for i in numbers:
                if stop.is_set():
                    return
                await put_one(i)
                await asyncio.sleep(0.02)

        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(WORKERS))), MAX_S)
        except TimeoutError:
            unacknowledged.append("the load did not end in time")
    result = {"committed": committed, "lost": lost, "unacknowledged": unacknowledged}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
