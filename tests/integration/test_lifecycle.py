"""The contract lifecycle over real processes: a user-written contract (examples/contracts/assets)
is installed, approved by each organisation's admin, committed, invoked, upgraded to v2 while a
transaction endorsed on v1 is still to be ordered, and survives a peer restart; uncommitted,
non-admin and under-approved attempts are refused (docs/contracts.md runs the same commands).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.contracts import NodeAdmin
from dltmw.contract_sdk.package import package_dir
from dltmw.contracts import builtin_package, builtin_package_id
from dltmw.core.contract_package import Manifest, package_id, write_package
from dltmw.core.lifecycle import NAMESPACE, Definition, canonical_policy
from dltmw.rpc.status import reason_of
from dltmw.v1 import transaction_pb2

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "contracts" / "assets"
DLTMW = Path(sys.executable).parent / "dltmw"
C = transaction_pb2
POLICY = canonical_policy("AND(Org1.peer, Org2.peer)")  # the channel's default


def _dltmw(*argv: str, ok: bool = True) -> str:
    done = subprocess.run(
        [str(DLTMW), *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done.stdout + done.stderr


def _v2(tmp: Path) -> bytes:
    """The example upgraded: version 2.0, and `create` refuses values above 1000."""
    shutil.copytree(EXAMPLE, tmp / "assets")
    (tmp / "assets" / "contract.json").write_text(
        '{"name": "assets", "version": "2.0", "entry": "contract:Assets"}'
    )
    source = tmp / "assets" / "contract.py"
    text = source.read_text()
    old = "        if value < 0:\n"
    new = (
        '        if value > 1000:\n            raise ContractError("v2: value above 1000")\n' + old
    )
    assert old in text
    source.write_text(text.replace(old, new))
    return package_dir(tmp / "assets")


def _v3(tmp: Path) -> bytes:
    """v2 with an `init` function (version 3.0), for a definition with init_required."""
    shutil.copytree(tmp / "assets", tmp / "assets3")
    (tmp / "assets3" / "contract.json").write_text(
        '{"name": "assets", "version": "3.0", "entry": "contract:Assets"}'
    )
    source = tmp / "assets3" / "contract.py"
    text = source.read_text()
    anchor = "    @transaction\n    def create("
    init = '    @transaction\n    def init(self, ctx: Context) -> str:\n        return "ready"\n\n'
    assert anchor in text
    source.write_text(text.replace(anchor, init + anchor))
    return package_dir(tmp / "assets3")


def _lifecycle(net: Path, verb: str, org: str, version: str, sequence: int, pid: str) -> str:
    return _dltmw(
        "contract", verb, str(net), "--channel", "trades", "--name", "assets",
        "--version", version, "--sequence", str(sequence), "--package-id", pid, "--org", org,
    )  # fmt: skip


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


async def test_the_whole_lifecycle_of_a_user_contract(network, tmp_path: Path) -> None:
    net, sup = network(batch_ms=50)
    v1, v2 = package_dir(EXAMPLE), _v2(tmp_path)
    pid1, pid2 = package_id(v1), package_id(v2)
    for peer in ("peer0.org1", "peer0.org2"):
        await NodeAdmin(net, peer).install(v1)
    user = await GatewayClient.connect(net, "user1.org1")
    admin = await GatewayClient.connect(net, "admin.org1")
    admin2 = await GatewayClient.connect(net, "admin.org2")
    try:
        # Installed, not committed: refused with its own reason.
        err = await _refused(user.submit_transaction("trades", "assets", "create", "a1", "7"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert reason_of(err) == "CONTRACT_NOT_COMMITTED"

        # A non-admin can neither approve nor commit.
        d1 = Definition("assets", "1.0", 1, pid1, POLICY).to_bytes()
        for verb in ("approve", "commit"):
            err = await _refused(user.submit_transaction("trades", NAMESPACE, verb, d1))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert reason_of(err) == "NOT_AUTHORIZED"

        # One approval of two is not a MAJORITY: the commit is refused, nothing committed.
        assert "approve assets 1.0 sequence 1: VALID" in _lifecycle(
            net, "approve", "Org1", "1.0", 1, pid1
        )
        err = await _refused(admin.submit_transaction("trades", NAMESPACE, "commit", d1))
        assert err.code() == grpc.StatusCode.ABORTED and reason_of(err) == "CONTRACT_FAILED"
        assert "approved by Org1: it needs 2 of 2" in err.details()
        listed = await admin.evaluate("trades", NAMESPACE, "definitions")
        assert [d["name"] for d in json.loads(listed.payload)] == [
            "bank",
            "bank_rmw",
            "kv",
        ]  # genesis only

        assert "VALID" in _lifecycle(net, "approve", "Org2", "1.0", 1, pid1)
        assert "commit assets 1.0 sequence 1: VALID" in _lifecycle(
            net, "commit", "Org2", "1.0", 1, pid1
        )
        shown = _dltmw("contract", "list", str(net), "peer0.org1", "--channel", "trades")
        assert f"committed assets 1.0 sequence 1 package {pid1}" in shown
        done = await user.submit_transaction("trades", "assets", "create", "a1", "5000")
        assert done.status.result == C.TX_VALIDATION_CODE_VALID

        # Upgrade to v2 while a transaction endorsed on v1 waits to be ordered.
        signed, tx_id = user.proposal("trades", "assets", "create", ["a2", "6000"])
        endorsed_on_v1 = await user.endorse(signed)
        for peer in ("peer0.org1", "peer0.org2"):
            await NodeAdmin(net, peer).install(v2)
        d2 = Definition("assets", "2.0", 2, pid2, POLICY).to_bytes()
        for verb, by in (("approve", admin), ("approve", admin2), ("commit", admin)):
            by.observe_block("trades", done.status.block_number)  # build on the last commit
            done = await by.submit_transaction("trades", NAMESPACE, verb, d2)
            assert done.status.result == C.TX_VALIDATION_CODE_VALID
        user.observe_block("trades", done.status.block_number)
        await user.submit(user.envelope(endorsed_on_v1.prepared_payload))
        status = await user.commit_status("trades", tx_id)
        assert status.result == C.TX_VALIDATION_CODE_CONTRACT_DEFINITION_CHANGED
        err = await _refused(user.submit_transaction("trades", "assets", "create", "a3", "6000"))
        assert reason_of(err) == "CONTRACT_FAILED" and "v2: value above 1000" in err.details()

        # A restarted peer keeps the committed definitions (they are world state).
        assert sup.stop("peer0.org2") == 0
        sup.start("peer0.org2")
        sup.wait_ready("peer0.org2")
        async with await GatewayClient.connect(net, "user1.org2") as other:
            listed = await other.evaluate("trades", NAMESPACE, "definitions")
            [assets] = [d for d in json.loads(listed.payload) if d["name"] == "assets"]
            assert (assets["sequence"], assets["package_id"]) == (2, pid2)
            done = await other.submit_transaction("trades", "assets", "create", "a4", "10")
            assert done.status.result == C.TX_VALIDATION_CODE_VALID

        # v3 with init_required: nothing runs before its `init`, which runs once.
        v3 = _v3(tmp_path)
        for peer in ("peer0.org1", "peer0.org2"):
            await NodeAdmin(net, peer).install(v3)
        d3 = Definition("assets", "3.0", 3, package_id(v3), POLICY, init_required=True)
        await admin2.close()  # its gateway, peer0.org2, restarted on another port
        admin2 = await GatewayClient.connect(net, "admin.org2")
        for verb, by in (("approve", admin), ("approve", admin2), ("commit", admin)):
            by.observe_block("trades", done.status.block_number)  # build on the last commit
            done = await by.submit_transaction("trades", NAMESPACE, verb, d3.to_bytes())
            assert done.status.result == C.TX_VALIDATION_CODE_VALID
        user.observe_block("trades", done.status.block_number)
        err = await _refused(user.submit_transaction("trades", "assets", "create", "a5", "1"))
        assert reason_of(err) == "CONTRACT_FAILED" and "requires 'init' first" in err.details()
        done = await user.submit_transaction("trades", "assets", "init")
        assert done.status.result == C.TX_VALIDATION_CODE_VALID
        err = await _refused(user.submit_transaction("trades", "assets", "init"))
        assert "initialised already" in err.details()
        done = await user.submit_transaction("trades", "assets", "create", "a5", "1")
        assert done.status.result == C.TX_VALIDATION_CODE_VALID
    finally:
        await user.close()
        await admin.close()
        await admin2.close()


def _kv_v2() -> bytes:
    """A user-written upgrade of the built-in `kv`: version 2.0 with one more query, `version`
    (the rest is the built-in's source, so the state it wrote stays readable)."""
    source = (ROOT / "dltmw" / "contracts" / "kv.py").read_text()
    anchor = "    @query\n    def get("
    added = '    @query\n    def version(self, ctx: Context) -> str:\n        return "kv 2.0"\n\n'
    assert anchor in source
    return write_package(
        Manifest("kv", "2.0", "kv:KvContract"), {"kv.py": source.replace(anchor, added + anchor)}
    )


async def test_init_deploys_the_builtins_as_packages_upgraded_like_any_contract(network) -> None:
    """`dltmw init` installs each built-in's package on every peer and block 0 names its id: the
    genesis definition (sequence 1) runs that package, and upgrading `kv` to a user-written
    v2 goes through install, approve by each org, commit at sequence 2, like any contract."""
    net, sup = network(batch_ms=50)
    for peer in ("peer0.org1", "peer0.org2"):
        stored = sup.data_dir(peer) / "contracts" / f"{builtin_package_id('kv')}.zip"
        assert stored.read_bytes() == builtin_package("kv")
    user = await GatewayClient.connect(net, "user1.org1")
    admin = await GatewayClient.connect(net, "admin.org1")
    admin2 = await GatewayClient.connect(net, "admin.org2")
    try:
        listed = await user.evaluate("trades", NAMESPACE, "definitions")
        genesis = {d["name"]: d for d in json.loads(listed.payload)}
        assert {n: (d["sequence"], d["package_id"]) for n, d in genesis.items()} == {
            n: (1, builtin_package_id(n)) for n in ("bank", "bank_rmw", "kv")
        }
        done = await user.submit_transaction("trades", "kv", "put", "k", "v1")
        assert done.status.result == C.TX_VALIDATION_CODE_VALID
        err = await _refused(user.evaluate("trades", "kv", "version"))
        assert "has no function 'version'" in err.details()  # v1 has none

        v2 = _kv_v2()
        for peer in ("peer0.org1", "peer0.org2"):
            await NodeAdmin(net, peer).install(v2)
        d2 = Definition("kv", "2.0", 2, package_id(v2), POLICY).to_bytes()
        for verb, by in (("approve", admin), ("approve", admin2), ("commit", admin)):
            by.observe_block("trades", done.status.block_number)
            done = await by.submit_transaction("trades", NAMESPACE, verb, d2)
            assert done.status.result == C.TX_VALIDATION_CODE_VALID, verb
        user.observe_block("trades", done.status.block_number)
        assert (await user.evaluate("trades", "kv", "version")).payload == b"kv 2.0"
        assert (await user.evaluate("trades", "kv", "get", "k")).payload == b"v1"
        done = await user.submit_transaction("trades", "kv", "put", "k", "v2")
        assert done.status.result == C.TX_VALIDATION_CODE_VALID
    finally:
        await user.close()
        await admin.close()
        await admin2.close()
