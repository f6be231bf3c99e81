"""A client's creator by reference (`client/creator_reference.py`) on its private path and in the
SDK: one creator per transaction, fixed with its nonce before the agreements, the same at the
agreements, the envelope and a resume; a refused reference done again in full under a new tx
id with its agreements collected again; the rule's state (full until a full-creator commit,
back to full on a refusal, off for good on MALFORMED or after two rounds of refusals).

The client is the real `PrivacyClient` over a real `GatewayClient` with a real signer; only its
RPCs are stand-ins (`Scripted`: the agreements it is asked for and the commit statuses it
answers), below the I/O boundary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
import pytest
from local_grpc import client_signer
from test_private_pending import pending_error, refused

from dltmw.client import private_pending
from dltmw.client.creator_reference import REFUSALS_MAX, CreatorReferences
from dltmw.client.gateway import GatewayClient
from dltmw.client.privacy import PrivacyClient
from dltmw.client.private_pending import PrivateAgreementPending
from dltmw.core.hashing import compute_tx_id
from dltmw.core.identity import reference_bytes
from dltmw.sdk.client import _agreement_pending
from dltmw.v1 import common_pb2, errors_pb2, gateway_service_pb2, private_agreement_pb2
from dltmw.v1 import transaction_pb2 as C

A = private_agreement_pb2
G = gateway_service_pb2
R = errors_pb2
T = TypeVar("T")
VALID = C.TX_VALIDATION_CODE_VALID
UNKNOWN = C.TX_VALIDATION_CODE_UNKNOWN_IDENTITY_REFERENCE
BAD_CREATOR = C.TX_VALIDATION_CODE_BAD_CREATOR_SIGNATURE
MVCC = C.TX_VALIDATION_CODE_MVCC_READ_CONFLICT
CH = "deals"
DIGEST = b"\x07" * 32


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(private_pending, "BACKOFF_FIRST_S", 0.01)
    monkeypatch.setattr(private_pending, "BACKOFF_MAX_S", 0.02)


# ---- the rule -------------------------------------------------------------------------------


def _refs(presuming: bool = False) -> tuple[CreatorReferences, bytes, bytes]:
    full = client_signer().identity_bytes
    ref = reference_bytes(full)
    assert ref is not None
    return CreatorReferences(full, [] if presuming else [CH], presuming), full, ref


def test_in_full_until_a_full_creator_transaction_committed_then_by_reference() -> None:
    refs, full, ref = _refs()
    assert refs.creator(CH) == full and refs.creator("other") == full
    refs.committed(CH, full, MVCC)  # any code: peers register from the block's content
    assert refs.creator(CH) == ref
    refs.committed("other", full, VALID)  # not a channel that takes references
    assert refs.creator("other") == full
    tx = refs.new_tx(CH)
    assert tx.creator == ref and tx.tx_id == compute_tx_id(tx.nonce, ref)


@pytest.mark.parametrize(
    ("refusal", "off"),
    [
        (("reason", "UNKNOWN_IDENTITY_REFERENCE"), False),
        (("code", UNKNOWN), False),
        (("reason", "MALFORMED"), True),  # the channel's flag turned off
        (("code", BAD_CREATOR), True),
    ],
    ids=["unknown-at-admission", "unknown-at-commit", "malformed", "bad-creator-at-commit"],
)
def test_a_refused_reference_goes_back_to_full(refusal: tuple[str, object], off: bool) -> None:
    refs, full, ref = _refs()
    refs.committed(CH, full, VALID)
    kind, what = refusal

    def refuse(creator: bytes) -> bool:
        if kind == "reason":
            return refs.refused_reason(CH, creator, str(what))
        return refs.refused_code(CH, creator, int(what))  # type: ignore[call-overload]

    assert not refuse(full)  # a creator in full is never the reference's refusal
    assert refuse(ref)
    assert refs.creator(CH) == full
    refs.committed(CH, full, VALID)
    assert refs.creator(CH) == (full if off else ref)
    # other refusals are not the reference's
    assert not refs.refused_reason(CH, ref, "MVCC_READ_CONFLICT")
    assert not refs.refused_code(CH, ref, MVCC)


def test_refused_again_after_registering_again_stops_referencing_there() -> None:
    """A channel that refuses the reference in two rounds without one VALID by reference in
    between takes no client references (an SDK client presuming every channel does, on a
    channel whose config takes only nodes' references); a VALID one resets the count, and the
    refusals of transactions in flight together count once."""
    refs, full, ref = _refs(presuming=True)
    for _ in range(3):  # refused, registered again, VALID by reference: never off
        refs.committed(CH, full, VALID)
        assert refs.refused_reason(CH, ref, "UNKNOWN_IDENTITY_REFERENCE")
        refs.committed(CH, full, VALID)
        refs.committed(CH, ref, VALID)
        assert refs.creator(CH) == ref
    for _ in range(REFUSALS_MAX):
        refs.committed(CH, full, VALID)
        assert refs.creator(CH) == ref
        for _ in range(5):  # five in flight refused together: one round
            assert refs.refused_reason(CH, ref, "UNKNOWN_IDENTITY_REFERENCE")
    refs.committed(CH, full, VALID)
    assert refs.creator(CH) == full and not refs.referable(CH)
    assert refs.referable("another")  # presuming: every other channel still


# ---- the private path -----------------------------------------------------------------------


class Gateway(GatewayClient):
    """A real GatewayClient (signer, references, envelope signing) whose ordering is scripted:
    each `submit_and_wait` takes the next answer (a code, or an error raised), records the
    envelope's header."""

    def __init__(self, answers: list[int | grpc.aio.AioRpcError]) -> None:
        super().__init__(
            client_signer(),
            grpc.aio.insecure_channel("127.0.0.1:1"),
            pipelined=False,
            client_references=[CH],
        )
        self.answers = answers
        self.ordered: list[common_pb2.Header] = []

    async def retried_alone(
        self, channel_id: str, step: Callable[[bool], Awaitable[T]], private: bool = False
    ) -> T:
        return await step(False)

    async def submit_and_wait(
        self, channel_id: str, tx_id: str, envelope: common_pb2.Envelope, unsigned: bool = False
    ) -> G.CommitStatusResponse:
        header = common_pb2.Header.FromString(
            common_pb2.Payload.FromString(envelope.payload).header
        )
        assert header.tx_id == tx_id == compute_tx_id(header.nonce, header.creator)
        self.ordered.append(header)
        answer = self.answers.pop(0)
        if isinstance(answer, grpc.aio.AioRpcError):
            raise answer
        return G.CommitStatusResponse(result=answer, block_number=len(self.ordered))  # type: ignore[arg-type]


class Privacy(PrivacyClient):
    """A real PrivacyClient whose node is scripted: Send answers the digest and collects the
    agreements for the tx id asked (recorded), CollectAgreements answers pending `pending`
    times, then agrees (recorded)."""

    def __init__(self, gateway: Gateway, pending: int = 0) -> None:
        self.client = gateway
        self.pending_deadline_s = 0.2
        self.pending = pending
        self.agreed_for: list[str] = []

    async def send_and_collect(
        self, channel_id: str, payload: bytes, recipient_orgs: Sequence[str], tx_id: str
    ) -> tuple[bytes, A.CollectAgreementsResponse]:
        return DIGEST, await self.collect_until(channel_id, DIGEST, tx_id)

    async def collect_agreements(
        self, channel_id: str, payload_hash: bytes, tx_id: str, timeout_s: float = 60.0
    ) -> A.CollectAgreementsResponse:
        if self.pending > 0:
            self.pending -= 1
            raise pending_error()
        self.agreed_for.append(tx_id)
        return A.CollectAgreementsResponse(agreed=True)


async def test_a_private_transaction_names_one_creator_from_agreements_to_order() -> None:
    """Red if the tx id of the agreements and that of the envelope are made apart (e.g.
    `new_tx` in full while the envelope names the reference: the assertion in `Gateway`), or
    if the private path never switches (`references.committed` not called)."""
    gateway = Gateway([VALID, VALID, VALID])
    pc = Privacy(gateway)
    full, ref = gateway.signer.identity_bytes, reference_bytes(gateway.signer.identity_bytes)
    done = [await pc.submit_private(CH, ["Org2"], "kv", "put", f"k{i}", "v") for i in range(3)]
    assert [h.creator for h in gateway.ordered] == [full, ref, ref]
    assert pc.agreed_for == [d.tx_id for d in done] == [h.tx_id for h in gateway.ordered]
    assert all(d.status.result == VALID for d in done)


async def test_a_resumed_private_transaction_keeps_its_reference_and_tx_id() -> None:
    """`PrivateAgreementPending` carries the creator the tx id was made with, and so does the
    SDK's `AgreementPending`; `resume_private` with it collects and orders that very tx id. Red
    without the creator in the error (resumed in full: another tx id than the pending one)."""
    gateway = Gateway([VALID, VALID])
    pc = Privacy(gateway)
    ref = reference_bytes(gateway.signer.identity_bytes)
    await pc.submit_private(CH, ["Org2"], "kv", "put", "k0", "v")  # registers: by reference next
    pc.pending = 1_000_000
    with pytest.raises(PrivateAgreementPending) as raised:
        await pc.submit_private(CH, ["Org2"], "kv", "put", "k1", "v")
    pending = raised.value
    assert pending.creator == ref and pending.nonce is not None
    assert pending.tx_id == compute_tx_id(pending.nonce, ref)
    sdk = _agreement_pending(pending)
    assert (sdk.tx_id, sdk.nonce, sdk.creator) == (pending.tx_id, pending.nonce, ref)
    pc.pending = 0
    done = await pc.resume_private(CH, DIGEST, sdk.nonce, 1.0, sdk.creator)  # type: ignore[arg-type]
    assert done.tx_id == pending.tx_id == pc.agreed_for[-1] == gateway.ordered[-1].tx_id
    assert gateway.ordered[-1].creator == ref


@pytest.mark.parametrize(
    "refusal",
    [
        refused(R.ERROR_REASON_UNKNOWN_IDENTITY_REFERENCE, grpc.StatusCode.FAILED_PRECONDITION, {}),
        UNKNOWN,
    ],
    ids=["refused-at-admission", "invalid-at-commit"],
)
async def test_a_refused_reference_is_done_again_in_full_with_agreements_collected_again(
    refusal: int | grpc.aio.AioRpcError,
) -> None:
    """The agreements were made for the reference's tx id, which was refused (nothing applied):
    the same payload is ordered again in full under a new tx id, its agreements collected
    again for that tx id; the next transaction goes in full until that one committed, then by
    reference again. Red if the fallback reuses the old agreements or tx id (the assertion in
    `Gateway`, or `agreed_for`), or if the refusal is not recognised (raised / returned)."""
    gateway = Gateway([VALID, refusal, VALID, VALID])
    pc = Privacy(gateway)
    full, ref = gateway.signer.identity_bytes, reference_bytes(gateway.signer.identity_bytes)
    await pc.submit_private(CH, ["Org2"], "kv", "put", "k0", "v")
    done = await pc.submit_private(CH, ["Org2"], "kv", "put", "k1", "v")
    assert done.status.result == VALID and done.payload_hash == DIGEST
    assert [h.creator for h in gateway.ordered] == [full, ref, full]
    refused_tx, again = gateway.ordered[1].tx_id, gateway.ordered[2].tx_id
    assert done.tx_id == again != refused_tx
    assert pc.agreed_for[1:] == [refused_tx, again]  # collected again, for the new tx id
    await pc.submit_private(CH, ["Org2"], "kv", "put", "k2", "v")
    assert gateway.ordered[3].creator == ref  # registered again by the full one's commit
