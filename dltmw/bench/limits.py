"""Limits probe: this machine's signature, gRPC and sqlite rates, measured in the same run.

Every benchmark result is also printed as a fraction of the bound these rates imply for its
workload, so a figure reads "62 % of the signature-verification bound" rather than a bare tx/s
that means nothing on another machine. The probe is short (about 3 s in all, each part a fixed
wall-clock slice) so it can run before every bench; it runs before the network starts, so the
nodes do not disturb it. Other users of the machine still can, so the CPU-bound rates are per
CPU-second of this process (`time.process_time`, all its threads), not per wall second: when
another process takes the core, the probe's clock stops too. sqlite is the exception (its cost
includes waiting for fsync), measured per wall second as the best of three slices.

What is measured (one thread, one core):
- ECDSA P-256 sign and verify with the project's own `SigningIdentity` / `verify_signature`;
- gRPC unary calls/s (64 in flight) and batched client-stream messages/s (100 items of 48 B each
  per message), client and server in this process on one event loop over 127.0.0.1 — so the
  rate is what one core sustains for BOTH ends, the cost a message has inside a node pair;
- sqlite rows/s with WAL, `synchronous=FULL`, 100 rows per transaction (one block's writes).

The bounds are arithmetic on a per-transaction cost model (`CostModel`), stated in the report:
they are upper bounds that assume every core does nothing else, not predictions.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from dltmw.core.identity import SigningIdentity, verify_signature
from dltmw.pki.ca import issue_cert, make_ca

MAX_ITERATIONS = 10_000_000  # every probe loop is also bounded by count
UNARY = "/dltmw.bench.Probe/Unary"
STREAM = "/dltmw.bench.Probe/Stream"


@dataclass(frozen=True)
class Limits:
    """Measured single-core rates (per CPU-second; sqlite per wall second)."""

    cores: int
    sign_per_s: float
    verify_per_s: float
    grpc_unary_per_s: float
    grpc_stream_msgs_per_s: float
    grpc_stream_items_per_msg: int
    sqlite_rows_per_s: float
    probe_s: float

    def as_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return {k: float(v) for k, v in asdict(self).items()}


def _rate(fn: Callable[[], object], seconds: float, *, cpu: bool = True) -> float:
    """Calls per CPU-second (or per wall second) of `fn` over a wall-clock slice."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    deadline = t0 + seconds
    while n < MAX_ITERATIONS:
        fn()
        n += 1
        if n % 16 == 0 and time.perf_counter() >= deadline:
            break
    spent = time.process_time() - c0 if cpu else time.perf_counter() - t0
    return n / max(spent, 1e-6)


def signature_rates(seconds: float) -> tuple[float, float]:
    """(signs/s, verifies/s) of a P-256 identity as issued by `dltmw init`."""
    ca = make_ca("Probe")
    cert = issue_cert(ca, "Probe", "probe", "client")
    signer = SigningIdentity.from_pem("Probe", cert.cert_pem, cert.key_pem)
    data = os.urandom(256)
    signature = signer.sign(data)
    public_key = x509.load_pem_x509_certificate(cert.cert_pem).public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise TypeError("dltmw init issues P-256 identities; the probe measures those")
    return (
        _rate(lambda: signer.sign(data), seconds),
        _rate(lambda: verify_signature(public_key, data, signature), seconds),
    )


async def _unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> bytes:
    n = 0
    async for _ in requests:
        n += 1
    return n.to_bytes(8, "big")


async def grpc_rates(seconds: float) -> tuple[float, float]:
    """(unary calls, 100-item stream messages) per CPU-second, both ends in this process."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "dltmw.bench.Probe",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.stream_unary_rpc_method_handler(_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary(UNARY, None, None)
            stream = channel.stream_unary(STREAM, None, None)
            await unary(b"warm-up", timeout=10)
            return await _unary_rate(unary, seconds), await _stream_rate(stream, seconds)
    finally:
        await server.stop(None)


async def _unary_rate(call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes], s: float) -> float:
    payload = b"x" * 100
    deadline = time.perf_counter() + s
    count = 0

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline and count < MAX_ITERATIONS:
            await call(payload, timeout=10)
            count += 1

    c0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(64)))
    return count / max(time.process_time() - c0, 1e-6)


async def _stream_rate(call: grpc.aio.StreamUnaryMultiCallable[bytes, bytes], s: float) -> float:
    batch = b"k" * 16 * 100 + b"v" * 32 * 100  # 100 items of 16 B key + 32 B value
    c0 = time.process_time()
    deadline = time.perf_counter() + s

    async def batches() -> AsyncIterator[bytes]:
        sent = 0
        while time.perf_counter() < deadline and sent < MAX_ITERATIONS:
            yield batch
            sent += 1

    received = int.from_bytes(await call(batches(), timeout=s + 10), "big")
    return received / max(time.process_time() - c0, 1e-6)


def sqlite_rate(seconds: float) -> float:
    """Rows/s upserted in 100-row transactions, WAL + synchronous=FULL, on the temp disk."""
    with tempfile.TemporaryDirectory(prefix="dltmw-probe-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "probe.sqlite", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE s (k TEXT PRIMARY KEY, v BLOB, b INT) WITHOUT ROWID")
            value, n = os.urandom(100), 0

            def block() -> None:
                nonlocal n
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT OR REPLACE INTO s VALUES (?, ?, ?)",
                    ((f"{n * 100 + i:016x}", value, n) for i in range(100)),
                )
                conn.execute("COMMIT")
                n += 1

            return 100 * max(_rate(block, seconds / 3, cpu=False) for _ in range(3))
        finally:
            conn.close()


async def probe(seconds_each: float = 0.5) -> Limits:
    """Measure every rate (about 5 x `seconds_each` plus set-up)."""
    t0 = time.perf_counter()
    sign, verify = signature_rates(seconds_each)
    unary, stream = await grpc_rates(seconds_each)
    rows = sqlite_rate(seconds_each)
    return Limits(
        cores=os.cpu_count() or 1,
        sign_per_s=sign,
        verify_per_s=verify,
        grpc_unary_per_s=unary,
        grpc_stream_msgs_per_s=stream,
        grpc_stream_items_per_msg=100,
        sqlite_rows_per_s=rows,
        probe_s=time.perf_counter() - t0,
    )


@dataclass(frozen=True)
class CostModel:
    """Per-transaction work of the endorse/order/validate path, counted from the code; re-count
    when the path changes. Two paths, both current: `pipelined` (the SDK default,
    `GatewayService.Transact`) and the unary one (`DLTMW_CLIENT_PIPELINE=0`).

    With E endorsing peers (the policy's principals) and P validating peers (P >= E), and each
    node verifying each signature once (successful checks are remembered per membership):
    signs = 2 by the client (proposal, envelope) + E endorsements, plus 1 signed commit-status
    query on the unary path; verifies = (E + 1) on each endorsing peer (the proposal, the
    envelope, the other E - 1 endorsements) + (1 + E) on each other peer + 1 on the orderer, plus
    1 for the unary commit-status query; unary gRPC calls = Endorse + Submit + CommitStatus (3)
    on the unary path, 0 pipelined (the gateway reaches remote endorsers and the orderer over
    batched streams on both paths); streamed items, each hop's request and answer counted:
    client<->gateway 4 pipelined (endorse, its answer, submit, its commit status), gateway<->remote
    endorsers 2 (E - 1), gateway<->orderer 2, block delivery P; sqlite rows = P x (1 tx-index row
    + W state writes) + 2 on the orderer.
    """

    endorsers: int
    peers: int
    writes: float
    pipelined: bool = True

    def signs(self) -> int:
        """Signatures made per transaction."""
        return 2 + self.endorsers + (0 if self.pipelined else 1)

    def verifies(self) -> int:
        """Signature verifications per transaction."""
        e, p = self.endorsers, self.peers
        return e * (e + 1) + (p - e) * (1 + e) + 1 + (0 if self.pipelined else 1)

    def unary_calls(self) -> int:
        """Unary gRPC calls per transaction."""
        return 0 if self.pipelined else 3

    def stream_items(self) -> int:
        """Items carried on batched streams per transaction (each hop's request and answer)."""
        return (4 if self.pipelined else 0) + 2 * (self.endorsers - 1) + 2 + self.peers

    def sqlite_rows(self) -> float:
        """Rows written per transaction, all nodes together."""
        return self.peers * (1 + self.writes) + 2


def bounds(limits: Limits, model: CostModel) -> dict[str, float]:
    """tx/s each resource allows if every core did only that work (an upper bound)."""
    cores = limits.cores
    sig_s = model.signs() / limits.sign_per_s + model.verifies() / limits.verify_per_s
    items_per_s = limits.grpc_stream_msgs_per_s * limits.grpc_stream_items_per_msg
    grpc_s = model.unary_calls() / limits.grpc_unary_per_s + model.stream_items() / items_per_s
    return {
        "signature": cores / sig_s,
        "signature_verification": cores * limits.verify_per_s / model.verifies(),
        "grpc": cores / grpc_s,
        "sqlite": cores * limits.sqlite_rows_per_s / model.sqlite_rows(),
    }


def main() -> None:
    """`python -m dltmw.bench.limits`: print the probe's figures."""
    limits = asyncio.run(probe())
    for key, value in limits.as_dict().items():
        print(f"{key:28} {value:12.1f}")
    model = CostModel(endorsers=2, peers=2, writes=1)
    for key, value in bounds(limits, model).items():
        print(f"bound {key:22} {value:12.1f} tx/s  (AND of 2 orgs, 1 write per tx)")


if __name__ == "__main__":
    main()
