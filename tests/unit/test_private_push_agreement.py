"""The agreement carried on the Push (`PushBatch.agree_tx_ids`, docs/privacy.md "Agreement before
commit"): a recipient answers a push that asks with its signed AGREE on its OWN hashes
(`Agreements.agree_pushed`); the sender pairs the answers with the payloads that asked, chunk by
chunk (`PrivateChannel._push`); and a collection whose payload was sent in the same call takes a
usable answer instead of asking AgreeBatch (`Agreements.collect`), asks AgreeBatch of a recipient
that gave none, and treats an answer on other hashes as that recipient's disagreement: its next
attempt asks by AgreeBatch, as a DISAGREE from AgreeBatch would be run again.

Stand-ins: the runs (`_run`, `_run_many`: a run's hashes are given), the signing (`_sign_all`:
the body as the agreement) and the AgreeBatch asks (`_ask`: recorded). What is tested is the
logic between them; the real-process test (tests/integration/test_privacy.py) checks the
signatures and that no AgreeBatch call is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from dltmw.aio.tasks import TaskOwner
from dltmw.core.errors import ClientError
from dltmw.core.privacy import agreement as ag
from dltmw.runtime.roles.privacy import agreement as agreement_module
from dltmw.runtime.roles.privacy.agreement import Agreements
from dltmw.runtime.roles.privacy.private_channel import Outgoing, PrivateChannel
from dltmw.v1 import config_pb2, errors_pb2, private_payload_pb2
from dltmw.v1 import privacy_manager_service_pb2 as P
from dltmw.v1 import private_agreement_pb2 as A

LATE_S = 10.0  # a deadline for what must happen, never a measured duration
ME, ORG2, AUDITOR = b"k1" * 16, b"k2" * 16, b"k3" * 16
KEYS = [ME, ORG2, AUDITOR]
DIGEST = b"d" * 32
OWN = (b"pre" * 10, b"delta" * 6)
OTHER = (b"pre" * 10, b"other" * 6)
NODES = {"peer0.org1": ME, "peer0.org2": ORG2, "peer0.regulator": AUDITOR}


def _channel() -> Any:
    config = config_pb2.ChannelConfig(
        private_agreement=A.PRIVATE_AGREEMENT_POLICY_ALL_RECIPIENTS,
        peers=[config_pb2.NodeConfig(node_id=n, privacy_public_key=k) for n, k in NODES.items()],
    )

    def node_of_key(key: bytes) -> config_pb2.NodeConfig | None:
        return next((n for n in config.peers if n.privacy_public_key == key), None)

    return SimpleNamespace(
        channel_id="deals", view=SimpleNamespace(config=config), node_of_key=node_of_key
    )


def _body(tx_id: str, hashes: tuple[bytes, bytes], verdict: int = ag.AGREE) -> bytes:
    return ag.agreement_body("deals", tx_id, DIGEST, hashes, KEYS, verdict, sender_key=ME)


class Stubbed(Agreements):
    """Agreements with the runs, the signing and the AgreeBatch asks stood in for."""

    def __init__(self, ran: tuple[bytes, bytes] = OWN, agree: tuple[bytes, bytes] = OWN) -> None:
        ctx = SimpleNamespace(tasks=TaskOwner())  # its Coalescers run under the node's owner
        super().__init__(ctx, SimpleNamespace(public_key=ME))  # type: ignore[arg-type]
        self.ran, self.agree = ran, agree
        self.asked: list[tuple[str, bytes]] = []  # (tx_id, recipient key) asked by AgreeBatch
        self.ran_when: list[tuple[bool, bool]] = []  # per own run: (stored, done) of `watch`
        self.watch: Outgoing | None = None
        self.running = asyncio.Event()
        self.hops = self.signatures = 0  # calls of `_run_many` and of `_sign_all`

    async def _run(self, channel: Any, contract_of: Any, digest: bytes) -> Any:
        if self.watch is not None:
            self.ran_when.append((self.watch.stored.done(), self.watch.done.done()))
        self.running.set()
        return self.ran, KEYS, ((), (), ()), ME

    async def _run_many(self, channel: Any, contract_of: Any, digests: Sequence[bytes]) -> Any:
        self.hops += 1
        return [
            ClientError(errors_pb2.ERROR_REASON_NOT_AUTHORIZED, "not held")
            if d == b"n" * 32
            else (self.ran, KEYS, ((), (), ()), ME)
            for d in digests
        ]

    def _sign_all(self, channel: Any, bodies: Sequence[bytes]) -> list[A.PrivateAgreement]:
        self.signatures += 1
        return [A.PrivateAgreement(body=b, signature=b"one") for b in bodies]

    async def _ask(self, channel: Any, key: bytes, digest: bytes, tx_id: str, own: Any) -> Any:
        self.asked.append((tx_id, key))
        verdict = ag.verdict_on(self.agree, own)
        return A.PrivateAgreement(body=_body(tx_id, self.agree, verdict), signature=b"asked")


async def _sending(answers: dict[str, A.AgreeResult]) -> Outgoing:
    out = Outgoing(private_payload_pb2.EncryptedPayload(), DIGEST, ("peer0.org2",), "tx1")
    out.stored.set_result(None)
    out.answers.update(answers)
    out.done.set_result(())
    return out


def _answer(tx_id: str, hashes: tuple[bytes, bytes]) -> A.AgreeResult:
    return A.AgreeResult(agreement=A.PrivateAgreement(body=_body(tx_id, hashes), signature=b"p"))


async def test_a_recipient_answers_a_push_with_an_agree_on_its_own_hashes() -> None:
    agreements = Stubbed(ran=OTHER)
    out = await agreements.agree_pushed(
        _channel(), lambda _: None, [(DIGEST, "tx1"), (b"n" * 32, "tx2")], ME
    )
    body = A.PrivateAgreementBody.FromString(out[0].agreement.body)
    assert (body.tx_id, body.payload_hash, body.verdict) == ("tx1", DIGEST, ag.AGREE)
    assert (body.pre_state_hash, body.delta_hash) == OTHER  # its own: there is no proposal
    assert out[1].reason == errors_pb2.ERROR_REASON_NOT_AUTHORIZED  # refused alone
    outsider = await agreements.agree_pushed(_channel(), lambda _: None, [(DIGEST, "t")], b"x")
    assert outsider[0].reason == errors_pb2.ERROR_REASON_NOT_AUTHORIZED  # not a recipient


async def test_concurrent_pushes_share_one_run_hop_and_one_signature() -> None:
    """Answers of pushes handled at once (several senders' streams, PUSH_DEPTH batches of
    each) are run in one hop and signed under ONE signature, as the node's own collections
    are: signed per push, a transaction with 10 recipients carried ~3.1 distinct signatures for
    every node to verify instead of ~1.2 (benchmarks/RESULTS.md, branch priv8)."""
    agreements = Stubbed()
    channel = _channel()
    pushes = [[(bytes([i]) * 32, f"tx{i}")] for i in range(3)]
    out = await asyncio.wait_for(
        asyncio.gather(*(agreements.agree_pushed(channel, None, p, ME) for p in pushes)), LATE_S
    )
    assert [A.PrivateAgreementBody.FromString(o[0].agreement.body).tx_id for o in out] == [
        "tx0",
        "tx1",
        "tx2",
    ]
    assert (agreements.hops, agreements.signatures) == (1, 1)
    await agreements.close()


async def test_answers_on_the_push_make_the_collection_ask_no_one() -> None:
    agreements = Stubbed()
    sending = await _sending(
        {"peer0.org2": _answer("tx1", OWN), "peer0.regulator": _answer("tx1", OWN)}
    )
    out = await asyncio.wait_for(
        agreements.collect(_channel(), lambda _: None, DIGEST, "tx1", sending), LATE_S
    )
    assert out.agreed and len(out.agreements) == 3
    assert agreements.asked == []  # no AgreeBatch at all
    assert {a.signature for a in out.agreements[1:]} == {b"p"}  # the answers on the push


async def test_a_recipient_that_answered_none_is_asked_by_agree_batch() -> None:
    agreements = Stubbed()
    wrong_tx = _answer("tx9", OWN)  # not an answer to this question
    sending = await _sending({"peer0.org2": _answer("tx1", OWN), "peer0.regulator": wrong_tx})
    out = await agreements.collect(_channel(), lambda _: None, DIGEST, "tx1", sending)
    assert out.agreed
    assert agreements.asked == [("tx1", AUDITOR)]


async def test_an_answer_on_other_hashes_is_a_disagreement_then_agree_batch_is_asked(
    monkeypatch: Any,
) -> None:
    monkeypatch.setattr(agreement_module, "COLLECT_BACKOFF_S", 0.0)
    agreements = Stubbed()
    sending = await _sending(
        {"peer0.org2": _answer("tx1", OTHER), "peer0.regulator": _answer("tx1", OWN)}
    )
    out = await agreements.collect(_channel(), lambda _: None, DIGEST, "tx1", sending)
    assert out.agreed  # the second attempt, by AgreeBatch, agreed
    assert agreements.asked == [("tx1", ORG2), ("tx1", AUDITOR)]  # attempt 2 asks everyone
    # a recipient that lasting disagrees ends in a DISAGREE, as without the push
    lasting = Stubbed(agree=OTHER)
    sending = await _sending({"peer0.org2": _answer("tx1", OTHER)})
    out = await lasting.collect(_channel(), lambda _: None, DIGEST, "tx1", sending)
    assert not out.agreed
    verdicts = [A.PrivateAgreementBody.FromString(a.body).verdict for a in out.agreements]
    assert ag.DISAGREE in verdicts


async def test_the_own_run_starts_once_stored_before_the_push_is_answered() -> None:
    agreements = Stubbed()
    sending = agreements.watch = _outgoing("tx1")
    collecting = asyncio.ensure_future(
        agreements.collect(_channel(), lambda _: None, DIGEST, "tx1", sending)
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert agreements.ran_when == []  # not before the payload is stored here
    sending.stored.set_result(None)
    await asyncio.wait_for(agreements.running.wait(), LATE_S)
    assert agreements.ran_when == [(True, False)]  # stored, the push not answered yet
    assert not collecting.done()  # it waits for the push's answers
    sending.answers["peer0.org2"] = _answer("tx1", OWN)
    sending.answers["peer0.regulator"] = _answer("tx1", OWN)
    sending.done.set_result(())
    assert (await asyncio.wait_for(collecting, LATE_S)).agreed


async def test_a_failed_send_fails_the_collection() -> None:
    agreements = Stubbed()
    sending = _outgoing("tx1")
    collecting = asyncio.ensure_future(
        agreements.collect(_channel(), lambda _: None, DIGEST, "tx1", sending)
    )
    await asyncio.sleep(0)
    assert not collecting.done()
    sending.done.set_exception(
        ClientError(errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, "push refused")
    )
    try:
        await asyncio.wait_for(collecting, LATE_S)
        raise AssertionError("the collection of a failed send must fail")
    except ClientError as exc:
        assert exc.reason == errors_pb2.ERROR_REASON_PEER_UNAVAILABLE


class Pushing(PrivateChannel):
    """A PrivateChannel whose pushes are answered by `responses`, one per chunk."""

    def __init__(self, chunks: list[int], responses: list[P.PushResponse]) -> None:
        self.chunks, self.responses = chunks, responses

    async def _push_chunks(self, node_id: str, items: Sequence[Any]) -> Any:
        out, at = [], 0
        for size, response in zip(self.chunks, self.responses, strict=True):
            out.append((items[at : at + size], response))
            at += size
        return out


def _outgoing(tx_id: str) -> Outgoing:
    return Outgoing(private_payload_pb2.EncryptedPayload(), DIGEST, ("peer0.org2",), tx_id)


async def test_the_sender_pairs_each_chunks_answers_with_the_payloads_that_asked() -> None:
    items = [_outgoing("a"), _outgoing(""), _outgoing("b"), _outgoing("c")]
    first = P.PushResponse(stored=2, agreements=[_answer("a", OWN)])
    second = P.PushResponse(stored=2, agreements=[_answer("b", OWN), _answer("c", OWN)])
    channel = Pushing([2, 2], [first, second])
    assert await channel._push("peer0.org2", items) == 4
    tx_ids = {
        i.tx_id: A.PrivateAgreementBody.FromString(i.answers["peer0.org2"].agreement.body).tx_id
        for i in items
        if i.answers
    }
    assert tx_ids == {"a": "a", "b": "b", "c": "c"}
    assert items[1].answers == {}
    # an older release answers none; a faulty one another number: nothing is paired by guess
    items = [_outgoing("a"), _outgoing("b")]
    wrong = P.PushResponse(stored=2, agreements=[_answer("a", OWN)])
    assert await Pushing([2], [wrong])._push("peer0.org2", items) == 2
    assert all(i.answers == {} for i in items)


class FailingSend:
    """A stand-in PrivateChannel whose send fails once its items are queued."""

    view = SimpleNamespace(config=config_pb2.ChannelConfig())

    async def submit(self, items: Sequence[Any]) -> list[Outgoing]:
        return [_outgoing(tx_id) for _, _, tx_id in items]

    @staticmethod
    async def settle(outgoing: Sequence[Outgoing]) -> Any:
        await asyncio.sleep(0)
        raise ClientError(errors_pb2.ERROR_REASON_PEER_UNAVAILABLE, "push refused")


class Collecting:
    """A stand-in Agreements whose collections run until cancelled."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def collect_many(self, *_: Any) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_a_failed_send_stops_the_calls_collections() -> None:
    from dltmw.runtime.roles.privacy.manager import PrivacyManager

    manager = PrivacyManager.__new__(PrivacyManager)
    manager.channels = {"deals": FailingSend()}  # type: ignore[dict-item]
    manager.executors = {"deals": SimpleNamespace(contract_of=None)}  # type: ignore[dict-item]
    manager._agreements = collecting = Collecting()  # type: ignore[assignment]
    try:
        await asyncio.wait_for(manager.send_and_collect("deals", [(b"p", ["Org2"], "tx1")]), LATE_S)
        raise AssertionError("the failed send must fail the call")
    except ClientError as exc:
        assert exc.reason == errors_pb2.ERROR_REASON_PEER_UNAVAILABLE
    assert collecting.cancelled.is_set()  # nothing of the call is left running


class NoGather(Stubbed):
    """Stubbed, recording whether a collection went through `_gather` (futures per recipient)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.gathered = 0

    async def _gather(self, *args: Any) -> Any:
        self.gathered += 1
        return await super()._gather(*args)


async def _collected(agreements: Stubbed, answers: dict[str, A.AgreeResult]) -> Any:
    sending = await _sending(answers)
    return await asyncio.wait_for(
        agreements.collect(_channel(), lambda _: None, DIGEST, "tx1", sending), LATE_S
    )


async def test_every_answer_on_the_push_needs_no_future_per_recipient() -> None:
    """The common case (branch priv12): every other recipient answered on the Push, so the
    collection is the answers in recipient order — whatever order the pushes came back in —
    without `_gather`'s futures, wait and deadline (most of a collection's loop cost)."""
    agreements = NoGather()
    # the auditor's push answered first: the response still lists the recipients' order
    auditor = _answer("tx1", OWN)
    auditor.agreement.signature = b"auditor"
    out = await _collected(
        agreements, {"peer0.regulator": auditor, "peer0.org2": _answer("tx1", OWN)}
    )
    assert agreements.gathered == 0 and agreements.asked == []
    assert out.agreed and list(out.unanswered) == []
    bodies = [A.PrivateAgreementBody.FromString(a.body) for a in out.agreements]
    assert [a.signature for a in out.agreements] == [b"one", b"p", b"auditor"]  # own, Org2, auditor
    assert all(b.tx_id == "tx1" for b in bodies)
    # one recipient answered none: that one is asked, through `_gather`, as before
    partial = NoGather()
    out = await _collected(partial, {"peer0.org2": _answer("tx1", OWN)})
    assert partial.gathered == 1 and partial.asked == [("tx1", AUDITOR)] and out.agreed


async def test_the_collection_from_push_answers_is_the_one_gather_gives() -> None:
    """Same response, field for field, as the general path (`_gather` over resolved futures)
    for every mix of answers: an AGREE on the own hashes, on other hashes, a DISAGREE."""
    variants = {
        "agree": _answer("tx1", OWN),
        "other": _answer("tx1", OTHER),
        "disagree": A.AgreeResult(
            agreement=A.PrivateAgreement(body=_body("tx1", OWN, ag.DISAGREE), signature=b"p")
        ),
    }
    for org2, org2_answer in variants.items():
        for auditor, auditor_answer in variants.items():
            answers = {"peer0.org2": org2_answer, "peer0.regulator": auditor_answer}
            fast = Stubbed()
            got = await fast._collect_once(
                _channel(), lambda _: None, DIGEST, "tx1", await _sending(answers)
            )
            general = Stubbed()
            own = general.ran
            mine = A.PrivateAgreement(
                body=ag.agreement_body(
                    "deals", "tx1", DIGEST, own, KEYS, ag.AGREE, ((), (), ()), ME
                ),
                signature=b"one",
            )
            loop = asyncio.get_running_loop()
            asks: dict[asyncio.Future[A.PrivateAgreement], bytes] = {}
            for key, name in ((ORG2, "peer0.org2"), (AUDITOR, "peer0.regulator")):
                done: asyncio.Future[A.PrivateAgreement] = loop.create_future()
                done.set_result(answers[name].agreement)
                asks[done] = key
            theirs, missing = await general._gather(_channel(), KEYS, ME, own, asks)
            want = A.CollectAgreementsResponse(agreements=[mine, *theirs])
            want.agreed = all(agreement_module._agrees(a, own) for a in want.agreements)
            assert missing == []
            assert got == want, (org2, auditor)
            assert got.agreed == (org2 == auditor == "agree"), (org2, auditor)
