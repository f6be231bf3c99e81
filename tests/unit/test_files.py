"""`aio/files.write_durably`: the one durable file replacement (fence, packages, checkpoints,
standby marker, data key ring)."""

from __future__ import annotations

import os
from pathlib import Path

from dltmw.aio.files import write_durably


def test_replaces_the_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "record"
    write_durably(target, "first, longer contents")
    write_durably(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["record"]


def test_a_temporary_left_by_a_crash_does_not_stop_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "record"
    write_durably(target, "one")
    (tmp_path / f".record.{os.getpid()}.tmp").write_text("half a write")
    write_durably(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record"]


def test_key_material_is_created_private(tmp_path: Path) -> None:
    write_durably(tmp_path / "keys", b"secret", mode=0o600)
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o600
