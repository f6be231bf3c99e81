"""`python -m benchmarks.pq`: the cost of the post-quantum and at-rest options (not a test).

1. Key wrap per recipient, in process, one thread: sealing a payload for 2 and for 10 recipients
   (+ the sender), X25519 (kek cached per pair, as in production) and hybrid X25519 + ML-KEM-768
   (a fresh encapsulation per recipient and payload, included); the per-recipient cost is
   (t10 - t2) / 8. Unwrap: one recipient opening the payload key (`open_key`).
2. Identity signatures: sign and verify per operation, ECDSA P-256, Ed25519, ML-DSA-65.
3. Encryption at rest: seal and open of one 256-byte record (ledger/at_rest.py).
4. End to end on real processes (orderer + sender peer + 2 recipient peers): committed VALID
   private tx/s, closed loop, for X25519, hybrid, and hybrid with encryption at rest.

Prints the machine, the command and the figures; the numbers go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from benchmarks.private import CHANNEL, CpuMeter, e2e_phase, topology
from dltmw.client import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.core.identity import P256_ORDER, PublicKey, verify_signature
from dltmw.core.privacy.envelope import PrivacyKey, open_key, payload_hash, seal
from dltmw.core.privacy.kem import HYBRID, X25519
from dltmw.ledger.at_rest import DataKeyRing, RecordCipher, state_id
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network
from dltmw.runtime.roles.privacy.hybrid import encapsulate

MODES = {
    "x25519": ("", False),
    "hybrid": ('private_key_wrap = "x25519-mlkem768"\n', False),
    "hybrid+at-rest": ('private_key_wrap = "x25519-mlkem768"\n', True),
}


def per_second(fn: Callable[[], object], seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def seal_rate(recipients: int, wrap: int, seconds: float) -> tuple[float, float]:
    """(payloads sealed per second, payload keys opened per second by one recipient)."""
    sender = PrivacyKey(os.urandom(32), os.urandom(64))
    others = [PrivacyKey(os.urandom(32), os.urandom(64)) for _ in range(recipients)]
    keys = [k.public_key for k in others]
    kem_keys = {k.public_key: k.kem_public_key for k in (*others, sender)}
    plaintext = os.urandom(256)

    def one() -> object:
        kem = {x: encapsulate(m) for x, m in kem_keys.items()} if wrap == HYBRID else None
        nonces = [os.urandom(12) for _ in range(recipients + 1)]
        return seal(plaintext, sender, keys, os.urandom(32), os.urandom(12), nonces, wrap, kem)

    sealed = one()
    digest = payload_hash(sealed)  # type: ignore[arg-type]
    seals = per_second(one, seconds)
    opens = per_second(lambda: open_key(sealed, others[0], digest), seconds)  # type: ignore[arg-type]
    return seals, opens


def wraps(seconds: float) -> None:
    for name, wrap in (("X25519", X25519), ("X25519+ML-KEM-768", HYBRID)):
        two, opens = seal_rate(2, wrap, seconds)
        ten, _ = seal_rate(10, wrap, seconds)
        per_recipient_us = (1 / ten - 1 / two) / 8 * 1e6
        print(
            f"{name:18s} seal 2 rcpt {two:7.0f}/s, 10 rcpt {ten:7.0f}/s -> wrap "
            f"{per_recipient_us:6.1f} us per recipient; unwrap (open_key) {1e6 / opens:6.1f} us"
        )


def _low_s_ecdsa(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """Sign as SigningIdentity does: ECDSA-SHA256, normalised to low-S."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return encode_dss_signature(r, min(s, P256_ORDER - s))


def signatures(seconds: float) -> None:
    data = os.urandom(200)
    p256 = ec.generate_private_key(ec.SECP256R1())
    edkey = ed25519.Ed25519PrivateKey.generate()
    mlkey = mldsa.MLDSA65PrivateKey.generate()
    signers: dict[str, tuple[Callable[[], bytes], PublicKey]] = {
        "ECDSA P-256": (lambda: _low_s_ecdsa(p256, data), p256.public_key()),
        "Ed25519": (lambda: edkey.sign(data), edkey.public_key()),
        "ML-DSA-65": (lambda: mlkey.sign(data), mlkey.public_key()),
    }
    for name, (sign, public) in signers.items():
        signature = sign()
        signs = per_second(sign, seconds)
        verifies = per_second(
            lambda p=public, sig=signature: verify_signature(p, data, sig),  # type: ignore[misc]
            seconds,
        )
        print(
            f"{name:12s} sign {1e6 / signs:7.1f} us  verify {1e6 / verifies:7.1f} us  "
            f"signature {len(signature)} bytes"
        )


def at_rest(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cipher = RecordCipher(DataKeyRing(Path(tmp) / "data-keys", os.urandom(32)))
        value, rid = os.urandom(256), state_id("kv", "key-000001")
        stored = cipher.seal("pstate", rid, value)
        seals = per_second(lambda: cipher.seal("pstate", rid, value), seconds)
        opens = per_second(lambda: cipher.open("pstate", rid, stored), seconds)
        print(
            f"at rest, 256-byte record: seal {1e6 / seals:.1f} us, open {1e6 / opens:.1f} us, "
            f"+{len(stored) - len(value)} bytes"
        )


async def e2e(
    net: Path, sup: Supervisor, count: int, in_flight: int
) -> tuple[float, dict[str, int], str]:
    """Committed tx/s, failures, and CPU ms per transaction of the sender and a recipient node
    (CPU per transaction is steadier than tx/s on a shared machine)."""
    pc = PrivacyClient(await GatewayClient.connect(net, "user.org0"))
    try:
        await e2e_phase(pc, ["Org1", "Org2"], 50, in_flight)  # warm up
        meter = CpuMeter(sup)
        rate, failures = await e2e_phase(pc, ["Org1", "Org2"], count, in_flight)
        return rate, failures, meter.report(count)
    finally:
        await pc.close()


def network(mode: str, count: int, in_flight: int) -> None:
    channel_line, encrypted = MODES[mode]
    text = topology(2).replace(f'id = "{CHANNEL}"\n', f'id = "{CHANNEL}"\n{channel_line}')
    if encrypted:
        text = text.replace(
            'name = "private-bench"\n', 'name = "private-bench"\nencrypt_at_rest = true\n'
        )
    with tempfile.TemporaryDirectory(prefix="dltmw-pq-bench-") as tmp:
        topo = Path(tmp) / "topology.toml"
        topo.write_text(text)
        init_network(topo, Path(tmp) / "net")
        sup = Supervisor(Path(tmp) / "net")
        try:
            sup.up(timeout_s=120)
            rate, failures, cpu = asyncio.run(e2e(Path(tmp) / "net", sup, count, in_flight))
            print(
                f"end to end, 2 recipients, {mode:15s}: {rate:6.0f} committed private tx/s "
                f"({count} tx, {in_flight} in flight; failures {failures or 'none'}; "
                f"load {os.getloadavg()[0]:.1f}); {cpu}"
            )
        finally:
            codes = {n: sup.stop(n) for n in list(sup.nodes)}
            if any(c != 0 for c in codes.values()):
                print(f"unclean stop: {codes}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pq")
    parser.add_argument("--seconds", type=float, default=1.0, help="per micro measurement")
    parser.add_argument("--e2e", type=int, default=400, help="private transactions per mode")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.1f}; "
        + time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    )
    wraps(args.seconds)
    signatures(args.seconds)
    at_rest(args.seconds)
    for _ in range(args.rounds):  # modes alternate, so load from other processes hits all
        for mode in args.modes.split(","):
            if mode:
                network(mode, args.e2e, args.in_flight)


if __name__ == "__main__":
    main()
