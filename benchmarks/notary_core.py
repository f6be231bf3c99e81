"""`python -m benchmarks.notary_core`: CPU of a notary's ordered decision per notarisation —
the `SingleNotary` core alone (spent-set checks, signing), with a real ECDSA P-256 key, in
batches like the role's (not a test). Isolates what batch signing changed from the costs around
it (request-signature checks, gRPC, sqlite), which a shared machine's load hides in the
end-to-end figure. Process CPU time, so other processes' load does not count.
"""

from __future__ import annotations

import argparse
import statistics
import time

from dltmw.core.handlers.notary import Ask, Decide, SingleNotary
from dltmw.core.identity import SigningIdentity
from dltmw.core.notary import NotarisationAsk
from dltmw.core.utxo.model import Ref, Window
from dltmw.pki.ca import issue_cert, make_ca


class _Empty:
    """A spent-set with nothing spent yet."""

    def consumer_of(self, ref: Ref) -> str | None:
        return None

    def signature_of(self, tx_id: str) -> bytes | None:
        return None


def _batch(k: int, size: int) -> tuple[Ask, ...]:
    """`size` asks, each spending two fresh states."""
    out = []
    for i in range(size):
        tx_id = f"{k:032x}{i:032x}"
        refs = (Ref(tx_id, 0), Ref(tx_id, 1))
        out.append(Ask(NotarisationAsk(tx_id, refs, (), Window(), b""), 0, i))
    return tuple(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notary_core")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ca = make_ca("NotaryOrg")
    issued = issue_cert(ca, "NotaryOrg", "notary0", "peer")
    key = SigningIdentity.from_pem("NotaryOrg", issued.cert_pem, issued.key_pem)
    figures = []
    for _ in range(args.runs):
        batches = [_batch(k, args.batch) for k in range(args.batches)]
        core = SingleNotary(key.sign)
        t0 = time.process_time()
        for batch in batches:
            core.step(Decide(batch, _Empty()))
            core.ready()
        figures.append((time.process_time() - t0) / (args.batches * args.batch) * 1e6)
    print(f"command: python -m benchmarks.notary_core --batch {args.batch}")
    print(
        f"decision core: median {statistics.median(figures):.1f} us CPU per notarisation "
        f"(runs {', '.join(f'{f:.1f}' for f in figures)}; {args.batches} x {args.batch})"
    )


if __name__ == "__main__":
    main()
