"""A user-written UTXO contract installed as a package (docs/utxo.md "Installed UTXO contracts"),
between real vault nodes and a validating notary: `examples/contracts/bond_utxo` is installed
by admin-signed AdminService.InstallContract on the vaults and the notary that verify it,
approved in the network map, and used through the generic contract flow (RunFlow `contract`).
Each refusal leaves nothing signed, consumed or stored."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from dltmw.client.contracts import NodeAdmin
from dltmw.client.utxo import PartyFiles, VaultClient, error_metadata
from dltmw.contract_sdk.package import package_dir
from dltmw.core.contract_package import Manifest, package_id, write_package
from dltmw.net.netmap import FILE_NAME
from dltmw.ops.supervisor import Supervisor
from dltmw.rpc.status import reason_of
from dltmw.sdk.vault import Vault
from dltmw.v1 import utxo_pb2, vault_service_pb2
from tests.integration.cli import dltmw

pytestmark = pytest.mark.integration
Start = Callable[..., tuple[Path, Supervisor]]

TOPOLOGY = """
name = "utxo-installed"
[[orgs]]
id = "Bank"
[[orgs]]
id = "BrokerA"
[[orgs]]
id = "BrokerB"
[[orgs]]
id = "NotaryOrg"
[[nodes]]
id = "notary0"
org = "NotaryOrg"
roles = ["notary"]
validating = true
[[nodes]]
id = "bank"
org = "Bank"
roles = ["vault"]
[[nodes]]
id = "brokera"
org = "BrokerA"
roles = ["vault"]
[[nodes]]
id = "brokerb"
org = "BrokerB"
roles = ["vault"]
[[clients]]
id = "ops.bank"
org = "Bank"
[[clients]]
id = "trader.brokera"
org = "BrokerA"
[[clients]]
id = "trader.brokerb"
org = "BrokerB"
"""
BOND = package_dir(Path(__file__).resolve().parents[2] / "examples/contracts/bond_utxo")
BOND_ID = package_id(BOND)
SPIN = write_package(  # a verify that never returns: the step budget must stop it
    Manifest("spin", "1.0", "spin:verify", kind="utxo"),
    {"spin.py": "def verify(tx):\n    n = 0\n    while True:\n        n += 1\n"},
)
SPIN_ID = package_id(SPIN)
WALL_CLOCK_BEYOND_BUDGET = "\n[limits]\ncontract_wall_s = 300.0\n"
SOCKET = write_package(
    Manifest("leak", "1.0", "leak:verify", kind="utxo"),
    {"leak.py": "import socket\n\ndef verify(tx):\n    socket.create_connection(('x', 1))\n"},
)


def bond(issuer: bytes, owner: bytes, face: int) -> bytes:
    state = {"isin": "XS0000000001", "issuer": issuer.hex(), "owner": owner.hex(), "face": face}
    return json.dumps(state).encode()


def stored_tx_ids(net: Path, node: str) -> set[str]:
    with sqlite3.connect(net / "nodes" / node / "data" / "vault.sqlite") as conn:
        return {t for (t,) in conn.execute("SELECT tx_id FROM transactions")}


def approve(net: Path, name: str, digest: str) -> None:
    """Add `digest` to the network map's [contracts] allow-list for `name` (nodes read the
    map when they start)."""
    path = net / FILE_NAME
    text = path.read_text()
    if f"{name} = [" in text:
        text = text.replace(f"{name} = [", f'{name} = [\n    "{digest}",', 1)
    else:
        text = text.replace("[contracts]\n", f'[contracts]\n{name} = ["{digest}"]\n', 1)
    path.write_text(text)


async def refused(flow: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await flow  # type: ignore[misc]
    return err.value


def unconsumed(states: list[vault_service_pb2.VaultState]) -> list[tuple[str, int, bytes]]:
    out = []
    for s in states:
        if not s.consumed_by:
            data = utxo_pb2.UtxoOutput.FromString(s.output).data
            out.append((s.ref.tx_id, s.ref.index, data))
    return out


async def test_a_user_written_utxo_contract_installed_approved_and_used(network: Start) -> None:
    # a wall-clock backstop far beyond the step budget, so that on a loaded machine too the
    # deterministic budget is what stops the runaway verify below
    net, sup = network(TOPOLOGY, node_toml_extra=WALL_CLOCK_BEYOND_BUDGET)
    clients = {c: PartyFiles.load(net, c) for c in ("ops.bank", "trader.brokera", "trader.brokerb")}
    bank = await VaultClient.connect(clients["ops.bank"], "bank")
    try:
        me, a, b = (bank.identity_of(n) for n in ("bank", "brokera", "brokerb"))

        def issue(to: bytes, face: int, contract: str = "bond", digest: str = BOND_ID) -> object:
            return bank.contract_command(contract, digest, "issue", [(bond(me, to, face), [to])])

        # bad input to the generic flow: a specific reason, before anything is built
        notary = bank.identity_of("notary0")
        bad = [
            ({"command": ""}, "MISSING_FIELD"),
            ({"contract_hash": "not-a-hash"}, "INVALID_FIELD"),
            ({"outputs": [(b"{}", [])]}, "INVALID_FIELD"),  # a state nobody holds
            ({"outputs": [(b"{}", [notary])]}, "INVALID_FIELD"),  # a notary holds no states
            ({"signers": [notary]}, "INVALID_FIELD"),
            ({"memo": b"ref"}, "INVALID_FIELD"),
            ({"inputs": [("ab" * 32, 0)]}, "INVALID_FIELD"),  # not a state of this vault
        ]
        for change, reason in bad:
            args = {"contract": "bond", "contract_hash": BOND_ID, "command": "issue"} | change
            err = await refused(bank.contract_command(**args))  # type: ignore[arg-type]
            assert (err.code(), reason_of(err)) == (grpc.StatusCode.INVALID_ARGUMENT, reason), (
                change
            )
        assert stored_tx_ids(net, "bank") == set()

        # install: admin-signed, on the vaults and the notary that verify; a package importing
        # socket is refused with the names found, and nothing is stored
        for node in ("bank", "brokera"):
            for package in (BOND, SPIN):
                reply = await NodeAdmin(net, node).install(package)
                assert reply.contract.functions == ["verify (utxo)"]
        with pytest.raises(grpc.aio.AioRpcError) as leak:
            await NodeAdmin(net, "bank").install(SOCKET)
        assert (leak.value.code(), reason_of(leak.value)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "PACKAGE_INVALID",
        )
        assert "socket (import at leak.py:1)" in (leak.value.details() or "")
        assert {c.name for c in await NodeAdmin(net, "bank").installed()} == {"bond", "spin"}

        # installed but not approved by the network map: refused before anything is signed
        err = await refused(issue(a, 1000))
        assert (err.code(), reason_of(err)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "UTXO_CONTRACT_NOT_APPROVED",
        )
        assert error_metadata(err)["contract_hash"] == BOND_ID

        # approve both in the map and restart every node: installed packages survive
        await bank.close()
        assert all(code == 0 for code in sup.stop_all().values())
        approve(net, "bond", BOND_ID)
        approve(net, "spin", SPIN_ID)
        sup.up(timeout_s=60)
        bank = await VaultClient.connect(clients["ops.bank"], "bank")

        # the validating notary does not hold the package yet: UNKNOWN, nothing recorded
        err = await refused(issue(a, 1000))
        assert (err.code(), reason_of(err)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "UTXO_CONTRACT_UNKNOWN",
        )
        details = err.details() or ""  # the notary's refusal, relayed (without its metadata)
        assert details.startswith("UTXO_CONTRACT_UNKNOWN: notary0: ")
        assert f"contract 'bond': the transaction names package {BOND_ID}, no code here" in details
        assert stored_tx_ids(net, "bank") == stored_tx_ids(net, "brokera") == set()
        (net / "bond-1.0.zip").write_bytes(BOND)  # live, by the CLI: no restart needed
        out = await asyncio.to_thread(
            dltmw, "contract", "install", str(net), "notary0", str(net / "bond-1.0.zip")
        )
        assert out.startswith(f"{BOND_ID} installed on notary0 (bond 1.0)")

        # issue + transfer, each verified by the initiator, the notary and the receivers
        issued = await issue(a, 1000)
        assert issued.tx_id in stored_tx_ids(net, "brokera")
        async with await VaultClient.connect(clients["trader.brokera"], "brokera") as trader:
            [(tx_id, index, _)] = unconsumed(list(await trader.query(contract="bond")))
            assert tx_id == issued.tx_id

            def transfer(
                ref: tuple[str, int], to_bank: int, kept: int, signers: tuple[bytes, ...] = ()
            ) -> object:
                outputs = [(bond(me, me, to_bank), [me])]
                outputs += [(bond(me, a, kept), [a])] if kept else []
                return trader.contract_command(
                    "bond", BOND_ID, "transfer", outputs, inputs=[ref], signers=signers
                )

            moved = await transfer((tx_id, index), 600, 400)
            assert moved.tx_id in stored_tx_ids(net, "bank")
            held = unconsumed(list(await trader.query(contract="bond")))
            assert [json.loads(d)["face"] for _, _, d in held] == [400]
            kept = (held[0][0], held[0][1])

            # the generic flow spends only unconsumed states of that contract this node holds
            err = await refused(transfer((tx_id, index), 1000, 0))  # consumed just now
            assert (err.code(), reason_of(err)) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_FIELD",
            )

            # a required signer whose vault does not hold the package refuses to sign
            before = stored_tx_ids(net, "brokera")
            err = await refused(transfer(kept, 400, 0, signers=(b,)))
            assert (err.code(), reason_of(err)) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "UTXO_CONTRACT_UNKNOWN",
            )
            assert stored_tx_ids(net, "brokerb") == set()
            assert stored_tx_ids(net, "brokera") == before

            # the user's rule broken: the contract's own reason, nothing moves
            err = await refused(transfer(kept, 401, 0))
            assert (err.code(), reason_of(err)) == (grpc.StatusCode.ABORTED, "CONTRACT_FAILED")
            assert "bond.transfer: the face value is not conserved" in (err.details() or "")
            assert unconsumed(list(await trader.query(contract="bond"))) == held

        # on a vault without the package, its own client's flow is refused the same way
        async with await VaultClient.connect(clients["trader.brokerb"], "brokerb") as other:
            err = await refused(
                other.contract_command("bond", BOND_ID, "issue", [(bond(b, b, 1), [b])])
            )
            assert reason_of(err) == "UTXO_CONTRACT_UNKNOWN"

        # a runaway verify is stopped by the step budget; the node carries on
        err = await refused(issue(a, 1, "spin", SPIN_ID))
        assert (err.code(), reason_of(err)) == (
            grpc.StatusCode.ABORTED,
            "UTXO_CONTRACT_BUDGET_EXCEEDED",
        )
        assert error_metadata(err)["limit"] == "steps"
        async with await Vault.connect(net, "ops.bank", "bank") as embedded:  # the SDK's handle
            [(t, i, _)] = await embedded.states("bond")
            redeemed = await embedded.run("bond", BOND_ID, "redeem", inputs=[(t, i)])
            assert redeemed.tx_id in stored_tx_ids(net, "bank")
            assert await embedded.states("bond") == []

        # the same from the command line: identity, run, states
        cli = str(net)
        assert (await asyncio.to_thread(dltmw, "vault", "identity", cli, "brokera")).strip() == (
            a.hex()
        )
        data = bond(me, a, 7).decode()
        tx = await asyncio.to_thread(
            dltmw, "vault", "run", cli, "ops.bank", "bank", "bond", "issue",
            "--hash", BOND_ID, "--output", f"brokera:{data}",
        )  # fmt: skip
        listed = await asyncio.to_thread(
            dltmw, "vault", "states", cli, "trader.brokera", "brokera", "--contract", "bond"
        )
        assert f"{tx.strip()}:0 bond {data}" in listed.splitlines()
    finally:
        await bank.close()


NON_VALIDATING = (
    TOPOLOGY.replace("validating = true\n", "")
    + """
[[nodes]]
id = "brokerc"
org = "BrokerC"
roles = ["vault"]
[[orgs]]
id = "BrokerC"
[[clients]]
id = "trader.brokerc"
org = "BrokerC"
"""
)


async def test_receivers_verify_the_backchain_with_the_installed_package(network: Start) -> None:
    """With a non-validating notary each receiver resolves and verifies the backchain itself, with
    the package: brokerc records a bond brokera got from the bank. brokerb, without the package,
    refuses to record the final transfer (UTXO_CONTRACT_UNKNOWN, nothing stored); once an admin
    installs it there, the sender's outbox delivers it."""
    net, sup = network(NON_VALIDATING)
    for node in ("bank", "brokera", "brokerc"):
        await NodeAdmin(net, node).install(BOND)
    assert all(code == 0 for code in sup.stop_all().values())
    approve(net, "bond", BOND_ID)
    sup.up(timeout_s=60)
    party = {c: PartyFiles.load(net, c) for c in ("ops.bank", "trader.brokera", "trader.brokerc")}
    async with (
        await VaultClient.connect(party["ops.bank"], "bank") as bank,
        await VaultClient.connect(party["trader.brokera"], "brokera") as trader_a,
        await VaultClient.connect(party["trader.brokerc"], "brokerc") as trader_c,
    ):
        me, a, b, c = (bank.identity_of(n) for n in ("bank", "brokera", "brokerb", "brokerc"))
        issued = await bank.contract_command("bond", BOND_ID, "issue", [(bond(me, a, 1000), [a])])
        moved = await trader_a.contract_command(
            "bond", BOND_ID, "transfer", [(bond(me, c, 1000), [c])], inputs=[(issued.tx_id, 0)]
        )
        assert {issued.tx_id, moved.tx_id} <= stored_tx_ids(net, "brokerc")  # with its backchain
        [(t, i, _)] = unconsumed(list(await trader_c.query(contract="bond")))
        err = await refused(
            trader_c.contract_command(
                "bond", BOND_ID, "transfer", [(bond(me, b, 1000), [b])], inputs=[(t, i)]
            )
        )
        assert (err.code(), reason_of(err)) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "UTXO_CONTRACT_UNKNOWN",
        )
        assert stored_tx_ids(net, "brokerb") == set()
        await NodeAdmin(net, "brokerb").install(BOND)
        deadline = asyncio.get_running_loop().time() + 60
        while not stored_tx_ids(net, "brokerb") and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        assert len(stored_tx_ids(net, "brokerb")) >= 1  # the final transfer (and its chain)
