"""`python -m dltmw.contracts [--write]`: print (or write) the generated modules of the built-in
contracts' package ids, `core/builtin_packages.py` and `core/utxo/packages.py` — run it after
changing a built-in contract's source (a unit test fails until then)."""

from __future__ import annotations

import sys
from pathlib import Path

from dltmw.contracts import generated_module
from dltmw.contracts.utxo import generated_utxo_module

CORE = Path(__file__).resolve().parents[1] / "core"
GENERATED = {
    CORE / "builtin_packages.py": generated_module,
    CORE / "utxo" / "packages.py": generated_utxo_module,
}

if __name__ == "__main__":
    for path, text in GENERATED.items():
        if sys.argv[1:] == ["--write"]:
            path.write_text(text(), encoding="utf-8")
        else:
            sys.stdout.write(f"# {path}\n{text()}")
