"""Generate (or check) the Python stubs of the wire contract.

`python scripts/gen_protos.py OUT_DIR` regenerates `*_pb2.py`, `*_pb2_grpc.py` and their `.pyi`
stubs (mypy-protobuf) from `protos/dltmw/v1/*.proto` into OUT_DIR. With `--check`, it generates
into a temporary directory and fails if the committed files differ, so CI catches stubs that were
not regenerated after a proto change.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_root: Path) -> Path:
    """Run protoc with the python, grpc and mypy plugins; returns the dltmw/v1 output dir."""
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "dltmw/v1").glob("*.proto")
    )
    include = str(Path(protoc.__file__).parent / "_proto")
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    out = out_root / "dltmw" / "v1"
    (out / "__init__.py").write_text('"""Generated stubs of the dltmw.v1 wire contract."""\n')
    (out / "py.typed").write_text("")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", action="store_true")
    ns = parser.parse_args()
    target: Path = ns.out
    if not ns.check:
        with tempfile.TemporaryDirectory() as tmp:
            produced = generate(Path(tmp))
            target.mkdir(parents=True, exist_ok=True)
            for old in target.glob("*_pb2*"):
                old.unlink()
            for f in produced.iterdir():
                shutil.copy2(f, target / f.name)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        want = sorted(p.name for p in produced.iterdir())
        have = sorted(p.name for p in target.iterdir() if p.is_file())
        if want != have:
            print(f"stub files differ: expected {want}, found {have}; run `make protos`")
            return 1
        _, mismatch, errors = filecmp.cmpfiles(produced, target, want, shallow=False)
        if mismatch or errors:
            print(f"stale generated stubs: {mismatch + errors}; run `make protos`")
            return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
