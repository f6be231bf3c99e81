"""Network material for simulated runs: what `dltmw init` writes, derived from names, not drawn.

A simulated network is made by the same `pki.network.init_network` as a real one (node.toml,
client.toml, certificates, privacy keys, genesis blocks), with `SIM_MATERIAL` as the source of
keys, serial numbers, nonces and time. Every key is derived from a hash of its label, every
certificate is issued at `vloop.EPOCH`, and every signing key is Ed25519 (whose signatures are
deterministic, unlike ECDSA's), so two runs of one seed — in one process or two — produce the
same bytes everywhere: the same tx_ids, block hashes and traces. TLS certificates keep P-256
keys (they only ride in the simulated auth context; they sign nothing here).

A topology's directory is generated once per process (`network_dir`) and copied per run.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from dltmw.pki.ca import Material
from dltmw.pki.network import init_network
from dltmw.sim.vloop import EPOCH

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SYNCHRONOUS = "NORMAL"  # WAL without a sync per commit: a simulated crash loses no OS buffers


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"dltmw-sim|{label}".encode()).digest()


def _key(key_type: str, label: str) -> ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    if label.startswith("tls."):
        scalar = int.from_bytes(_seed(label), "big") % (P256_ORDER - 1) + 1
        return ec.derive_private_key(scalar, ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.from_private_bytes(_seed(label))


SIM_MATERIAL = Material(
    key=_key,
    serial=lambda label: int.from_bytes(_seed(label)[:16], "big") >> 1 | 1,
    now=lambda: EPOCH,
    privacy_key=lambda label: x25519.X25519PrivateKey.from_private_bytes(_seed(f"x25519.{label}")),
    nonce=lambda label: _seed(f"nonce.{label}"),
    privacy_kem_seed=lambda label: _seed(f"mlkem.{label}.0") + _seed(f"mlkem.{label}.1"),
)

_CACHE: dict[str, Path] = {}  # topology digest -> generated directory (this process's runs)


def scratch_root() -> Path:
    """Where simulated runs keep their files: memory-backed when the host has /dev/shm."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() else Path(tempfile.gettempdir())


def network_dir(topology: str) -> Path:
    """The generated network directory of `topology` (TOML text), made once per process."""
    digest = hashlib.sha256(topology.encode()).hexdigest()[:16]
    cached = _CACHE.get(digest)
    if cached is not None and cached.exists():
        return cached
    root = Path(tempfile.mkdtemp(prefix=f"dltmw-sim-net-{digest}-", dir=scratch_root()))
    atexit.register(shutil.rmtree, root, True)
    (root / "topology.in.toml").write_text(topology)
    init_network(root / "topology.in.toml", root / "net", SYNCHRONOUS, SIM_MATERIAL)
    _CACHE[digest] = root / "net"
    return root / "net"


def fresh_copy(topology: str) -> Path:
    """A private copy of the network directory for one run (no data, no endpoints yet)."""
    source = network_dir(topology)
    target = Path(tempfile.mkdtemp(prefix="dltmw-sim-run-", dir=scratch_root())) / "net"
    shutil.copytree(source, target)
    return target
