"""What a node, and this process, remember of signatures that verified.

A signature check is a pure function of (public key, data, signature), so a successful one
can be remembered and not repeated: each `Membership` (one per node and channel) keeps a memo
(`VerifiedMemo`) of the digests (`verified_key`) of the checks it made, and so does the whole
process (`IN_PROCESS`). The digest binds the signer's certificate (SHA-256 of its DER, which
fixes its public key), the data's digest and the signature: a hit means the very same check
already succeeded. Only that is remembered — never whether the certificate is a member, is
revoked, is valid at a given time, or what a policy makes of it: a `Membership` identifies the
signer itself (`Membership.identify`) on every call, before it looks in either memo.

Why a memo for the whole process: the nodes `dltmw.open` starts share one process (and the
simulator's), and each verifies what the others just did — both endorsers the client's
proposal, the gateway and then the orderer the transaction envelope, both committing peers the
block's orderer signature and the other peer's endorsement: 9 of a lone bus message's 13 checks
were public-key operations (~0.1-0.2 ms each, on the one event loop of the path) where 3 are
needed (benchmarks/RESULTS.md, branch bus5). Those 3 were of signatures made in the same
process (the embedded client's proposal and envelope, the solo orderer's block), so a signing
identity whose key the process holds puts what it signs into the memo too
(`SigningIdentity.sign`: a key whose public half is the certificate's signs validly by
construction) and a lone message of `dltmw.open` verifies none (branch bus7). A process that
runs one node keeps no such memo (`ProcessMemo`): its node's own is all that is asked.
"""

from __future__ import annotations

import hashlib
import threading

__all__ = [
    "IN_PROCESS",
    "IN_PROCESS_GENERATION",
    "REPLICA_MEMO_GENERATION",
    "VERIFIED_CACHE_SIZE",
    "VERIFIED_GENERATION",
    "ProcessMemo",
    "VerifiedMemo",
    "verified_key",
]

# Successful verifications remembered: many blocks in flight. Each is remembered by one 32-byte
# digest of (signer, data digest, signature) (`verified_key`): the tuple of the three was ~320
# bytes and kept whole signatures, 3.3 KB each for ML-DSA-65. The memo is two generations of
# `VERIFIED_GENERATION` digests (`VerifiedMemo`): it holds the newest 10,240 to 20,480 —
# more than the fullest driver inbox between an orderer's boundary check and its core's
# (`limits.queue_max`, 10,000 by default) and 2.5 times the farthest hit measured under load
# (every hit within 4,096 verifications, benchmarks/RESULTS.md "mem2"). 16,384 per generation
# held up to ~3.8 MB per node; 10,240 holds up to ~2.4 MB.
VERIFIED_GENERATION = 10240
VERIFIED_CACHE_SIZE = 2 * VERIFIED_GENERATION
# The orderers' membership remembers replica signatures only (a PBFT-lite replica's; a peer
# checks a block's orderer signatures with `remember=False`). The boundary-then-core second
# check of a replica message is answered first by `runtime/roles/orderer/just_verified.py` (a
# bytes comparison, the newest 1,024 boundary checks); what is left for the memo is that check
# when more than 1,024 messages wait in the driver's inbox, an origin's check of the acks in its
# own availability certificate (verified when they arrived, a few hundred verifications
# earlier) and the votes re-checked in view-change certificates: 4,096 to 8,192 digests (~1 MB)
# instead of 16,384 to 32,768 (~3.8 MB in every orderer once full, ~90,000 transactions into
# a run). A miss costs one verification, never a wrong answer.
REPLICA_MEMO_GENERATION = 4096


class VerifiedMemo:
    """The digests of successful verifications (`verified_key`), in two generations: new ones
    go into the newer set; when it holds `generation` digests it becomes the older one and the
    older one is dropped whole. So the newest `generation` to 2 x `generation` are kept.

    Why not one insertion-ordered dict that drops its oldest entry: under a steady stream of
    signatures it never shrinks, and the slots of the dropped entries stay in its table until
    it resizes (to three times the live entries): at 32,768 entries the table was 2.6 MB, 5.3
    MB while it was copied — with the digests 4.7 MB held and 7.4 MB at the peak, in a peer
    and in the orderer a client reaches (benchmarks/RESULTS.md, "mem2"). Two sets of 16,384 hold
    at most the same 32,768 digests in 3.2 MB, and a dropped generation returns its table to
    the system at once. The hits measured under load come within 4,096 verifications after the
    signature was first checked (the gateway's endorsements at commit; an orderer's own client
    envelopes at its ordering rule within 256), well inside one generation; a generation is
    not made smaller than `VERIFIED_GENERATION` (10,240) because an orderer's core checks again
    what its boundary checked after the message waited in the driver's inbox, which holds up
    to 10,000 (`queue_max`) under overload — when a miss, a second verification, costs most.
    The orderers' membership (replica signatures) is the exception, `REPLICA_MEMO_GENERATION`:
    that second check has its own answer (`runtime/roles/orderer/just_verified.py`).

    Not locked: the caller (`Membership`) serialises `add`; a lookup racing a rotation can only
    miss, and a miss costs one verification, never a wrong answer."""

    def __init__(self, generation: int = VERIFIED_GENERATION) -> None:
        self._generation = max(1, generation)
        self._new: set[bytes] = set()
        self._old: set[bytes] = set()

    def __contains__(self, key: bytes) -> bool:
        return key in self._new or key in self._old

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def add(self, key: bytes) -> None:
        """Remember `key` (a rotation first when the newer generation is full)."""
        if len(self._new) >= self._generation:
            self._old, self._new = self._new, set()
        self._new.add(key)


def verified_key(identity_id: bytes, data: bytes, signature: bytes) -> bytes:
    """What the verified-signature cache remembers of one successful verification: SHA-256 over
    the signer's id, the digest of the data and the signature (collision resistant, so a hit
    means the same signer, data and signature as a verification that succeeded)."""
    digest = hashlib.sha256(identity_id)
    digest.update(hashlib.sha256(data).digest())
    digest.update(signature)
    return digest.digest()


# The nodes of one process check the same signature within a few milliseconds of each other
# (one message's path) or, under batched load, within the transactions in flight between an
# endorsement and its commit — a few thousand verifications: 4,096 to 8,192 digests (~0.9 MB,
# only while two nodes or more run in the process). A miss costs one verification, never a
# wrong answer.
IN_PROCESS_GENERATION = 4096


class ProcessMemo:
    """A `VerifiedMemo` for every `Membership` of the process, kept only while the process runs
    two nodes or more (`node_started` / `node_stopped`, called by `runtime/node.Node`): a
    process of one node has its node's own memo, and would hold up to ~0.9 MB nobody asks
    (a peer's block signatures and a solo orderer's envelopes, which their own memos leave out
    on purpose: docs/operations.md). Every node's thread adds to it: `add` takes a lock (a
    `Membership` serialises only its own memo's); a lookup is not locked, and racing a
    rotation or the memo being dropped it can only miss."""

    def __init__(self, generation: int = IN_PROCESS_GENERATION) -> None:
        self._generation = generation
        self._memo: VerifiedMemo | None = None  # None: fewer than two nodes in the process
        self._nodes = 0
        self._lock = threading.Lock()

    def __contains__(self, key: bytes) -> bool:
        memo = self._memo
        return memo is not None and key in memo

    def __len__(self) -> int:
        memo = self._memo
        return 0 if memo is None else len(memo)

    @property
    def shared(self) -> bool:
        """True while two nodes or more run in the process (and so share this memo)."""
        return self._memo is not None

    def add(self, key: bytes) -> None:
        """Remember `key`, the digest of a check that succeeded (`verified_key`)."""
        memo = self._memo
        if memo is not None:
            with self._lock:
                memo.add(key)

    def node_started(self) -> None:
        """A node of this process starts (before it checks its first signature)."""
        with self._lock:
            self._nodes += 1
            if self._nodes > 1 and self._memo is None:
                self._memo = VerifiedMemo(self._generation)

    def node_stopped(self) -> None:
        """A node that `node_started` stopped; below two, the memo is dropped whole."""
        with self._lock:
            self._nodes -= 1
            if self._nodes < 2:
                self._memo = None


IN_PROCESS = ProcessMemo()
"""The successful signature checks of the nodes of this process (see the module docstring)."""
