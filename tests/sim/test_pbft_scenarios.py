"""Golden protocol stories for PBFT-lite (tier 2): the transcript of each script is the assertion.

Each file in testdata/ holds commands (`> tick 5`) followed by the trace they must produce.
Regenerate after an intended change with `DLTMW_UPDATE_GOLDEN=1 pytest` on this file and
review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dltmw.sim.script import ScriptError, run_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_golden_transcript(path: Path) -> None:
    expected = path.read_text()
    actual = run_script(expected)
    if os.environ.get("DLTMW_UPDATE_GOLDEN") == "1":
        path.write_text(actual)
        return
    assert actual == expected, f"transcript of {path.name} changed; diff it against the file"


def test_scripts_exist_for_the_required_stories() -> None:
    assert {p.stem for p in SCRIPTS} >= {"normal_case", "silent_primary", "restart_catch_up"}


def test_golden_runner_notices_a_wrong_expectation() -> None:
    text = (TESTDATA / "normal_case.txt").read_text()
    tampered = text.replace("decided seq=1 view=0", "decided seq=1 view=7", 1)
    assert run_script(tampered) != tampered


def test_unknown_command_is_refused() -> None:
    with pytest.raises(ScriptError):
        run_script("> frobnicate r1\n")
