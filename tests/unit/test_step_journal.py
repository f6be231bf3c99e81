"""The private leg's step journal (`client/step_journal.py`): what one process writes, another
reads back per transfer and step, in order; a torn line (a kill mid-write) is skipped and does
not swallow the next attempt."""

from __future__ import annotations

from pathlib import Path

from dltmw.client.step_journal import Attempt, StepJournal


def test_attempts_survive_a_reopen_in_order_per_transfer_and_step(tmp_path: Path) -> None:
    path = tmp_path / "j"
    first = StepJournal(path)
    first.write("t1", Attempt("pescrow", b"\x01" * 24, b"\xaa" * 32))
    first.write("t1", Attempt("plock", b"\x02" * 24, b"\xbb" * 32))
    first.write("t2", Attempt("plock", b"\x03" * 24, b"\xcc" * 32))
    first.write("t1", Attempt("plock", b"\x04" * 24, b"\xdd" * 32))
    first.close()
    again = StepJournal(path)
    assert again.attempts("t1", "plock") == [
        Attempt("plock", b"\x02" * 24, b"\xbb" * 32),
        Attempt("plock", b"\x04" * 24, b"\xdd" * 32),
    ]
    assert again.attempts("t2", "plock") == [Attempt("plock", b"\x03" * 24, b"\xcc" * 32)]
    assert again.attempts("t1", "pclaim") == [] and again.attempts("t3", "plock") == []
    again.close()


def test_a_torn_line_is_skipped_and_the_next_attempt_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = StepJournal(path)
    journal.write("t1", Attempt("pescrow", b"\x01" * 24, b"\xaa" * 32))
    journal.close()
    with path.open("a") as f:  # a kill mid-write: half a line, no newline
        f.write('{"id":"t1","step":"plock","nonce":"0')
    journal = StepJournal(path)
    assert journal.attempts("t1", "plock") == []
    journal.write("t1", Attempt("plock", b"\x05" * 24, b"\xee" * 32))
    journal.close()
    assert StepJournal(path).attempts("t1", "plock") == [
        Attempt("plock", b"\x05" * 24, b"\xee" * 32)
    ]


def test_without_a_path_it_remembers_in_memory_only(tmp_path: Path) -> None:
    journal = StepJournal()
    journal.write("t1", Attempt("pabort", b"\x06" * 24, b"\xff" * 32))
    assert journal.attempts("t1", "pabort") == [Attempt("pabort", b"\x06" * 24, b"\xff" * 32)]
    assert list(tmp_path.iterdir()) == []
