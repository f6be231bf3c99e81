"""The private leg of a cross-channel transfer: its terms and the fixed formats of what it
writes and discloses (docs/cross-channel.md "A private leg").

A transfer's terms name, for a private leg, no accounts or amount: only a *commitment* to them,
so that the other channel (which sees the terms in every `xfer` call) learns nothing of them:

    "legs": {"cash": {"private": HEX(SHA-256(details)), "recipients": [ORG, ...],
                      "trust": HEX(block 0 hash of the OTHER channel)}, ...}

where `details` is canonical JSON `{"amount": N, "from": A, "salt": S, "to": B}` known to the
leg's parties only (the salt makes the commitment unguessable). `recipients` are the
organisations whose peers must hold the leg's private state (the verifier checks they all
agreed), `trust` the block 0 of the other channel the private side verifies proofs against
(private execution has no channel config; the other channel's `xfer` checks it names its real
block 0 before anything is locked or paid there).

The private `xfer` functions keep two records in the recipients' private state:
`h/<id>` (the hold: `held` -> `spent`) and `t/<id>` (as on a public channel, without tx ids:
`locked`/`aborted` -> `claimed`/`refunded`). `plock` touches exactly `h/<id>` and `t/<id>`,
`pabort` exactly `t/<id>`: the disclosed outcome of either (the preimage of the delta hash the
recipients agreed to, `core/privacy/execution.state_hash`) therefore shows the transfer's id and
state and nothing else — no balance, account or amount. Pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, cast

from dltmw.core.errors import ClientError
from dltmw.v1 import errors_pb2, privacy_manager_service_pb2, proposal_pb2

R = errors_pb2
MALFORMED = R.ERROR_REASON_PRIVATE_LEG_MALFORMED
COMMITMENT = R.ERROR_REASON_PRIVATE_LEG_COMMITMENT_MISMATCH
NAMESPACE = "xfer"
EXECUTED = privacy_manager_service_pb2.PRIVATE_TX_STATUS_EXECUTED
HELD, SPENT = "held", "spent"
LOCKED, ABORTED = "locked", "aborted"
AMOUNT_MAX = 10**15
_ID = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"([ht])/([0-9a-f]{64})")


class PrivateLegError(ClientError):
    """A private leg's terms, details or disclosure refused; `reason` says which check."""


def canonical(value: object) -> bytes:
    """Canonical JSON: sorted keys, no spaces (as the terms)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _json(raw: bytes, what: str) -> object:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise PrivateLegError(MALFORMED, f"{what} is not JSON: {exc}") from exc
    if canonical(value) != raw:
        raise PrivateLegError(MALFORMED, f"{what} is not canonical JSON")
    return value


@dataclass(frozen=True)
class PrivateLegTerms:
    """What the terms say of a private leg."""

    commitment: str  # hex SHA-256 of the details
    recipients: tuple[str, ...]  # organisations
    trust: str  # hex block 0 hash of the other channel


def leg_terms(leg: object) -> PrivateLegTerms | None:
    """The private leg's terms, None if `leg` is not marked private; PRIVATE_LEG_MALFORMED if it
    is but does not have the fixed form."""
    if not isinstance(leg, dict) or "private" not in leg:
        return None
    commitment, recipients, trust = leg.get("private"), leg.get("recipients"), leg.get("trust")
    ok = (
        set(leg) == {"private", "recipients", "trust"}
        and isinstance(commitment, str)
        and _ID.fullmatch(commitment) is not None
        and isinstance(trust, str)
        and _ID.fullmatch(trust) is not None
        and isinstance(recipients, list)
        and 0 < len(recipients) <= 16
        and all(isinstance(r, str) and r for r in recipients)
        and len(set(recipients)) == len(recipients)
    )
    if not ok:
        raise PrivateLegError(
            MALFORMED, "a private leg is {private: hex, recipients: [org, ...], trust: hex}"
        )
    return PrivateLegTerms(str(commitment), tuple(recipients), str(trust))  # type: ignore[arg-type]


@dataclass(frozen=True)
class LegDetails:
    """The private leg's accounts and amount (known to its parties only)."""

    source: str
    target: str
    amount: int


def details_bytes(source: str, target: str, amount: int, salt: str) -> bytes:
    """The canonical details a private leg's commitment is the SHA-256 of."""
    return canonical({"amount": amount, "from": source, "salt": salt, "to": target})


def commitment_of(details: bytes) -> str:
    """The hex commitment the terms carry for `details`."""
    return hashlib.sha256(details).hexdigest()


def open_details(details: bytes, leg: PrivateLegTerms) -> LegDetails:
    """The details, if they hash to the leg's commitment and have the fixed form."""
    if commitment_of(details) != leg.commitment:
        raise PrivateLegError(COMMITMENT, "the leg's details do not match the terms' commitment")
    value = _json(details, "the leg's details")
    fields = value if isinstance(value, dict) else {}
    source, target, amount = fields.get("from"), fields.get("to"), fields.get("amount")
    ok = set(fields) == {"amount", "from", "salt", "to"} and isinstance(fields.get("salt"), str)
    ok = ok and isinstance(source, str) and isinstance(target, str) and bool(source and target)
    if not ok or not isinstance(amount, int) or not 0 < amount <= AMOUNT_MAX:
        raise PrivateLegError(MALFORMED, "details are {amount: 1.., from, salt, to}")
    return LegDetails(str(source), str(target), amount)


def record_value(channel_id: str, transfer_id: str, state: str) -> bytes:
    """`t/<id>` in the private state (the public record's form, without tx ids)."""
    return json.dumps(
        {"channel": channel_id, "id": transfer_id, "state": state}, sort_keys=True
    ).encode()


def hold_value(transfer_id: str, state: str) -> bytes:
    """`h/<id>`: the leg's amount is held (`held`) or paid out (`spent`)."""
    return json.dumps({"id": transfer_id, "state": state}, sort_keys=True).encode()


@dataclass(frozen=True)
class Disclosure:
    """An outcome of a private transaction, as shown to a verifier."""

    namespace: str
    status: int
    response: proposal_pb2.ContractResponse
    values: dict[str, bytes | None]


def disclosure_bytes(d: Disclosure) -> bytes:
    """The canonical JSON form of `d` (`PrivateLegProof.disclosure`)."""
    status = privacy_manager_service_pb2.PrivateTxStatus.Name(d.status)  # type: ignore[arg-type]
    return canonical(
        {
            "namespace": d.namespace,
            "response": {
                "message": d.response.message,
                "payload": d.response.payload.hex(),
                "status": d.response.status,
            },
            "status": status.removeprefix("PRIVATE_TX_STATUS_"),
            "values": {k: None if v is None else v.hex() for k, v in d.values.items()},
        }
    )


def parse_disclosure(raw: bytes) -> Disclosure:
    """The disclosure in `raw`; PRIVATE_LEG_MALFORMED unless it has exactly the fixed form."""
    value = _json(raw, "the disclosure")
    fields = value if isinstance(value, dict) else {}
    resp, values = fields.get("response"), fields.get("values")
    shaped = (
        set(fields) == {"namespace", "response", "status", "values"}
        and isinstance(fields["namespace"], str)
        and isinstance(fields["status"], str)
        and isinstance(resp, dict)
        and set(resp) == {"message", "payload", "status"}
        and isinstance(resp["message"], str)
        and isinstance(resp["payload"], str)
        and isinstance(resp["status"], int)
        and isinstance(values, dict)
        and all(v is None or isinstance(v, str) for v in values.values())
    )
    try:
        if not shaped:
            raise ValueError("fields or types differ")
        resp, values = cast(dict[str, Any], resp), cast(dict[str, Any], values)  # `shaped`
        status = privacy_manager_service_pb2.PrivateTxStatus.Value(
            "PRIVATE_TX_STATUS_" + str(fields["status"])
        )
        response = proposal_pb2.ContractResponse(
            status=resp["status"], payload=bytes.fromhex(resp["payload"]), message=resp["message"]
        )
        decoded = {str(k): None if v is None else bytes.fromhex(v) for k, v in values.items()}
    except ValueError as exc:
        raise PrivateLegError(MALFORMED, f"the disclosure has not the fixed form: {exc}") from exc
    return Disclosure(str(fields["namespace"]), status, response, decoded)


def lock_disclosure(channel_id: str, transfer_id: str) -> Disclosure:
    """What `plock` of `transfer_id` on `channel_id` disclosed (the client rebuilds it from the
    terms alone: every value is fixed by them)."""
    return _disclosure(
        transfer_id,
        {
            "h/" + transfer_id: hold_value(transfer_id, HELD),
            "t/" + transfer_id: record_value(channel_id, transfer_id, LOCKED),
        },
    )


def abort_disclosure(channel_id: str, transfer_id: str) -> Disclosure:
    """What `pabort` of `transfer_id` on `channel_id` disclosed."""
    return _disclosure(
        transfer_id, {"t/" + transfer_id: record_value(channel_id, transfer_id, ABORTED)}
    )


def _disclosure(transfer_id: str, values: dict[str, bytes | None]) -> Disclosure:
    response = proposal_pb2.ContractResponse(status=200, payload=transfer_id.encode())
    return Disclosure(NAMESPACE, EXECUTED, response, values)


def disclosed_record(d: Disclosure) -> tuple[str, bytes]:
    """(transfer id, `t/<id>` value) of an outcome in the fixed form: an EXECUTED `xfer`
    transaction touching `t/<id>` and at most `h/<id>` of one id; PRIVATE_LEG_MALFORMED else."""
    if d.namespace != NAMESPACE or d.status != EXECUTED or d.response.status != 200:
        raise PrivateLegError(MALFORMED, "the disclosed outcome is not an EXECUTED xfer call")
    matches = [_KEY.fullmatch(k) for k in d.values]
    ids = {m.group(2) for m in matches if m is not None}
    if None in matches or len(ids) != 1 or len(d.values) > 2:
        raise PrivateLegError(MALFORMED, "a disclosure touches t/<id> and at most h/<id>")
    transfer_id = ids.pop()
    record = d.values.get("t/" + transfer_id)
    if record is None:
        raise PrivateLegError(MALFORMED, f"the disclosed outcome writes no t/{transfer_id}")
    return transfer_id, record
