"""Governing a running capital-market channel under a steady load (issue 12's headline): config
updates signed by a majority of admins, with four clients submitting transactions throughout.

(a) a new organisation, Custodian, is added by a vote of the members' admins; its peer (running
    since the start, in no channel) joins, catches up and endorses under a new policy that
    names it — no restart;
(b) a broker's client certificate is revoked: its next transactions are refused with
    CERTIFICATE_REVOKED while the other clients go on;
(c) the user contract `assets` is upgraded from v1 to v2: a transaction endorsed on v1 and
    ordered after the upgrade gets CONTRACT_DEFINITION_CHANGED;
(d) BrokerB is removed: its client is no member any more and its peer reads no new block.

Then: every transaction a client had acknowledged is in every member peer's chain exactly once,
with the code the client was told; the member peers' chains are identical and the removed
peer's is a prefix of theirs; bad updates changed nothing; a restarted peer rebuilds the current
config from its ledger. The admins use the `dltmw` commands of docs/governance.md.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from dltmw.client import GatewayClient
from dltmw.client.contracts import NodeAdmin
from dltmw.client.files import ClientFiles
from dltmw.client.governance import current_config, sign_update_file, submit_update
from dltmw.contract_sdk.package import package_dir
from dltmw.core import config_edit
from dltmw.core.config_update import add_signature, update_content
from dltmw.core.contract_package import package_id
from dltmw.core.lifecycle import NAMESPACE, Definition, canonical_policy
from dltmw.rpc.status import reason_of
from dltmw.v1 import config_update_pb2, transaction_pb2

from .cli import dltmw
from .ledgers import blocks, endorsements, ledger_path, tx_blocks, tx_codes
from .test_lifecycle import EXAMPLE, _v2

pytestmark = pytest.mark.integration
C = transaction_pb2
VALID = C.TX_VALIDATION_CODE_VALID
CHANNEL = "market"
LOADERS = ("trader.brokera", "trader2.brokera", "trader.brokerb", "ops.exchange")
# Per client, the load is bounded in count (and by `stop`); it is paced so that it cannot run out
# before the test ends on a fast machine (a quiet machine once finished 2,000 transactions per
# client before phase (d), and the test then waited for progress from a loader that had stopped).
LOAD_TX_MAX = 20_000
LOAD_PACE_S = 0.02  # between one client's transactions: a steady load, not a flood
PROGRESS_S = 60

TOPOLOGY = """
name = "market"
[[orgs]]
id = "Exchange"
[[orgs]]
id = "BrokerA"
[[orgs]]
id = "BrokerB"
[[orgs]]
id = "Custodian"
[[orgs]]
id = "OrdererOrg"
[[nodes]]
id = "orderer0"
org = "OrdererOrg"
roles = ["orderer"]
[[nodes]]
id = "peer0.exchange"
org = "Exchange"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.brokera"
org = "BrokerA"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.brokerb"
org = "BrokerB"
roles = ["peer", "gateway"]
[[nodes]]
id = "peer0.custodian"
org = "Custodian"
roles = ["peer", "gateway"]
[[clients]]
id = "trader.brokera"
org = "BrokerA"
[[clients]]
id = "trader2.brokera"
org = "BrokerA"
[[clients]]
id = "trader.brokerb"
org = "BrokerB"
[[clients]]
id = "ops.exchange"
org = "Exchange"
[[channels]]
id = "market"
members = ["Exchange", "BrokerA", "BrokerB"]
orderers = ["orderer0"]
endorsement_policy = "AND(BrokerA.peer, BrokerB.peer)"
contracts = [{ name = "kv" }]
batch = { max_tx_count = 100, max_bytes = 1048576, timeout_ms = BATCH_MS }
"""


async def cli(*argv: str) -> str:
    """`dltmw ...` off the event loop, so the load goes on while an admin works."""
    return await asyncio.to_thread(dltmw, *argv)


@dataclass
class Load:
    """Four clients submitting kv puts one after another until `stop`, each on its own
    connection; what each was told."""

    net: Path
    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # tx_id -> (client, code)
    refusals: list[tuple[str, str, float]] = field(default_factory=list)  # client, reason, when
    valid_at: dict[str, list[float]] = field(default_factory=dict)  # client -> ack times
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    details: dict[str, str] = field(default_factory=dict)  # client -> its last refusal's text
    finished: set[str] = field(default_factory=set)  # clients whose loader ran out of count

    async def run(self, client_id: str) -> None:
        async with await GatewayClient.connect(self.net, client_id, pipelined=False) as c:
            for i in range(LOAD_TX_MAX):
                if self.stop.is_set():
                    return
                try:
                    done = await c.submit_transaction(CHANNEL, "kv", "put", f"{client_id}/{i}", "v")
                except grpc.aio.AioRpcError as exc:
                    self.refusals.append((client_id, reason_of(exc), time.monotonic()))
                    self.details[client_id] = exc.details() or ""
                    assert exc.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
                    await asyncio.sleep(0.05)  # refused: do not spin on it
                    continue
                self.acked[done.tx_id] = (client_id, done.status.result)
                if done.status.result == VALID:
                    self.valid_at.setdefault(client_id, []).append(time.monotonic())
                await asyncio.sleep(LOAD_PACE_S)
        self.finished.add(client_id)

    async def progress(self, client_id: str, count: int = 3) -> None:
        """Wait until `client_id` got `count` more VALID acknowledgements (bounded)."""
        since = time.monotonic()
        deadline = since + PROGRESS_S
        while sum(t > since for t in self.valid_at.get(client_id, [])) < count:
            assert client_id not in self.finished, f"{client_id}'s load ran out of transactions"
            assert time.monotonic() < deadline, (client_id, self.refusals_of(client_id))
            await asyncio.sleep(0.05)

    def refusals_of(self, client_id: str) -> list[str]:
        """The last reasons `client_id` was refused with (for failure messages)."""
        reasons = [r for c, r, _ in self.refusals if c == client_id][-5:]
        return [*reasons, self.details.get(client_id, "")]

    async def refused_with(self, client_id: str, reason: str, since: float) -> None:
        deadline = time.monotonic() + PROGRESS_S
        while not any(c == client_id and r == reason and t > since for c, r, t in self.refusals):
            assert time.monotonic() < deadline, (client_id, reason, self.refusals_of(client_id))
            await asyncio.sleep(0.05)


async def config_bytes(net: Path) -> bytes:
    return (await current_config(net, "ops.exchange", CHANNEL)).config.SerializeToString()


def load_update(path: str) -> config_update_pb2.ConfigUpdate:
    return config_update_pb2.ConfigUpdate.FromString(Path(path).read_bytes())


def signed(net: Path, content: bytes, *admins: str) -> config_update_pb2.ConfigUpdate:
    update = config_update_pb2.ConfigUpdate(content=content)
    for admin in admins:
        add_signature(update, ClientFiles.load(net, admin).signer)
    return update


async def bad_updates_change_nothing(net: Path) -> None:
    before = await config_bytes(net)
    view = await current_config(net, "ops.exchange", CHANNEL)
    content = update_content(view, config_edit.with_settings(view.config, max_tx_count=1))
    stale = config_update_pb2.ConfigUpdateContent.FromString(content)
    stale.sequence += 3
    cases = {
        "under-signed": (signed(net, content, "admin.brokera"), "CONFIG_POLICY_UNSATISFIED"),
        "unsigned": (signed(net, content), "CONFIG_UPDATE_UNSIGNED"),
        "non-admin": (
            signed(net, content, "admin.brokera", "trader.brokerb"),
            "CONFIG_SIGNER_NOT_ADMIN",
        ),
        "stale": (
            signed(net, stale.SerializeToString(), "admin.brokera", "admin.brokerb"),
            "CONFIG_SEQUENCE_STALE",
        ),
        "malformed": (config_update_pb2.ConfigUpdate(content=b"\xff\xff"), "MALFORMED"),
    }
    wrong = signed(net, content, "admin.brokera", "admin.brokerb")
    wrong.signatures[1].signature = wrong.signatures[0].signature
    cases["wrongly signed"] = (wrong, "BAD_SIGNATURE")
    for name, (update, reason) in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit_update(net, "ops.exchange", CHANNEL, update)
        assert reason_of(err.value) == reason, name
    assert await config_bytes(net) == before


async def lifecycle(net: Path, definition: Definition, *admins: str) -> int:
    """Approve `definition` by each of `admins` (their own organisations), then commit it;
    the number of the block that committed it."""
    seen = 0  # each admin builds on the approvals before it: read them as written
    for i, admin in enumerate([*admins, admins[0]]):
        verb = "commit" if i == len(admins) else "approve"
        async with await GatewayClient.connect(net, admin, pipelined=False) as c:
            c.observe_block(CHANNEL, seen)
            done = await c.submit_transaction(CHANNEL, NAMESPACE, verb, definition.to_bytes())
        assert done.status.result == VALID, (verb, admin)
        seen = done.status.block_number
    return seen


async def test_govern_a_running_market_under_load(network, tmp_path: Path) -> None:
    net, sup = network(TOPOLOGY, batch_ms=50)
    net_s = str(net)
    v1, v2 = package_dir(EXAMPLE), _v2(tmp_path)
    for peer in ("peer0.brokera", "peer0.brokerb"):
        await NodeAdmin(net, peer).install(v1)
    both = canonical_policy("AND(BrokerA.peer, BrokerB.peer)")
    await lifecycle(
        net, Definition("assets", "1.0", 1, package_id(v1), both), "admin.brokera", "admin.brokerb"
    )
    await bad_updates_change_nothing(net)

    load = Load(net)
    loaders = [asyncio.create_task(load.run(c)) for c in LOADERS]
    try:
        await asyncio.gather(*(load.progress(c) for c in LOADERS))

        # (a) Custodian joins by a vote of BrokerA's and BrokerB's admins (2 of 3), with a
        # policy that needs it; its peer joins the running channel and endorses.
        upd = str(tmp_path / "add-custodian.update")
        await cli("org", "add", net_s, CHANNEL, "Custodian", "--peer", "peer0.custodian",
                  "--endorsement-policy", "AND(BrokerA.peer, Custodian.peer)", "-o", upd,
                  "-c", "admin.brokera")  # fmt: skip
        for admin in ("admin.brokera", "admin.brokerb"):
            await cli("channel", "update", net_s, CHANNEL, "--sign", upd, "-c", admin)
        said = await cli(
            "channel", "update", net_s, CHANNEL, "--submit", upd, "-c", "admin.brokera"
        )
        assert " VALID in block " in said, said
        await cli("channel", "join", net_s, CHANNEL, "peer0.custodian")
        await asyncio.gather(*(load.progress(c) for c in LOADERS))

        # (b) trader2.brokera's certificate is revoked (3 of the 4 members' admins).
        upd = str(tmp_path / "revoke.update")
        cert = str(net / "clients" / "trader2.brokera" / "identity.pem")
        await cli("cert", "revoke", net_s, CHANNEL, cert, "-o", upd, "-c", "admin.brokera")
        for admin in ("admin.brokera", "admin.exchange", "admin.custodian"):
            await asyncio.to_thread(sign_update_file, Path(upd), net, admin)
        _, code, revoked_at = await submit_update(net, "admin.brokera", CHANNEL, load_update(upd))
        assert code == VALID
        revoked = time.monotonic()
        await load.refused_with("trader2.brokera", "CERTIFICATE_REVOKED", revoked)
        await asyncio.gather(*(load.progress(c) for c in LOADERS if c != "trader2.brokera"))

        # (c) assets v1 -> v2 (3 of 4 approvals) while a transaction endorsed on v1 waits.
        async with await GatewayClient.connect(net, "trader.brokera", pipelined=False) as user:
            proposal, held = user.proposal(CHANNEL, "assets", "create", ["a1", "5"])
            endorsed_on_v1 = await user.endorse(proposal)
            for peer in ("peer0.brokera", "peer0.custodian"):
                await NodeAdmin(net, peer).install(v2)
            custodian = canonical_policy("AND(BrokerA.peer, Custodian.peer)")
            d2 = Definition("assets", "2.0", 2, package_id(v2), custodian)
            upgraded = await lifecycle(
                net, d2, "admin.brokera", "admin.exchange", "admin.custodian"
            )
            user.observe_block(CHANNEL, upgraded)  # the admins' commit: read it as written
            await user.submit(user.envelope(endorsed_on_v1.prepared_payload))
            status = await user.commit_status(CHANNEL, held)
            assert status.result == C.TX_VALIDATION_CODE_CONTRACT_DEFINITION_CHANGED
            done = await user.submit_transaction(CHANNEL, "assets", "create", "a2", "7")
            assert done.status.result == VALID  # v2, endorsed by BrokerA and Custodian

        # (d) BrokerB is removed (3 of 4): its client is refused, its peer reads no new block.
        upd = str(tmp_path / "remove-brokerb.update")
        await cli("org", "remove", net_s, CHANNEL, "BrokerB", "-o", upd, "-c", "admin.brokera")
        for admin in ("admin.brokera", "admin.exchange", "admin.custodian"):
            await cli("channel", "update", net_s, CHANNEL, "--sign", upd, "-c", admin)
        said = await cli(
            "channel", "update", net_s, CHANNEL, "--submit", upd, "-c", "admin.exchange"
        )
        assert " VALID in block " in said, said
        removed_at = int(said.split(" VALID in block ")[1].split()[0])
        removed = time.monotonic()
        await load.refused_with("trader.brokerb", "NOT_A_MEMBER", removed)
        await asyncio.gather(*(load.progress(c) for c in ("trader.brokera", "ops.exchange")))
    finally:
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*loaders, return_exceptions=True), 60)
    for task in loaders:
        assert task.exception() is None, task.exception()

    # Nothing acknowledged was lost or duplicated, on any member peer; the chains agree.
    chains = {
        peer: blocks(ledger_path(net, peer, CHANNEL))
        for peer in ("peer0.exchange", "peer0.brokera", "peer0.custodian", "peer0.brokerb")
    }
    headers = {p: [b.header.SerializeToString() for b in ch] for p, ch in chains.items()}
    assert headers["peer0.exchange"] == headers["peer0.brokera"] == headers["peer0.custodian"]
    assert headers["peer0.brokerb"] == headers["peer0.brokera"][: len(headers["peer0.brokerb"])]
    assert len(chains["peer0.brokerb"]) <= removed_at + 1  # its Deliver ended at the removal
    assert len(load.acked) > 4 * 9  # the load did run throughout (3 acks per phase, 4 clients)
    for peer in ("peer0.exchange", "peer0.brokera", "peer0.custodian"):
        codes = tx_codes(chains[peer])
        for tx_id, (_, code) in load.acked.items():
            assert codes.get(tx_id) == [code], (peer, tx_id)
    # Custodian's peer endorsed the load's transactions after it joined.
    late = [
        tx
        for tx, (client, code) in load.acked.items()
        if client == "ops.exchange" and code == VALID
    ][-1]
    assert set(endorsements(chains["peer0.brokera"], late)) == {"BrokerA", "Custodian"}
    # nothing of trader2.brokera's is VALID after the block that revoked it
    where = tx_blocks(chains["peer0.brokera"])
    after = [code for tx, (client, code) in load.acked.items()
             if client == "trader2.brokera" and where[tx] > revoked_at]  # fmt: skip
    assert VALID not in after

    # A restarted peer rebuilds the current config from its ledger: its own admission of a
    # query (no orderer, no other peer involved) refuses the revoked and the removed.
    assert sup.stop("peer0.brokera") == 0
    sup.start("peer0.brokera")
    sup.wait_ready("peer0.brokera")
    for client_id, reason in (
        ("trader2.brokera", "CERTIFICATE_REVOKED"),
        ("trader.brokerb", "NOT_A_MEMBER"),
    ):
        async with await GatewayClient.connect(net, client_id, "peer0.brokera") as c:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await c.evaluate(CHANNEL, "kv", "get", "k0")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(err.value) == reason
    async with await GatewayClient.connect(net, "trader.brokera", pipelined=False) as c:
        done = await c.submit_transaction(CHANNEL, "kv", "put", "after-restart", "v")
        assert done.status.result == VALID
    assert (await current_config(net, "trader.brokera", CHANNEL)).sequence == 3
