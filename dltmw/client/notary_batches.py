"""Concurrent notarisation requests to one notary, sent in batches of what waits.

A unary `Notarise` per request costs the notary a gRPC call, an admission and a turn of its
driver for every request; a client notarising many transactions at once pays that per request
(measured on a notary cluster: ~10 ms of the members' CPU per notarisation through unary calls,
~1.5 ms through batches, benchmarks/RESULTS.md 2026-12-03). So concurrent calls are gathered
(`aio/coalesce.Coalescer`) into one NotariseStream message each, `streams` batches in progress
at once, each on its own long-lived stream (`BatchStreams`). A batch is either signed once by
the requester (`signer`: the requests carry only their payloads; the notary verifies one
signature for the message) or made of requests signed one by one. `ordered_elsewhere` asks a
cluster member to attest what another member orders. `check` may rewrite answers that do not
verify before their callers see them. Shared by the SDK (`client/notary_cluster.py`) and the
benchmark's notary driver (`bench/flow_drivers.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dltmw.aio.coalesce import Coalescer
from dltmw.client.utxo import BatchStreams, NotaryClient, signed_batch
from dltmw.core.identity import SigningIdentity
from dltmw.v1 import notarisation_pb2, notary_service_pb2

Request = notarisation_pb2.NotarisationRequest
Result = notarisation_pb2.NotarisationResult
Asked = tuple[str, Request]  # (tx_id, request): the tx_id its answer must be about
Check = Callable[[Sequence[Asked], Sequence[Result]], None]

BATCH_MAX = 500  # requests per message (the benchmark's default)
STREAMS = 2  # batches in progress at once per notary


def notary_batches(
    client: NotaryClient,
    batch_max: int = BATCH_MAX,
    streams: int = STREAMS,
    signer: SigningIdentity | None = None,
    ordered_elsewhere: bool = False,
    check: Check | None = None,
) -> Coalescer[Asked, Result]:
    """A coalescer whose `call((tx_id, request))` returns the notary's result for the request
    (module docstring). With `signer`, the requests are unsigned payloads and each batch is
    signed once by `signer`; without, each request carries its own signature."""
    calls = BatchStreams(client)

    async def send(batch: Sequence[Asked]) -> list[Result]:
        requests = [r for _, r in batch]
        if signer is not None:
            message = signed_batch([r.payload for r in requests], signer)
        else:
            message = notary_service_pb2.NotariseStreamRequest(requests=requests)
        message.ordered_elsewhere = ordered_elsewhere
        results = await calls.exchange(message)
        if check is not None:
            check(batch, results)
        return results

    name = f"notary-{client.notary_id}" + ("-attest" if ordered_elsewhere else "")
    return Coalescer(send, batch_max=batch_max, name=name, max_concurrent=streams)
