"""Flows a vault node initiates: issue, move, delivery versus payment, and one command of any
UTXO contract (`contract_flow.py`, for contracts installed as packages).

Every flow ends in `complete`, Corda's collect-signatures + finality:
  1. build the transaction, check it against the local vault (contracts, backchain), sign it;
  2. for every other required signer: share the backchain with its node and ask it to sign
     (ProposeTransaction) — it verifies everything itself first;
  3. ask the notary (sending the whole transaction and its dependencies if the notary is
     validating, only the visible components otherwise);
  4. record it locally, then send it to the other participants and to named observers only
     (RecordTransaction); nobody else ever receives it.
If any step before notarisation fails, nothing has moved anywhere. Step 4 records the final
transaction together with one outbox row per recipient (one sqlite transaction); a recipient
that does not acknowledge keeps its row and `runtime/roles/vault/outbox.py` retries it in the
background, also after a restart. The flow then reports PEER_UNAVAILABLE naming the nodes still
pending: the transaction is final (the notary consumed the inputs) and will reach them.
"""

from __future__ import annotations

import asyncio

import grpc

from dltmw.aio.clock import utc_now
from dltmw.aio.entropy import fraction, token_bytes
from dltmw.aio.rpc_errors import from_rpc_error, reconnects
from dltmw.core.errors import ClientError, DltmwError, TransientError
from dltmw.core.notary_batch import proof_of_pb, proof_to_pb
from dltmw.core.utxo.build import (
    add_signature,
    build_transaction,
    notarisation_payload,
    sign_request,
)
from dltmw.core.utxo.contracts import StateAndRef
from dltmw.core.utxo.model import Ref, Window, WireTx, read_transaction, window_of
from dltmw.core.utxo.plans import Holding, dvp_plan, holding, issue_plan, move_plan, select
from dltmw.core.utxo.verify import SignedTx, check_notary_signature, read_signed, signed_by
from dltmw.ledger.vault_store import Delivery
from dltmw.rpc.cluster_verdict import Cluster, ClusterUnavailable, gather_verdict
from dltmw.runtime.roles.vault.backchain import lookup_in, verify_full
from dltmw.runtime.roles.vault.contract_flow import run_contract
from dltmw.runtime.roles.vault.vault import VaultRole
from dltmw.v1 import (
    errors_pb2,
    notarisation_pb2,
    notary_service_pb2,
    notary_service_pb2_grpc,
    utxo_pb2,
    vault_service_pb2,
)
from dltmw.v1 import flow_service_pb2 as F
from dltmw.v1.vault_service_pb2 import IssueFlow

R = errors_pb2
NONCE_BYTES = 32
MEMBER_RESOLVE_S = 2.0  # how long a flow waits for a cluster member's address


class FlowRunner:
    """Runs the flows a client of the node asks for (VaultService.RunFlow)."""

    def __init__(self, role: VaultRole) -> None:
        self._role = role

    async def run(self, command: vault_service_pb2.FlowCommand) -> SignedTx:
        """Run the flow `command` names to completion; the final transaction."""
        role = self._role
        window = window_of(command.time_window if command.HasField("time_window") else None)
        observers = list(command.observers)
        role.check_observers(observers)
        memo, notary = command.memo, command.notary
        kind = command.WhichOneof("flow")
        if kind == "issue":
            return await run_issue(role, command.issue, observers, window, memo, notary)
        if kind == "move":
            m = command.move
            return await run_move(
                role, m.contract, m.new_owner, m.asset, m.amount, observers, window, memo, notary
            )
        if kind == "dvp":
            return await run_dvp(role, command.dvp.terms, observers, window, memo, notary)
        if kind == "contract":
            if memo:
                raise ClientError(R.ERROR_REASON_INVALID_FIELD, "a contract flow has no memo")
            notary_id = notary_of(role, notary)
            return await run_contract(
                role, command.contract, observers, window, notary_id, complete
            )
        raise ClientError(R.ERROR_REASON_MISSING_FIELD, "command names no flow")


def notary_of(role: VaultRole, choice: str = "") -> str:
    """The notary flows use: `choice` (a single notary or a notary cluster of the network map),
    else the first single notary of the map."""
    if choice:
        if not role.netmap.is_notary(choice):
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, f"{choice!r} is not a notary")
        return choice
    if not role.netmap.validating:
        raise ClientError(R.ERROR_REASON_ROLE_NOT_HOSTED, "the network has no notary")
    return sorted(role.netmap.validating)[0]


async def run_issue(
    role: VaultRole,
    flow: IssueFlow,
    observers: list[str],
    window: Window,
    memo: bytes,
    notary: str = "",
) -> SignedTx:
    """Issue cash or securities; this node is the issuer."""
    role.node_of(flow.owner)
    spec = issue_plan(
        notary_of(role, notary),
        token_bytes(NONCE_BYTES),
        flow.contract,
        role.me,
        flow.owner,
        flow.asset,
        flow.amount,
        memo,
        window,
    )
    return await complete(role, build_transaction(spec), observers)


async def run_move(
    role: VaultRole,
    contract: str,
    new_owner: bytes,
    asset: str,
    amount: int,
    observers: list[str],
    window: Window,
    memo: bytes,
    notary: str = "",
) -> SignedTx:
    """Move own states to `new_owner` (change back to this node)."""
    role.node_of(new_owner)
    async with role.select_lock:
        chosen = select(await role.holdings(contract), asset, amount)
        role.reserve(h.ref for h in chosen)
    try:
        spec = move_plan(
            notary_of(role, notary),
            token_bytes(NONCE_BYTES),
            contract,
            chosen,
            new_owner,
            amount,
            memo,
            window,
        )
        return await complete(role, build_transaction(spec), observers)
    finally:
        role.unreserve(h.ref for h in chosen)


async def run_dvp(
    role: VaultRole,
    terms: utxo_pb2.DvpTerms,
    observers: list[str],
    window: Window,
    memo: bytes,
    notary: str = "",
) -> SignedTx:
    """Deliver securities against the buyer's cash in ONE transaction (this node sells)."""
    if terms.seller != role.me:
        raise ClientError(R.ERROR_REASON_INVALID_FIELD, "the initiating node must be the seller")
    buyer_node = role.node_of(terms.buyer)
    async with role.select_lock:
        securities = select(await role.holdings("security"), terms.isin, terms.quantity)
        role.reserve(h.ref for h in securities)
    try:
        cash = await _offered_cash(role, buyer_node, terms)
        spec = dvp_plan(
            notary_of(role, notary),
            token_bytes(NONCE_BYTES),
            terms,
            securities,
            cash,
            memo,
            window,
        )
        return await complete(role, build_transaction(spec), observers)
    finally:
        role.unreserve(h.ref for h in securities)


async def _offered_cash(
    role: VaultRole, buyer_node: str, terms: utxo_pb2.DvpTerms
) -> list[Holding]:
    """Ask the buyer for its cash inputs and resolve (and verify) their backchain."""
    raw, sig = role.signed_message(terms=terms)
    reply = await role.call(
        buyer_node, "OfferInputs", F.OfferInputsRequest(message=raw, signature=sig)
    )
    if not isinstance(reply, F.OfferInputsResponse):
        raise TypeError("unexpected reply")
    refs = [Ref(r.tx_id, r.index) for r in reply.inputs]
    known = await role.backchain.resolve_ids(
        {r.tx_id for r in refs}, role.fetcher(buyer_node), utc_now()
    )
    lookup = lookup_in(known)
    out: list[Holding] = []
    for ref in refs:
        output = lookup(ref)
        h = None if output is None else holding(StateAndRef(ref, output))
        if h is None or h.owner != terms.buyer or h.asset != terms.currency:
            raise ClientError(R.ERROR_REASON_INVALID_FIELD, "the buyer offered unusable states")
        out.append(h)
    return out


async def complete(role: VaultRole, transaction: bytes, observers: list[str]) -> SignedTx:
    """Verify, sign, collect signatures, notarise, record and distribute (module docstring)."""
    role.check_observers(observers)
    wire = read_transaction(transaction)
    now = utc_now()
    known = await role.backchain.resolve(wire, _local_only, now)
    required = wire.required_signers()
    verify_full(
        _signed(transaction, []), known, role.membership, now, required, role.netmap.contract_code
    )
    stx = utxo_pb2.SignedUtxoTransaction(transaction=transaction)
    if role.me in required:
        add_signature(stx, wire.tx_id, role.me, role.ctx.signer.sign)
    for party in sorted(required - {role.me}):
        node = role.node_of(party)
        await role.share(party, {r.tx_id for r in (*wire.inputs, *wire.references)})
        raw, sig = role.signed_message(signed_transaction=stx.SerializeToString())
        reply = await role.call(
            node, "ProposeTransaction", F.ProposeTransactionRequest(message=raw, signature=sig)
        )
        if not isinstance(reply, F.ProposeTransactionResponse):
            raise TypeError("unexpected reply")
        signed_by(wire.tx_id, [(party, reply.signature.signature)], role.membership, now)
        stx.signatures.add(signer=party, signature=reply.signature.signature)
    code = role.netmap.contract_code
    verify_full(read_signed(stx.SerializeToString()), known, role.membership, now, code=code)
    await _notarise(
        role,
        stx,
        [known[t].raw for t in sorted({r.tx_id for r in (*wire.inputs, *wire.references)})],
    )
    final = read_signed(stx.SerializeToString())
    await _finalise(role, final, known, observers)
    return final


async def _local_only(tx_id: str) -> bytes:
    raise ClientError(
        R.ERROR_REASON_NOT_FOUND, f"input transaction {tx_id[:12]} is not in the vault"
    )


def _signed(transaction: bytes, sigs: list[tuple[bytes, bytes]]) -> SignedTx:
    stx = utxo_pb2.SignedUtxoTransaction(transaction=transaction)
    for signer, sig in sigs:
        stx.signatures.add(signer=signer, signature=sig)
    return read_signed(stx.SerializeToString())


async def _notarise(
    role: VaultRole, stx: utxo_pb2.SignedUtxoTransaction, dependencies: list[bytes]
) -> None:
    """Obtain the notary's signature (or f+1 cluster members' signatures) and attach it."""
    wire = read_transaction(stx.transaction)
    if wire.notary in role.netmap.clusters:
        await _notarise_cluster(role, stx, wire)
        return
    validating = role.netmap.validating[wire.notary]
    payload = notarisation_payload(
        wire,
        role.me,
        stx.SerializeToString() if validating else b"",
        dependencies if validating else (),
    )
    stub = notary_service_pb2_grpc.NotaryServiceStub(await role.ctx.channel_to(wire.notary))
    try:
        reply = await stub.Notarise(
            notary_service_pb2.NotariseRequest(request=sign_request(payload, role.ctx.signer)),
            timeout=30,
        )
    except grpc.aio.AioRpcError as err:
        if reconnects(err):
            await role.ctx.forget(wire.notary)
        raise from_rpc_error(err, wire.notary) from None
    signature = reply.response.notary_signature
    if signature.signer != role.netmap.identity_of(wire.notary):
        raise ClientError(R.ERROR_REASON_BAD_SIGNATURE, "the notary answered with another identity")
    batched = reply.response.HasField("batch_proof")
    proof = proof_of_pb(reply.response.batch_proof) if batched else None
    check_notary_signature(
        wire.tx_id, signature.signer, signature.signature, proof, role.membership, utc_now()
    )
    stx.notary_signature.CopyFrom(signature)
    if batched:
        stx.notary_batch_proof.CopyFrom(reply.response.batch_proof)


async def _notarise_cluster(
    role: VaultRole, stx: utxo_pb2.SignedUtxoTransaction, wire: WireTx
) -> None:
    """Gather f+1 matching member signatures over the node's own cached channels (cluster
    replicas are non-validating: only the visible components are sent). The channels are the
    node's shared ones: they are never closed here, only forgotten when a member is down."""
    cluster = Cluster.of(role.netmap, wire.notary)
    payload = notarisation_payload(wire, role.me, b"", ())
    request = sign_request(payload, role.ctx.signer)

    async def call(
        member: str, req: notarisation_pb2.NotarisationRequest, attest: bool
    ) -> notarisation_pb2.NotarisationResponse:
        try:  # a stopped member has no address: do not wait out the full resolve timeout
            async with asyncio.timeout(MEMBER_RESOLVE_S):
                channel = await role.ctx.channel_to(member)
        except (TransientError, TimeoutError) as err:  # ask another member instead
            raise ConnectionError(f"notary cluster member {member}: no address ({err})") from None
        stub = notary_service_pb2_grpc.NotaryServiceStub(channel)
        try:
            asked = notary_service_pb2.NotariseRequest(request=req, ordered_elsewhere=attest)
            reply = await stub.Notarise(asked, timeout=30)
        except grpc.aio.AioRpcError as err:
            if reconnects(err):
                await role.ctx.forget(member)
            raise
        return reply.response

    start = int(fraction() * len(cluster.members)) % len(cluster.members)
    try:
        outcome = await gather_verdict(cluster, call, request, start)
    except ClusterUnavailable as exc:
        raise TransientError(R.ERROR_REASON_PEER_UNAVAILABLE, str(exc)) from None
    if not outcome.signed:
        name = R.ErrorReason.Name(R.ErrorReason.ValueType(outcome.reason))
        raise ClientError(outcome.reason, f"notary cluster {wire.notary} refused: {name}")
    for replica, signature in sorted(outcome.signatures.items()):
        stx.notary_signatures.add(signer=cluster.identities[replica], signature=signature)
        proof = outcome.proofs.get(replica)
        if proof is not None:
            proof_to_pb(proof, stx.notary_batch_proofs.add())


async def _finalise(
    role: VaultRole, stx: SignedTx, known: dict[str, SignedTx], observers: list[str]
) -> None:
    """Record locally, then deliver to the other participants and the observers only."""
    wire = stx.wire
    lookup = lookup_in(known)
    parties = {p for o in wire.outputs for p in o.participants}
    for ref in wire.inputs:
        output = lookup(ref)
        parties |= set(output.participants) if output is not None else set()
    mine = [i for i, o in enumerate(wire.outputs) if role.me in o.participants]
    targets = [(role.node_of(p), False) for p in sorted(parties - {role.me})]
    targets += [(node, True) for node in observers]  # checked by check_observers already
    await role.record(stx, mine, targets)  # with the outbox rows: delivery is now a duty
    failed: list[str] = []
    refused: DltmwError | None = None
    for node, observer in targets:
        try:
            await role.outbox.deliver(Delivery(wire.tx_id, node, observer, stx.raw))
        except DltmwError as err:
            failed.append(node)
            refused = refused if isinstance(err, TransientError) else err
    if failed:
        role.outbox.wake()
        if refused is not None:
            raise refused  # a recipient refused: say why (the row stays, it is retried)
        raise TransientError(
            R.ERROR_REASON_PEER_UNAVAILABLE,
            f"{wire.tx_id} is final and recorded; {failed} did not record it yet, "
            "delivery is retried in the background",
        )
