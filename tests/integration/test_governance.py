"""Governing a running channel (issue 12 item 3): config updates signed by a majority of admins,
an added organisation whose peer joins and endorses, a revoked client certificate, a removed
organisation, bad updates that change nothing, and a restarted peer that keeps the current
config. One network, one story; the admins use the `dltmw` commands of docs/governance.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.contracts import NodeAdmin
from dltmw.client.files import ClientFiles
from dltmw.client.governance import current_config, sign_update_file, submit_update
from dltmw.core import config_edit
from dltmw.core.config_update import add_signature, update_content
from dltmw.rpc.status import reason_of
from dltmw.v1 import config_update_pb2, transaction_pb2

pytestmark = pytest.mark.integration
DLTMW = Path(sys.executable).parent / "dltmw"
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
CHANNEL = "gov"

TOPOLOGY = """
name = "gov"
[[orgs]]
id = "Org1"
[[orgs]]
id = "Org2"
[[orgs]]
id = "Org3"
[[orgs]]
id = "OrdererOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
[[nodes]]
id = "peer0.org1"
org = "Org1"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org2"
org = "Org2"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.org3"
org = "Org3"
roles = ["peer", "gateway"]
[[clients]]
id = "user1.org1"
org = "Org1"
[[clients]]
id = "user2.org1"
org = "Org1"
[[clients]]
id = "user1.org2"
org = "Org2"
[[channels]]
id = "gov"
members = ["Org1", "Org2"]
orderers = ["orderer0"]
endorsement_policy = "OR(Org1.peer, Org2.peer)"
contracts = [{ name = "kv" }]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = BATCH_MS }
"""


def dltmw(*argv: str) -> str:
    done = subprocess.run(
        [str(DLTMW), *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def put(net: Path, client_id: str, key: str, gateway: str = "peer0.org1") -> int:
    """One kv transaction through `gateway`; its validation code."""
    async with await GatewayClient.connect(net, client_id, gateway, pipelined=False) as c:
        return (await c.submit_transaction(CHANNEL, "kv", "put", key, "v")).status.result


async def refused(net: Path, client_id: str, key: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await put(net, client_id, key)
    return err.value.code(), reason_of(err.value)


async def query_refused(net: Path, client_id: str) -> str:
    """The reason peer0.org1's gateway refuses `client_id`'s query (Evaluate: local peer only)."""
    async with await GatewayClient.connect(net, client_id, "peer0.org1", pipelined=False) as c:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await c.evaluate(CHANNEL, "kv", "get", "k0")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    return reason_of(err.value)


async def config_bytes(net: Path) -> bytes:
    return (await current_config(net, "user1.org1", CHANNEL)).config.SerializeToString()


def load_update(path: str) -> config_update_pb2.ConfigUpdate:
    return config_update_pb2.ConfigUpdate.FromString(Path(path).read_bytes())


def signed(net: Path, content: bytes, *admins: str) -> config_update_pb2.ConfigUpdate:
    update = config_update_pb2.ConfigUpdate(content=content)
    for admin in admins:
        add_signature(update, ClientFiles.load(net, admin).signer)
    return update


async def bad_updates_change_nothing(net: Path) -> None:
    before = await config_bytes(net)
    view = await current_config(net, "user1.org1", CHANNEL)
    content = update_content(view, config_edit.with_settings(view.config, max_tx_count=1))
    stale = config_update_pb2.ConfigUpdateContent.FromString(content)
    stale.sequence += 3
    cases = {
        "under-signed": (signed(net, content, "admin.org1"), "CONFIG_POLICY_UNSATISFIED"),
        "unsigned": (signed(net, content), "CONFIG_UPDATE_UNSIGNED"),
        "non-admin": (signed(net, content, "admin.org1", "user1.org2"), "CONFIG_SIGNER_NOT_ADMIN"),
        "stale": (
            signed(net, stale.SerializeToString(), "admin.org1", "admin.org2"),
            "CONFIG_SEQUENCE_STALE",
        ),
        "malformed": (config_update_pb2.ConfigUpdate(content=b"\xff\xff"), "MALFORMED"),
    }
    wrong = signed(net, content, "admin.org1", "admin.org2")
    wrong.signatures[1].signature = wrong.signatures[0].signature
    cases["wrongly signed"] = (wrong, "BAD_SIGNATURE")
    for name, (update, reason) in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit_update(net, "user1.org1", CHANNEL, update)
        assert reason_of(err.value) == reason, name
    assert await config_bytes(net) == before


async def test_govern_a_running_channel(network, tmp_path: Path) -> None:
    net, sup = network(TOPOLOGY, batch_ms=50)
    net_s = str(net)
    assert await put(net, "user1.org1", "k0") == VALID
    assert await put(net, "user2.org1", "k1") == VALID
    await bad_updates_change_nothing(net)

    # (a) Org3 joins by a vote of Org1's and Org2's admins, with a policy that needs it.
    upd = str(tmp_path / "add-org3.update")
    policy = "AND(Org1.peer, Org3.peer)"
    dltmw("org", "add", net_s, CHANNEL, "Org3", "--peer", "peer0.org3",
          "--endorsement-policy", policy, "-o", upd, "-c", "admin.org1")  # fmt: skip
    dltmw("channel", "update", net_s, CHANNEL, "--sign", upd, "-c", "admin.org1")
    with pytest.raises(grpc.aio.AioRpcError) as err:  # one admin of two is no majority
        await submit_update(net, "user1.org1", CHANNEL, load_update(upd))
    assert reason_of(err.value) == "CONFIG_POLICY_UNSATISFIED"
    dltmw("channel", "update", net_s, CHANNEL, "--sign", upd, "-c", "admin.org2")
    assert " VALID in block " in dltmw("channel", "update", net_s, CHANNEL, "--submit", upd,
                                       "-c", "admin.org1")  # fmt: skip
    dltmw("channel", "join", net_s, CHANNEL, "peer0.org3")
    # Endorsed by peer0.org1 and peer0.org3 (which catches up first: read your writes).
    assert await put(net, "user1.org1", "k2") == VALID
    heights = {
        c.channel_id: c.height for c in (await NodeAdmin(net, "peer0.org3").status()).channels
    }
    assert heights[CHANNEL] >= 4  # block 0, k0, k1, the config block, k2

    # (b) user2.org1's certificate is revoked (Org1's and Org3's admins: 2 of 3).
    upd = str(tmp_path / "revoke.update")
    cert = str(net / "clients" / "user2.org1" / "identity.pem")
    dltmw("cert", "revoke", net_s, CHANNEL, cert, "-o", upd, "-c", "admin.org1")
    for admin in ("admin.org1", "admin.org3"):
        sign_update_file(Path(upd), net, admin)
    # Submitted through peer0.org1's gateway: its answer comes once peer0.org1 committed it.
    assert (await submit_update(net, "admin.org1", CHANNEL, load_update(upd)))[1] == VALID
    assert await refused(net, "user2.org1", "k3") == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CERTIFICATE_REVOKED",
    )
    assert await put(net, "user1.org1", "k4") == VALID

    # (d) Org2 is removed: its client is no member, and its peer reads no new block.
    view = await current_config(net, "user1.org1", CHANNEL)
    content = update_content(view, config_edit.without_org(view.config, "Org2"))
    update = signed(net, content, "admin.org1", "admin.org3")
    _, code, removed_at = await submit_update(net, "user1.org1", CHANNEL, update)
    assert code == VALID
    assert await refused(net, "user1.org2", "k5") == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_A_MEMBER",
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:  # Deliver from the orderer
        await current_config(net, "user1.org2", CHANNEL)
    assert reason_of(err.value) == "NOT_A_MEMBER"
    assert await put(net, "user1.org1", "k6") == VALID
    org2 = {c.channel_id: c.height for c in (await NodeAdmin(net, "peer0.org2").status()).channels}
    assert org2[CHANNEL] <= removed_at  # its open Deliver stream ended at the config change

    # A restarted peer rebuilds the current config from its ledger: its own admission of a
    # query (no orderer, no other peer involved) refuses the revoked and the removed.
    assert sup.stop("peer0.org1") == 0
    sup.start("peer0.org1")
    sup.wait_ready("peer0.org1")
    assert await query_refused(net, "user2.org1") == "CERTIFICATE_REVOKED"
    assert await query_refused(net, "user1.org2") == "NOT_A_MEMBER"
    assert await put(net, "user1.org1", "k9") == VALID
    assert (await current_config(net, "user1.org1", CHANNEL)).sequence == 3
