"""The hash constraint of UTXO contracts (core/utxo/constraints.py): transactions name each
contract's package hash, verifiers run exactly that code and refuse unknown or unapproved
hashes with their own reasons (docs/utxo.md "Contract packages")."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from utxo_parties import make_parties, tx

from dltmw.contracts.utxo import generated_utxo_module, utxo_package, utxo_package_id
from dltmw.core.contract_package import read_package
from dltmw.core.errors import ClientError
from dltmw.core.utxo.build import cash_output, dvp_command, security_output
from dltmw.core.utxo.constraints import BUILTIN_CODE, ContractCode, builtin_known
from dltmw.core.utxo.contracts import CONTRACTS, LedgerTx, verify_cash
from dltmw.core.utxo.model import Command, Output, Ref, WireTx
from dltmw.core.utxo.packages import BUILTIN_HASHES
from dltmw.core.utxo.verify import resolve, verify_ledger_tx
from dltmw.net.netmap import FILE_NAME, NetworkMap, write_network_map

P = make_parties()
BANK, DEP = P.bank.identity_bytes, P.depository.identity_bytes
A, B = P.alice.identity_bytes, P.bob.identity_bytes
CASH = BUILTIN_HASHES["cash"]
OTHER = "ab" * 32  # a package hash nobody approved and no node holds
V2 = "cd" * 32  # a second version of `cash`, when a test gives the node its code


def _cash(owner: bytes, amount: int, digest: str | None = None) -> Output:
    out = cash_output(BANK, owner, "JPY", amount)
    return out if digest is None else Output(out.contract, out.data, out.participants, digest)


def _ltx(
    inputs: Sequence[Output], outputs: Sequence[Output], commands: Sequence[Command]
) -> LedgerTx:
    refs = [Ref(f"{i:064x}", 0) for i in range(len(inputs))]
    known = dict(zip(refs, inputs, strict=True))
    _, wire = tx(inputs=refs, outputs=outputs, commands=commands)
    return resolve(wire, known.get)


def _reason(ltx: LedgerTx, code: ContractCode = BUILTIN_CODE) -> str:
    with pytest.raises(ClientError) as err:
        verify_ledger_tx(ltx, code)
    return err.value.reason_name


def _move(digest: str | None = None) -> LedgerTx:
    """Alice moves 100 to Bob, every output and command naming `digest` (default built-in)."""
    command = Command("cash", "move", (A,), b"", CASH if digest is None else digest)
    return _ltx([_cash(A, 100)], [_cash(B, 100, digest)], [command])


def test_the_wire_names_each_builtin_contract_package_hash() -> None:
    _, wire = tx(
        outputs=[_cash(A, 5), security_output(DEP, A, "JP0000000001", 1)],
        commands=[
            Command("cash", "issue", (BANK,)),
            dvp_command(A, B, "JP0000000001", 1, "JPY", 5),
        ],
    )
    assert [o.contract_hash for o in wire.outputs] == [CASH, BUILTIN_HASHES["security"]]
    assert [c.contract_hash for c in wire.commands] == [CASH, BUILTIN_HASHES["dvp"]]
    verify_ledger_tx(_move())  # the built-in code, approved by default, runs


def test_each_builtin_is_a_package_of_the_code_that_runs() -> None:
    """The generated ids are the packages' (a changed contract source must be regenerated),
    and each package holds the source of the module whose function verifies."""
    packages_py = Path(__file__).resolve().parents[2] / "dltmw/core/utxo/packages.py"
    assert packages_py.read_text() == generated_utxo_module(), "python -m dltmw.contracts --write"
    for name, verify in CONTRACTS.items():
        package = read_package(utxo_package(name))
        assert package.package_id == BUILTIN_HASHES[name] == utxo_package_id(name)
        module, function = package.manifest.entry.split(":")
        assert (package.manifest.name, function) == (name, verify.__name__)
        assert f"def {verify.__name__}(" in package.files[f"{module}.py"]


def test_a_hash_the_network_does_not_approve_is_refused() -> None:
    assert _reason(_move(OTHER)) == "UTXO_CONTRACT_NOT_APPROVED"
    # approved, but the node holds no code for it: it cannot run exactly that package
    approved = {"cash": frozenset({CASH, OTHER})}
    assert _reason(_move(OTHER), ContractCode(approved=approved)) == "UTXO_CONTRACT_UNKNOWN"


def test_a_hash_of_another_contracts_code_is_refused() -> None:
    """Naming security's package as cash's runs neither (the hash is checked against the name)."""
    security = BUILTIN_HASHES["security"]
    approved = {"cash": frozenset({CASH, security})}
    assert _reason(_move(security), ContractCode(approved=approved)) == "UTXO_CONTRACT_UNKNOWN"


def test_no_hash_or_two_hashes_for_one_contract_are_refused() -> None:
    assert _reason(_move("")) == "UTXO_CONTRACT_UNKNOWN"
    mixed = _ltx([_cash(A, 100)], [_cash(B, 100, V2)], [Command("cash", "move", (A,))])
    both = ContractCode(
        {**builtin_known(), V2: ("cash", verify_cash)}, {"cash": frozenset({CASH, V2})}
    )
    assert _reason(mixed, both) == "UTXO_CONTRACT_UNKNOWN"  # v1 and v2 in one transaction
    gold = _ltx([], [Output("gold", b"", (A,))], [Command("gold", "issue", (A,))])
    assert _reason(gold) == "UTXO_CONTRACT_UNKNOWN"  # no package: a contract nobody has


def test_an_approved_second_version_runs_instead_of_the_first() -> None:
    ran: list[WireTx] = []

    def verify_v2(ltx: LedgerTx) -> None:  # cash v2: v1's rules, and it says that it ran
        verify_cash(ltx)
        ran.append(ltx.wire)

    known = {**builtin_known(), V2: ("cash", verify_v2)}
    both = ContractCode(known, {"cash": frozenset({CASH, V2})})
    verify_ledger_tx(_move(V2), both)
    assert len(ran) == 1
    verify_ledger_tx(_move(), both)  # v1 is still approved: v1 runs, not v2
    assert len(ran) == 1
    only_v1 = ContractCode(known, {"cash": frozenset({CASH})})
    assert _reason(_move(V2), only_v1) == "UTXO_CONTRACT_NOT_APPROVED"
    assert len(ran) == 1  # v2 never ran unapproved


def test_the_code_of_a_contract_only_consumed_is_its_inputs() -> None:
    """A contract no output or command names: the consumed states' hash picks its code."""
    exit_all = Command("cash", "exit", (A, BANK))
    verify_ledger_tx(_ltx([_cash(A, 100)], [], [exit_all]))
    unapproved_input = _ltx([_cash(A, 100, OTHER)], [], [])
    assert _reason(unapproved_input) == "UTXO_CONTRACT_NOT_APPROVED"


def test_the_network_map_carries_the_allow_list(tmp_path: Path) -> None:
    raw = {"orgs": [], "nodes": []}
    write_network_map(tmp_path, raw)
    loaded = NetworkMap.load(tmp_path / FILE_NAME)
    assert loaded.approved == {n: frozenset({h}) for n, h in BUILTIN_HASHES.items()}
    text = (tmp_path / FILE_NAME).read_text()
    (tmp_path / FILE_NAME).write_text(text.replace(f'"{CASH}"', f'"{CASH}", "{V2}"'))
    assert NetworkMap.load(tmp_path / FILE_NAME).contract_code.approved["cash"] == {CASH, V2}
    (tmp_path / FILE_NAME).write_text(text.replace(f'"{CASH}"', '"cash-v1"'))
    with pytest.raises(ValueError, match="cash"):
        NetworkMap.load(tmp_path / FILE_NAME)
