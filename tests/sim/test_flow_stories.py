"""Golden endorse → order → validate stories on simulated networks (tier 2): the transcript of
each script in testdata/flows/ is the assertion — first of all the paper's Figure 8.

Regenerate after an intended change with `DLTMW_UPDATE_GOLDEN=1 pytest` on this file and
review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dltmw.core.validation
from dltmw.sim.scenarios.story import StoryError, run_story

from .flow_runs import quiet_nodes

TESTDATA = Path(__file__).parent / "testdata" / "flows"
STORIES = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", STORIES, ids=[p.stem for p in STORIES])
def test_golden_transcript(path: Path) -> None:
    expected = path.read_text()
    with quiet_nodes():
        actual = run_story(expected)
    if os.environ.get("DLTMW_UPDATE_GOLDEN") == "1":
        path.write_text(actual)
        return
    assert actual == expected, f"transcript of {path.name} changed; diff it against the file"


def test_figure8_is_among_the_stories() -> None:
    assert "figure8" in {p.stem for p in STORIES}


def test_the_story_runner_notices_a_wrong_expectation() -> None:
    text = (TESTDATA / "figure8.txt").read_text()
    tampered = text.replace("t3 MVCC_READ_CONFLICT", "t3 VALID", 1)
    assert tampered != text
    with quiet_nodes():
        assert run_story(tampered) != tampered


def test_negative_control_figure8_needs_mvcc(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an MVCC check that ignores read versions the payment commits: the story changes."""
    monkeypatch.setattr(dltmw.core.validation, "_mvcc", lambda *_: dltmw.core.validation.VALID)
    text = (TESTDATA / "figure8.txt").read_text()
    with quiet_nodes():
        actual = run_story(text)
    assert "t3 VALID block=4 tx=2" in actual and actual != text


def test_unknown_command_is_refused() -> None:
    with pytest.raises(StoryError):
        run_story("> network solo\n> frobnicate\n")
