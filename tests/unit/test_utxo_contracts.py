"""Built-in contracts: cash (issue, move, exit), security (issue, transfer), delivery versus
payment — and signature checks of a signed transaction."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from utxo_parties import NOW, make_parties, tx

from dltmw.core.errors import ClientError
from dltmw.core.utxo.build import cash_output, dvp_command, security_output, sign_transaction
from dltmw.core.utxo.contracts import StateAndRef
from dltmw.core.utxo.model import Command, Output, Ref
from dltmw.core.utxo.verify import check_signatures, read_signed, resolve, verify_ledger_tx

P = make_parties()
BANK, DEP = P.bank.identity_bytes, P.depository.identity_bytes
A, B = P.alice.identity_bytes, P.bob.identity_bytes


def verify(
    inputs: Sequence[Output], outputs: Sequence[Output], commands: Sequence[Command]
) -> None:
    """Run the contracts on a transaction whose inputs are the given states."""
    refs = [Ref(f"{i:064x}", 0) for i in range(len(inputs))]
    known = dict(zip(refs, inputs, strict=True))
    _, wire = tx(inputs=refs, outputs=outputs, commands=commands)
    ltx = resolve(wire, known.get)
    assert ltx.inputs == tuple(StateAndRef(r, known[r]) for r in refs)
    verify_ledger_tx(ltx)


def cash(owner: bytes, amount: int, currency: str = "JPY", issuer: bytes = BANK) -> Output:
    return cash_output(issuer, owner, currency, amount)


def sec(owner: bytes, qty: int, isin: str = "JP0000000001", issuer: bytes = DEP) -> Output:
    return security_output(issuer, owner, isin, qty)


def cmd(contract: str, name: str, *signers: bytes) -> Command:
    return Command(contract, name, signers)


VALID = {
    "cash-issue": ([], [cash(A, 100)], [cmd("cash", "issue", BANK)]),
    "cash-move-split": ([cash(A, 100)], [cash(B, 60), cash(A, 40)], [cmd("cash", "move", A)]),
    "cash-move-merge": ([cash(A, 1), cash(A, 2)], [cash(B, 3)], [cmd("cash", "move", A)]),
    "cash-exit-partly": ([cash(A, 100)], [cash(A, 30)], [cmd("cash", "exit", A, BANK)]),
    "cash-exit-all": ([cash(A, 100)], [], [cmd("cash", "exit", A, BANK)]),
    "security-issue": ([], [sec(A, 10)], [cmd("security", "issue", DEP)]),
    "security-transfer": ([sec(A, 10)], [sec(B, 4), sec(A, 6)], [cmd("security", "transfer", A)]),
    "dvp": (
        [sec(A, 10), cash(B, 500)],
        [sec(B, 10), cash(A, 500)],
        [
            cmd("security", "transfer", A),
            cmd("cash", "move", B),
            dvp_command(B, A, "JP0000000001", 10, "JPY", 500),
        ],
    ),
}

INVALID = {
    "issue-without-issuer-signature": ([], [cash(A, 100)], [cmd("cash", "issue", A)]),
    "issue-with-inputs": ([cash(A, 1)], [cash(A, 100)], [cmd("cash", "issue", BANK, A)]),
    "zero-amount": ([], [cash(A, 0)], [cmd("cash", "issue", BANK)]),
    "move-creates-money": ([cash(A, 100)], [cash(B, 101)], [cmd("cash", "move", A)]),
    "move-without-owner-signature": ([cash(A, 100)], [cash(B, 100)], [cmd("cash", "move", B)]),
    "move-changes-currency": ([cash(A, 100)], [cash(B, 100, "USD")], [cmd("cash", "move", A)]),
    "move-changes-issuer": ([cash(A, 100)], [cash(B, 100, issuer=A)], [cmd("cash", "move", A)]),
    "exit-without-issuer": ([cash(A, 100)], [cash(A, 30)], [cmd("cash", "exit", A)]),
    "no-command": ([cash(A, 100)], [cash(B, 100)], []),
    "two-cash-commands": ([cash(A, 1)], [cash(B, 1)], [cmd("cash", "move", A)] * 2),
    "unknown-command": ([cash(A, 1)], [cash(B, 1)], [cmd("cash", "steal", A)]),
    "owner-not-participant": (
        [],
        [Output("cash", cash(A, 5).data, (B,))],
        [cmd("cash", "issue", BANK)],
    ),
    "security-created-in-transfer": ([sec(A, 1)], [sec(B, 2)], [cmd("security", "transfer", A)]),
    "dvp-cash-leg-short": (
        [sec(A, 10), cash(B, 500)],
        [sec(B, 10), cash(A, 499), cash(B, 1)],
        [
            cmd("security", "transfer", A),
            cmd("cash", "move", B),
            dvp_command(B, A, "JP0000000001", 10, "JPY", 500),
        ],
    ),
    "dvp-security-leg-missing": (
        [cash(B, 500)],
        [cash(A, 500)],
        [cmd("cash", "move", B), dvp_command(B, A, "JP0000000001", 10, "JPY", 500)],
    ),
    "dvp-seller-does-not-own-security": (
        [sec(B, 10), cash(B, 500)],
        [sec(B, 10), cash(A, 500)],
        [
            cmd("security", "transfer", B),
            cmd("cash", "move", B),
            dvp_command(B, A, "JP0000000001", 10, "JPY", 500),
        ],
    ),
    "dvp-security-leg-unsigned": (
        [sec(A, 10), cash(B, 500)],
        [sec(B, 10), cash(A, 500)],
        [
            cmd("security", "transfer", B),
            cmd("cash", "move", B),
            dvp_command(B, A, "JP0000000001", 10, "JPY", 500),
        ],
    ),
}


@pytest.mark.parametrize("case", VALID.values(), ids=VALID.keys())
def test_valid_transactions_verify(case: tuple[list[Output], list[Output], list[Command]]) -> None:
    verify(*case)


@pytest.mark.parametrize("case", INVALID.values(), ids=INVALID.keys())
def test_invalid_transactions_are_refused(
    case: tuple[list[Output], list[Output], list[Command]],
) -> None:
    with pytest.raises(ClientError) as err:
        verify(*case)
    assert err.value.reason_name == "CONTRACT_FAILED"


def test_unknown_input_is_not_found() -> None:
    _, wire = tx(inputs=[Ref("00" * 32, 0)], outputs=[cash(B, 1)], commands=[cmd("cash", "move")])
    with pytest.raises(ClientError) as err:
        resolve(wire, {}.get)
    assert err.value.reason_name == "NOT_FOUND"


def test_every_required_signer_must_sign() -> None:
    raw, wire = tx(outputs=[sec(B, 1)], commands=[dvp_command(B, A, "X", 1, "JPY", 1)])
    both = read_signed(sign_transaction(raw, wire.tx_id, [P.alice, P.bob]).SerializeToString())
    assert check_signatures(both, P.membership, NOW) == {A, B}
    one = read_signed(sign_transaction(raw, wire.tx_id, [P.alice]).SerializeToString())
    with pytest.raises(ClientError) as err:
        check_signatures(one, P.membership, NOW)
    assert err.value.reason_name == "BAD_SIGNATURE"
    assert check_signatures(one, P.membership, NOW, allowed_missing=[B]) == {A}


def test_a_signature_over_another_tx_id_is_refused() -> None:
    raw, _ = tx(outputs=[sec(A, 1)], commands=[cmd("security", "issue", DEP)])
    stx = sign_transaction(raw, "ff" * 32, [P.depository])
    with pytest.raises(ClientError) as err:
        check_signatures(read_signed(stx.SerializeToString()), P.membership, NOW)
    assert err.value.reason_name == "BAD_SIGNATURE"


def test_a_non_member_signature_is_refused() -> None:
    raw, wire = tx(outputs=[sec(A, 1)], commands=[cmd("security", "issue", DEP)])
    stx = sign_transaction(raw, wire.tx_id, [P.depository, P.outsider])
    with pytest.raises(ClientError) as err:
        check_signatures(read_signed(stx.SerializeToString()), P.membership, NOW)
    assert err.value.reason_name == "NOT_A_MEMBER"
