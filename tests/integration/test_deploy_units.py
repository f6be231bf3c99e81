"""The systemd unit template of `services/deploy/` is valid for systemd (`systemd-analyze
verify` on an instance of it) and does not drift from the node it starts: the module and flags
of its ExecStart exist, and the exit statuses it refuses to restart on are the node's own."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dltmw.runtime.process import EXIT_LOCKED, EXIT_USAGE

pytestmark = pytest.mark.integration
UNIT = Path(__file__).parents[2] / "services" / "deploy" / "dltmw-node@.service"


def test_the_node_unit_verifies_and_starts_what_the_supervisor_starts(tmp_path: Path) -> None:
    text = UNIT.read_text()
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read_string(text)
    service = unit["Service"]
    exec_start = service["ExecStart"].split()
    assert exec_start[1:4] == ["-m", "dltmw.runtime", "--config"]
    assert {"--config", "--log-file"} <= set(exec_start)
    restart_not = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert restart_not == {EXIT_USAGE, EXIT_LOCKED}
    usage = subprocess.run(
        [sys.executable, "-m", "dltmw.runtime", "--help"],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert usage.returncode == 0 and "--config" in usage.stdout and "--log-file" in usage.stdout
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd)"
    instance = tmp_path / "dltmw-node@peer0.org1.service"
    instance.write_text(text.replace(exec_start[0], sys.executable))  # the binary must exist
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(instance)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
