"""CPU per private transaction of an Events response, with and without `private_payload_owed`.

A block of 100 VALID private transactions, each with 3 agreements (a 700-byte signer identity,
3 recipient keys), reported by `rpc/events.block_events` under a bus filter with
`private_transactions` — what a bus subscriber of the node's own organisation asks for. `plain`:
no owed key (main's only path; another organisation's client, a node without a privacy key);
`owed`: this node's key, so every agreement body is parsed to find it. Prints the best of 5
runs of 200 blocks, in microseconds per transaction, and the 1-minute load average.

    PYTHONPATH=<tree> .venv/bin/python benchmarks/events_owed.py plain|owed
"""

from __future__ import annotations

import os
import sys
import time

from dltmw.core.block import make_block
from dltmw.rpc.events import block_events
from dltmw.v1 import common_pb2, gateway_service_pb2, transaction_pb2
from dltmw.v1 import private_agreement_pb2 as A

T = transaction_pb2
KEYS = [bytes([i]) * 32 for i in range(1, 4)]
TXS, BLOCKS, RUNS = 100, 200, 5


def _envelope(i: int) -> bytes:
    agreements = []
    for _ in KEYS:
        body = A.PrivateAgreementBody(
            tx_id=f"tx{i}",
            payload_hash=os.urandom(32),
            pre_state_hash=os.urandom(32),
            delta_hash=os.urandom(32),
        )
        body.recipient_keys.extend(KEYS)
        agreements.append(
            A.PrivateAgreement(
                body=body.SerializeToString(), signer=os.urandom(700), signature=os.urandom(64)
            )
        )
    data = T.PrivateTransaction(payload_hash=os.urandom(32), agreements=agreements)
    header = common_pb2.Header(
        type=common_pb2.HEADER_TYPE_PRIVATE_TRANSACTION, channel_id="trades", tx_id=f"tx{i}"
    )
    payload = common_pb2.Payload(header=header.SerializeToString(), data=data.SerializeToString())
    envelope = common_pb2.Envelope(payload=payload.SerializeToString(), signature=os.urandom(64))
    return envelope.SerializeToString()


def main(mode: str) -> None:
    block = make_block("trades", 3, b"\0" * 32, [_envelope(i) for i in range(TXS)])
    block.metadata.validation_codes.extend([T.TX_VALIDATION_CODE_VALID] * TXS)
    query = gateway_service_pb2.EventsQuery(private_transactions=True)
    query.filters.add(contract="bus", names=["otc"])
    args = (block, query, KEYS[2]) if mode == "owed" else (block, query)
    reported = block_events(*args).transactions  # type: ignore[arg-type]
    assert len(reported) == TXS and all(t.private_payload_hash for t in reported)
    best = float("inf")
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(BLOCKS):
            block_events(*args)  # type: ignore[arg-type]
        best = min(best, (time.perf_counter() - started) / BLOCKS / TXS * 1e6)
    print(f"{mode} {best:.2f} us/tx load1={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
