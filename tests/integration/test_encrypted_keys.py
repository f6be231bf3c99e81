"""Private keys encrypted at rest on a running network: `dltmw init` under a passphrase writes
every key encrypted, node processes decrypt them in memory (the passphrase comes from their
environment) and a transaction commits; a node started without the passphrase does not start
and says why in one line, with no traceback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dltmw.client import GatewayClient
from dltmw.net.keyfile import PASSPHRASE_ENV, PASSPHRASE_FILE_ENV, is_encrypted
from dltmw.runtime.process import EXIT_USAGE
from dltmw.v1 import transaction_pb2

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID


async def test_network_runs_on_encrypted_keys_and_refuses_to_start_without_them(
    network, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "passphrase").write_text("a long shared secret\n")
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(tmp_path / "passphrase"))
    net, sup = network()
    keys = sorted(net.rglob("*.key"))
    assert keys and all(is_encrypted(k.read_bytes()) for k in keys)
    async with await GatewayClient.connect(net, "user1.org1") as client:
        done = await client.submit_transaction("trades", "bank", "open", "A", "100")
        assert done.status.result == VALID
    assert sup.stop("peer0.org2") == 0
    monkeypatch.delenv(PASSPHRASE_FILE_ENV)
    node = sup.start("peer0.org2")
    assert node.process.wait(30) == EXIT_USAGE
    err = (net / "run" / "logs" / "peer0.org2.err").read_text()
    assert "is encrypted" in err and PASSPHRASE_FILE_ENV in err and "Traceback" not in err
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(tmp_path / "passphrase"))
    sup.nodes.pop("peer0.org2", None)
    (net / "run" / "pids" / "peer0.org2.pid").unlink(missing_ok=True)
    sup.start("peer0.org2")
    sup.wait_ready("peer0.org2")
    deadline = time.monotonic() + 30
    async with await GatewayClient.connect(net, "user1.org2") as client:
        while True:  # the restarted peer endorses again (AND policy needs it)
            try:
                done = await client.submit_transaction("trades", "bank", "open", "B", "5")
                break
            except Exception:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert done.status.result == VALID
