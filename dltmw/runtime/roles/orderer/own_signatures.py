"""A PBFT-lite replica's signer that remembers its own small signatures as verified.

A replica's own votes come back to it inside other replicas' messages: the collector's prepared
and committed certificates carry 2f+1 votes, usually one of them ours, and a primary's
availability certificate carries f+1 acks, often one of ours. Each was verified with a P-256
operation like any other replica's: counted at n = 4, 1.2 (primary) to 1.9 (backup) of a
replica's ~14 public-key verifications per slot were of its own signatures (benchmarks/
RESULTS.md, branch pbft11). A node that made a signature with the key of its own certificate
need not check it (`Membership.remember_own_signature`, which endorsements already use): the
memo's key binds the certificate, the data's digest and the signature, so a hit is this very
signature over these very bytes, and the signer is still identified on every check.

Only data up to `REMEMBERED_BYTES_MAX` is remembered: votes, acks, checkpoints and block
hashes. A batch (~100-200 KB) is never verified at its origin (`Disseminator.on_batch` keeps
its own), and remembering it would cost a SHA-256 pass over it per slot for nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from dltmw.core.identity import Membership, SigningIdentity

# Larger than any vote, ack, checkpoint or view-change message at n = 13 (a few hundred bytes
# to a few KB); far below a batch.
REMEMBERED_BYTES_MAX = 16 * 1024


def remembering_signer(
    signer: SigningIdentity, membership: Callable[[], Membership]
) -> Callable[[bytes], bytes]:
    """`signer.sign`, which also tells the replica set's membership in force (`membership()`,
    read at each signature: a config update replaces it) that small signatures it made are
    checked (see the module docstring)."""

    def sign(data: bytes) -> bytes:
        signature = signer.sign(data)
        if len(data) <= REMEMBERED_BYTES_MAX:
            membership().remember_own_signature(signer, data, signature)
        return signature

    return sign
