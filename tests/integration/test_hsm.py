"""Signing keys in a PKCS#11 token, against Debian's SoftHSM2 (`make hsm`): `net/hsm.py` signs
inside the token, and a network whose orderer, one endorsing peer and one client keep their
keys there runs as any other — `dltmw init --hsm` makes the keys in the token (never in a
file), the orderer's block signatures, the peer's endorsements and the client's transactions
are verified by every node, and a node given a wrong PIN does not start and says why.

SoftHSM2 reads its configuration (SOFTHSM2_CONF) once per process, and PKCS#11 logs a process
in once per token, so this module sets one token directory up for the whole module, with one
token per test made before any test loads the library (SoftHSM2 finds tokens when it loads).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from dltmw.client import GatewayClient
from dltmw.core.identity import P256_ORDER, SigningIdentity, verify_signature
from dltmw.net.hsm import PIN_ENV, PIN_FILE_ENV, HsmError, Pkcs11Key, Pkcs11Uri, generate
from dltmw.net.signer import load_signer
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.ca import certify, issue_cert, make_ca
from dltmw.runtime.process import EXIT_USAGE
from dltmw.v1 import transaction_pb2

from .conftest import TWO_ORG

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4711-test"
TOKENS = ("lib", "net")


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SoftHSM2 token directory for this module; yields its config file."""
    assert shutil.which("softhsm2-util") and Path(MODULE).exists(), "run `make hsm`"
    home = tmp_path_factory.mktemp("softhsm")
    (home / "tokens").mkdir()
    conf = home / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {home / 'tokens'}\nobjectstore.backend = file\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        mp.setenv(PIN_ENV, PIN)
        mp.delenv(PIN_FILE_ENV, raising=False)
        for label in TOKENS:
            new_token(label)
        yield conf


def new_token(label: str) -> None:
    cmd = ["softhsm2-util", "--init-token", "--free", "--label", label]
    subprocess.run([*cmd, "--pin", PIN, "--so-pin", "0000-so"], check=True, capture_output=True)


def test_a_token_key_signs_verifiably_low_s_and_never_leaves_the_token(softhsm: Path) -> None:
    ca = make_ca("Org1")
    uri = Pkcs11Uri("lib", "peer7.org1", MODULE)
    cert_pem = certify(ca, "Org1", "peer7.org1", "peer", generate(uri))
    signer = SigningIdentity.from_external("Org1", cert_pem, Pkcs11Key(uri))
    public = x509.load_pem_x509_certificate(cert_pem).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    for i in range(40):  # about half of raw ECDSA signatures are high-S: all must come out low
        data = f"endorsement {i}".encode()
        sig = signer.sign(data)
        assert decode_dss_signature(sig)[1] <= P256_ORDER // 2
        verify_signature(public, data, sig)  # the verifier every node runs
    Pkcs11Key(uri).public_key().verify(signer.sign(b"x"), b"x", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(HsmError, match="already holds"):
        generate(uri)  # a label is never overwritten
    with pytest.raises(HsmError, match="no EC key pair labelled 'nobody'"):
        Pkcs11Key(Pkcs11Uri("lib", "nobody", MODULE))
    with pytest.raises(HsmError, match="no token labelled 'absent'"):
        Pkcs11Key(Pkcs11Uri("absent", "k", MODULE))
    other = issue_cert(ca, "Org1", "peer8.org1", "peer")  # a certificate of another key
    cert_path = softhsm.parent / "other.pem"
    cert_path.write_bytes(other.cert_pem)
    with pytest.raises(HsmError, match="does not match the certificate"):
        load_signer("Org1", cert_path, uri)


async def test_network_signs_in_the_token_and_refuses_a_wrong_pin(
    softhsm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topo = tmp_path / "topology.toml"
    topo.write_text(TWO_ORG.replace("BATCH_MS", "100"))
    net = tmp_path / "net"
    in_token = ["orderer0", "peer0.org1", "user1.org1"]
    cmd = [str(Path(sys.executable).parent / "dltmw"), "init", str(topo), "--out", str(net)]
    cmd += [a for who in in_token for a in ("--hsm", who)]
    cmd += ["--hsm-token", "net", "--hsm-module", MODULE]
    init = await asyncio.create_subprocess_exec(*cmd, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(init.communicate(), 120)
    assert init.returncode == 0, err.decode()
    for who in in_token:  # the key is in the token only: no key file, a URI in the config
        home = next(net.glob(f"*/{who}"))
        assert not (home / "identity.key").exists()
        config = (home / ("client.toml" if who.startswith("user") else "node.toml")).read_text()
        assert f'identity_key = "pkcs11:token=net;object={who}?module-path=' in config
    assert (net / "nodes" / "peer0.org2" / "identity.key").exists()
    sup = Supervisor(net)
    try:
        sup.up(timeout_s=60)
        # user1.org1 signs in the token, peer0.org1 endorses in it (AND policy: both peers
        # must endorse and both verify both endorsements), orderer0 signs the block in it
        async with await GatewayClient.connect(net, "user1.org1") as client:
            done = await client.submit_transaction("trades", "bank", "open", "A", "100")
            assert done.status.result == VALID
        async with await GatewayClient.connect(net, "user1.org2", "peer0.org2") as client:
            status = await client.commit_status("trades", done.tx_id)
            assert status.result == VALID and status.block_number == done.status.block_number
        assert sup.stop("peer0.org1") == 0
        monkeypatch.setenv(PIN_ENV, "not-the-pin")
        node = sup.start("peer0.org1")
        assert node.process.wait(30) == EXIT_USAGE
        err = (net / "run" / "logs" / "peer0.org1.err").read_text()
        assert "the PIN is wrong" in err and "Traceback" not in err
    finally:
        sup.nodes.pop("peer0.org1", None)
        codes = sup.stop_all()
    assert all(c == 0 for c in codes.values()), codes


LATE_TOKEN = """
import subprocess, sys
from dltmw.net import hsm
module, pin = sys.argv[1], sys.argv[2]
hsm._LIBS[module] = hsm._pkcs11().lib(module)  # loaded (C_Initialize) before the token exists
cmd = ["softhsm2-util", "--init-token", "--free", "--label", "late", "--pin", pin]
subprocess.run([*cmd, "--so-pin", "0000-so"], check=True, capture_output=True)
hsm.generate(hsm.Pkcs11Uri("late", "k", module))
print("found")
"""


def test_a_token_missing_when_the_library_loaded_is_found_by_a_rescan(tmp_path: Path) -> None:
    """A node whose token was not in the library's slot list at load (SoftHSM2 skips a token
    whose file another process is rewriting) looks again instead of refusing to start."""
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), PIN_ENV: PIN}
    env.pop(PIN_FILE_ENV, None)
    run = subprocess.run(
        [sys.executable, "-c", LATE_TOKEN, MODULE, PIN],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stdout.strip() == "found", run.stderr
