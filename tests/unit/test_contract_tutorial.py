"""docs/contracts.md cannot rot: its contract is examples/contracts/assets, included verbatim, and
the tutorial's own tests (examples/contracts/assets/test_assets.py) run here, on the package
loaded as a peer loads it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "contracts" / "assets"
DOC = ROOT / "docs" / "contracts.md"


def _tutorial_tests() -> ModuleType:
    path = EXAMPLE / "test_assets.py"
    spec = importlib.util.spec_from_file_location("tutorial_test_assets", path)
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load the tutorial's tests")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TESTS = _tutorial_tests()
NAMES = sorted(n for n in vars(TESTS) if n.startswith("test_"))


def test_the_tutorial_has_tests() -> None:
    assert len(NAMES) >= 3


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_the_tutorial_tests_pass(name: str) -> None:
    test: Callable[[], None] = getattr(TESTS, name)
    test()


@pytest.mark.parametrize(
    "file", ["contract.json", "model.py", "contract.py", "test_assets.py"], ids=str
)
def test_the_doc_shows_the_example_verbatim(file: str) -> None:
    assert (EXAMPLE / file).read_text(encoding="utf-8").strip() in DOC.read_text(encoding="utf-8")
