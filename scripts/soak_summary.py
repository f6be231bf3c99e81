"""Summarise a soak report (JSON lines written by `tests/tiers.record`) as Markdown.

Usage: python scripts/soak_summary.py soak-report.jsonl
Each line has a `kind`; lines of one kind are shown as one table whose columns are the union of
their fields. Exits non-zero when any line says `lost` or `duplicated` > 0 or `ok` is false.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

HIDDEN = {"kind", "at"}


def main(path: str) -> int:
    """Print the summary; return the exit status."""
    rows: dict[str, list[dict[str, object]]] = defaultdict(list)
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        if raw.strip():
            line = json.loads(raw)
            rows[str(line["kind"])].append(line)
    bad = 0
    for kind, lines in sorted(rows.items()):
        cols = sorted({k for line in lines for k in line} - HIDDEN)
        print(f"\n### {kind}\n")
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for line in lines:
            print("| " + " | ".join(_cell(line.get(c, "")) for c in cols) + " |")
            lost = int(str(line.get("lost", 0)) or 0) + int(str(line.get("duplicated", 0)) or 0)
            if lost or line.get("ok") is False:
                bad += 1
    print(f"\n{sum(map(len, rows.values()))} results, {bad} bad")
    return 1 if bad else 0


def _cell(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in sorted(value.items()))
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
