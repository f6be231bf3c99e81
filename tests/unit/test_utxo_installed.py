"""Installed UTXO contracts: a user-written `verify` packaged like a channel contract, stored by a
node, found by its package hash beside the built-ins (runtime/utxo_code.py) and run under the
metered loader (contract_sdk/utxo_runner.py); docs/utxo.md "Installed UTXO contracts"."""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import count
from pathlib import Path

import pytest
from utxo_parties import make_parties, tx

from dltmw.contract_sdk.loader import PackageRefused, load_package
from dltmw.contract_sdk.package import package_dir
from dltmw.core.contract_package import Manifest, PackageError, package_id, write_package
from dltmw.core.errors import ClientError
from dltmw.core.utxo.constraints import ContractCode, builtin_approved
from dltmw.core.utxo.contracts import LedgerTx
from dltmw.core.utxo.model import Command, Output, Ref
from dltmw.core.utxo.verify import resolve, verify_ledger_tx
from dltmw.runtime.contract_store import ContractStore
from dltmw.runtime.utxo_code import InstalledUtxoCode

P = make_parties()
BANK, A, B = P.bank.identity_bytes, P.alice.identity_bytes, P.bob.identity_bytes
BOND_DIR = Path(__file__).resolve().parents[2] / "examples/contracts/bond_utxo"
BOND = package_dir(BOND_DIR)
BOND_ID = package_id(BOND)
ISIN = "XS0000000001"


def utxo_package(source: str, name: str = "bond", entry: str = "bond:verify") -> bytes:
    module = entry.split(":", maxsplit=1)[0]
    return write_package(Manifest(name, "1.0", entry, kind="utxo"), {f"{module}.py": source})


def state(owner: bytes, face: int, issuer: bytes = BANK, digest: str = BOND_ID) -> Output:
    data = {"isin": ISIN, "issuer": issuer.hex(), "owner": owner.hex(), "face": face}
    return Output("bond", json.dumps(data).encode(), (owner,), digest)


def ltx(
    inputs: Sequence[Output], outputs: Sequence[Output], commands: Sequence[Command]
) -> LedgerTx:
    refs = [Ref(f"{i:064x}", 0) for i in range(len(inputs))]
    _, wire = tx(inputs=refs, outputs=outputs, commands=commands)
    return resolve(wire, dict(zip(refs, inputs, strict=True)).get)


def cmd(name: str, signers: Sequence[bytes], digest: str = BOND_ID) -> Command:
    return Command("bond", name, tuple(signers), b"", digest)


def approved(*ids: str) -> dict[str, frozenset[str]]:
    return {**builtin_approved(), "bond": frozenset(ids)}


@pytest.fixture
def store(tmp_path: Path) -> ContractStore:
    s = ContractStore(tmp_path / "contracts")
    s.install(BOND)
    return s


def code_of(store: ContractStore | None, *ids: str) -> ContractCode:
    return ContractCode(InstalledUtxoCode(store, wall_s=60.0), approved(*ids))


def refused(ledger_tx: LedgerTx, code: ContractCode) -> ClientError:
    with pytest.raises(ClientError) as err:
        verify_ledger_tx(ledger_tx, code)
    return err.value


def test_the_example_package_is_a_utxo_contract_whose_verify_runs() -> None:
    loaded = load_package(BOND)
    assert (loaded.manifest.kind, loaded.contract, loaded.functions) == (
        "utxo",
        None,
        {"verify": "utxo"},
    )
    assert loaded.verify is not None
    loaded.verify(ltx([], [state(A, 1000)], [cmd("issue", [BANK])]))


def test_installed_and_approved_runs_issue_transfer_and_redeem(store: ContractStore) -> None:
    code = code_of(store, BOND_ID)
    verify_ledger_tx(ltx([], [state(A, 1000)], [cmd("issue", [BANK])]), code)
    verify_ledger_tx(
        ltx([state(A, 1000)], [state(B, 600), state(A, 400)], [cmd("transfer", [A])]), code
    )
    verify_ledger_tx(ltx([state(B, 600)], [], [cmd("redeem", [B, BANK])]), code)


def test_a_broken_rule_is_refused_with_the_contracts_own_reason(store: ContractStore) -> None:
    code = code_of(store, BOND_ID)
    inflated = ltx([state(A, 1000)], [state(B, 1001)], [cmd("transfer", [A])])
    err = refused(inflated, code)
    assert err.reason_name == "CONTRACT_FAILED"
    assert "bond.transfer: the face value is not conserved" in err.message
    unsigned = refused(ltx([], [state(A, 1)], [cmd("issue", [A])]), code)
    assert "bond.issue: the issuer signs" in unsigned.message


def test_not_installed_is_unknown_and_not_approved_is_refused_first(
    store: ContractStore, tmp_path: Path
) -> None:
    issue = ltx([], [state(A, 1000)], [cmd("issue", [BANK])])
    empty = ContractStore(tmp_path / "elsewhere")
    assert refused(issue, code_of(empty, BOND_ID)).reason_name == "UTXO_CONTRACT_UNKNOWN"
    assert refused(issue, code_of(None, BOND_ID)).reason_name == "UTXO_CONTRACT_UNKNOWN"
    err = refused(issue, code_of(store))  # installed here, but the map approves no bond id
    assert (err.reason_name, err.metadata["contract_hash"]) == (
        "UTXO_CONTRACT_NOT_APPROVED",
        BOND_ID,
    )


def test_an_installed_package_runs_only_under_its_own_name(store: ContractStore) -> None:
    """A transaction naming bond's package for contract "gold" runs nothing."""
    gold = Output("gold", b"{}", (A,), BOND_ID)
    code = ContractCode(InstalledUtxoCode(store, 60.0), {"gold": frozenset({BOND_ID})})
    err = refused(ltx([], [gold], [Command("gold", "issue", (A,), b"", BOND_ID)]), code)
    assert err.reason_name == "UTXO_CONTRACT_UNKNOWN"


def test_installed_packages_survive_a_restart(store: ContractStore) -> None:
    again = ContractStore(store.directory)
    issue = ltx([], [state(A, 1000)], [cmd("issue", [BANK])])
    # the registry reads memory only: nothing is found before the node's start preloads
    assert refused(issue, code_of(again, BOND_ID)).reason_name == "UTXO_CONTRACT_UNKNOWN"
    assert again.preload() == 1
    verify_ledger_tx(issue, code_of(again, BOND_ID))
    assert again.contract(BOND_ID) is None  # a UTXO package is no channel contract


RUNAWAY = {
    "loops": "def verify(tx):\n    while True:\n        pass\n",
    "recurses": "def verify(tx):\n    return verify(tx)\n",
    "allocates": "def verify(tx):\n    xs = []\n    while True:\n        xs.append(b'x' * 1024)\n",
}


@pytest.mark.parametrize("kind", sorted(RUNAWAY))
def test_a_runaway_verify_is_stopped_by_the_step_budget(tmp_path: Path, kind: str) -> None:
    data = utxo_package(RUNAWAY[kind])
    s = ContractStore(tmp_path)
    s.install(data)
    digest = package_id(data)
    issue = ltx([], [state(A, 1, digest=digest)], [cmd("issue", [BANK], digest)])
    err = refused(issue, code_of(s, digest))
    assert err.reason_name == "UTXO_CONTRACT_BUDGET_EXCEEDED", err.message
    limit = "recursion" if kind == "recurses" else "steps"  # Python's stack limit comes first
    assert err.metadata == {"contract": "bond", "contract_hash": digest, "limit": limit}


def test_an_allocation_beyond_any_memory_is_refused_as_such(tmp_path: Path) -> None:
    """One allocation is one step, so only MemoryError stops it: 4 EiB exceeds every address
    space, so the allocation fails at once (nothing is touched) on any machine."""
    data = utxo_package("def verify(tx):\n    return b'x' * (2 ** 62)\n")
    s = ContractStore(tmp_path)
    s.install(data)
    digest = package_id(data)
    issue = ltx([], [state(A, 1, digest=digest)], [cmd("issue", [BANK], digest)])
    err = refused(issue, code_of(s, digest))
    assert (err.reason_name, err.metadata["limit"]) == ("UTXO_CONTRACT_BUDGET_EXCEEDED", "memory")


def test_the_wall_clock_backstop_stops_what_the_step_budget_does_not(tmp_path: Path) -> None:
    data = utxo_package("def verify(tx):\n    while True:\n        pass\n")
    s = ContractStore(tmp_path)
    s.install(data)
    digest = package_id(data)
    ticks = count()
    known = InstalledUtxoCode(s, wall_s=5.0, clock=lambda: float(next(ticks)))
    issue = ltx([], [state(A, 1, digest=digest)], [cmd("issue", [BANK], digest)])
    err = refused(issue, ContractCode(known, approved(digest)))
    assert (err.reason_name, err.metadata["limit"]) == (
        "UTXO_CONTRACT_BUDGET_EXCEEDED",
        "wall_clock",
    )


def test_a_verify_that_crashes_is_a_refusal_not_a_node_crash(tmp_path: Path) -> None:
    data = utxo_package("def verify(tx):\n    return tx.outputs[0].data + 1\n")
    s = ContractStore(tmp_path)
    s.install(data)
    digest = package_id(data)
    issue = ltx([], [state(A, 1, digest=digest)], [cmd("issue", [BANK], digest)])
    err = refused(issue, code_of(s, digest))
    assert err.reason_name == "CONTRACT_FAILED"
    assert "contract raised TypeError" in err.message


def test_a_package_importing_socket_is_refused_at_install_with_the_names(tmp_path: Path) -> None:
    source = "import socket\nfrom os import path\n\ndef verify(tx):\n    socket.socket()\n"
    s = ContractStore(tmp_path)
    with pytest.raises(PackageRefused) as err:
        s.install(utxo_package(source))
    assert "socket (import at bond.py:1)" in err.value.message
    assert "os (import at bond.py:2)" in err.value.message
    assert s.ids() == []  # nothing stored


@pytest.mark.parametrize(
    ("source", "entry"),
    [
        ("class Verify:\n    pass\n", "bond:Verify"),
        ("def verify(tx, other):\n    pass\n", "bond:verify"),
        ("from dltmw.contract_sdk.utxo import require as verify\n", "bond:verify"),
    ],
    ids=["a class", "two arguments", "a function of the SDK"],
)
def test_the_entry_of_a_utxo_package_is_its_own_verify_function(source: str, entry: str) -> None:
    with pytest.raises(PackageError) as err:
        load_package(utxo_package(source, entry=entry))
    assert err.value.reason == "bad_entry"


def test_the_manifest_kind_is_checked_and_absent_for_channel_contracts() -> None:
    channel = Manifest("counter", "1.0", "contract:Counter")
    assert b"kind" not in channel.to_json()  # the ids of channel packages do not change
    assert b'"kind":"utxo"' in Manifest("bond", "1.0", "bond:verify", kind="utxo").to_json()
    with pytest.raises(PackageError) as err:
        write_package(Manifest("bond", "1.0", "bond:verify", kind="cordapp"), {"bond.py": ""})
    assert err.value.reason == "bad_kind"


def test_the_docs_show_the_example_manifest_verbatim() -> None:
    manifest = (BOND_DIR / "contract.json").read_text(encoding="utf-8").strip()
    assert manifest in (BOND_DIR.parents[2] / "docs/contracts.md").read_text(encoding="utf-8")
