"""The UTXO transaction model: tx_id over components, parsing limits, refs, time windows."""

from __future__ import annotations

import pytest
from utxo_parties import NOTARY, make_parties, nonce, tx

from dltmw.core.errors import ClientError
from dltmw.core.utxo.build import TxSpec, build_transaction, cash_output
from dltmw.core.utxo.model import Ref, Window, read_transaction
from dltmw.v1 import utxo_pb2

P = make_parties()
A, B = P.alice.identity_bytes, P.bob.identity_bytes
REF = Ref("ab" * 32, 1)


def test_tx_id_is_deterministic_and_covers_every_component() -> None:
    n = nonce()
    base = TxSpec(notary=NOTARY, nonce=n, inputs=[REF], outputs=[cash_output(A, B, "JPY", 5)])
    same = read_transaction(build_transaction(base)).tx_id
    assert read_transaction(build_transaction(base)).tx_id == same
    variants = [
        TxSpec(notary=NOTARY, nonce=n, inputs=[Ref("ab" * 32, 2)], outputs=base.outputs),
        TxSpec(
            notary=NOTARY,
            nonce=n,
            inputs=[REF],
            references=[Ref("cd" * 32, 0)],
            outputs=base.outputs,
        ),
        TxSpec(notary=NOTARY, nonce=n, inputs=[REF], outputs=[cash_output(A, B, "JPY", 6)]),
        TxSpec(notary="other", nonce=n, inputs=[REF], outputs=base.outputs),
        TxSpec(notary=NOTARY, nonce=nonce(), inputs=[REF], outputs=base.outputs),
        TxSpec(notary=NOTARY, nonce=n, inputs=[REF], outputs=base.outputs, window=Window(1, 2)),
    ]
    ids = {read_transaction(build_transaction(v)).tx_id for v in variants}
    assert same not in ids and len(ids) == len(variants)


def test_ref_key_round_trips() -> None:
    assert Ref.from_key(REF.key) == REF and len(REF.key) == 36


@pytest.mark.parametrize(
    ("window", "now", "holds"),
    [
        (Window(), 5, True),
        (Window(5, 10), 5, True),
        (Window(5, 10), 10, False),
        (Window(5, None), 4, False),
        (Window(None, 10), 9, True),
    ],
    ids=["unbounded", "from-inclusive", "until-exclusive", "before-from", "open-start"],
)
def test_time_window(window: Window, now: int, holds: bool) -> None:
    assert window.holds(now) is holds


def _raw(**fields: object) -> bytes:
    msg = utxo_pb2.UtxoTransaction(notary=NOTARY, nonce=nonce())
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(msg, k).extend(v)
        else:
            setattr(msg, k, v)
    return msg.SerializeToString()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xff", "MALFORMED"),
        (_raw(nonce=b"short"), "INVALID_FIELD"),
        (_raw(notary=""), "MISSING_FIELD"),
        (
            _raw(inputs=[utxo_pb2.UtxoTransaction().inputs.add(tx_id="xyz", index=0)]),
            "INVALID_FIELD",
        ),
        (_raw(outputs=[b"\xff\xff"]), "MALFORMED"),
        (
            _raw(commands=[utxo_pb2.UtxoCommand(contract="cash").SerializeToString()]),
            "MISSING_FIELD",
        ),
    ],
    ids=["garbage", "short-nonce", "no-notary", "bad-ref", "bad-output", "command-without-name"],
)
def test_malformed_transactions_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(ClientError) as err:
        read_transaction(raw)
    assert err.value.reason_name == reason


def test_duplicate_and_overlapping_refs_are_refused() -> None:
    for spec in (dict(inputs=[REF, REF]), dict(inputs=[REF], references=[REF])):
        with pytest.raises(ClientError) as err:
            tx(**spec)
        assert err.value.reason_name == "INVALID_FIELD"


def test_output_refs_use_the_tx_id() -> None:
    _, wire = tx(outputs=[cash_output(A, A, "JPY", 1), cash_output(A, B, "JPY", 2)])
    assert wire.out_ref(1) == Ref(wire.tx_id, 1)
