"""The `dltmw` command helps: a mistake gets a message and a non-zero exit status, never a
Python traceback (only `--debug` shows one), and every argument and option has help text.

Each command runs as a real process (the console script, as a user types it) with bad
arguments: missing or malformed ones, a directory that is no network, ids the network does not
have, a network that is not running. The table covers every registered command; a new command
without a row fails `test_the_table_covers_every_command`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import typer.main

from dltmw.cli.main import app
from dltmw.pki.network import init_network

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DLTMW = Path(sys.executable).parent / "dltmw"
Args = Callable[[Path, Path], list[str]]  # (network dir, scratch dir) -> argv after `dltmw`

BAD: dict[str, list[Args]] = {
    "init": [
        lambda n, t: ["init"],
        lambda n, t: ["init", str(t / "missing.toml"), "-o", str(t / "o1")],
        lambda n, t: ["init", str(_misspelt(t)), "-o", str(t / "o2")],
        lambda n, t: ["init", str(ROOT / "services/networks/two-org.toml"), "-o", str(n)],
    ],
    "up": [
        lambda n, t: ["up"],
        lambda n, t: ["up", str(t / "nowhere")],
        lambda n, t: ["up", str(t)],
    ],
    "down": [lambda n, t: ["down", str(t / "nowhere")], lambda n, t: ["down", str(t)]],
    "start": [lambda n, t: ["start", str(n)], lambda n, t: ["start", str(n), "peer9"]],
    "stop": [lambda n, t: ["stop", str(n)], lambda n, t: ["stop", str(n), "peer9"]],
    "restart": [lambda n, t: ["restart", str(n), "peer9"]],
    "invoke": [
        lambda n, t: ["invoke", str(n), "trades", "bank", "open", "A", "1"],
        lambda n, t: ["invoke", str(n), "trades", "bank", "open", "-c", "nobody"],
        lambda n, t: ["invoke", str(n), "trades", "bank", "open", "-c", "user1.org1"],
    ],
    "query": [
        lambda n, t: ["query", str(n), "trades", "bank", "balance", "A"],
        lambda n, t: ["query", str(t / "nowhere"), "trades", "bank", "balance", "-c", "x"],
        lambda n, t: ["query", str(n), "trades", "bank", "balance", "A", "-c", "user1.org1"],
        lambda n, t: ["query", str(n), "trades", "bank", "balance", "-c", "u", "--gateway", "g"],
    ],
    "events": [
        lambda n, t: ["events", str(n), "trades"],
        lambda n, t: ["events", str(n), "trades", "-c", "user1.org1", "--from", "-1"],
        lambda n, t: ["events", str(n), "trades", "-c", "user1.org1"],
    ],
    "failover": [
        lambda n, t: ["failover", str(n)],
        lambda n, t: ["failover", str(n), "peer9"],
        lambda n, t: ["failover", str(n), "peer0.org1"],  # it has no standby
        lambda n, t: ["failover", str(t / "nowhere"), "peer0.org1"],
    ],
    "transfer": [
        lambda n, t: ["transfer", str(n), "-c", "user1.org1"],  # no legs
        lambda n, t: ["transfer", str(n), "-c", "user1.org1", "--leg", "trades:a:b"],
        lambda n, t: ["transfer", str(n), "-c", "user1.org1", "--leg", "trades:a:b:1"],  # one
        lambda n, t: [
            "transfer", str(n), "-c", "user1.org1",
            "--leg", "trades:a:b:1", "--leg", "cash:b:a:2", "--peers", "trades",
        ],
        lambda n, t: [  # a well-formed transfer on a network that is not running
            "transfer", str(n), "-c", "user1.org1",
            "--leg", "trades:a:b:1", "--leg", "cash:b:a:2",
            "--peers", "trades=peer0.org1", "--peers", "cash=peer0.org2",
        ],
        lambda n, t: ["transfer", str(t / "nowhere"), "-c", "user1.org1"],
    ],
    "status": [
        lambda n, t: ["status"],
        lambda n, t: ["status", str(t)],
        lambda n, t: ["status", str(n)],
    ],
    "explorer": [
        lambda n, t: ["explorer"],
        lambda n, t: ["explorer", str(t)],
        lambda n, t: ["explorer", str(n)],
        lambda n, t: ["explorer", str(n), "--node", "peer9"],
        lambda n, t: ["explorer", str(n), "--node", "peer0.org1"],
    ],
    "logs": [
        lambda n, t: ["logs", str(n)],
        lambda n, t: ["logs", str(n), "peer9"],
        lambda n, t: ["logs", str(n), "peer0.org1", "--stream", "nope"],
        lambda n, t: ["logs", str(n), "peer0.org1", "--lines", "many"],
    ],
    "audit": [
        lambda n, t: ["audit"],
        lambda n, t: ["audit", str(t)],
        lambda n, t: ["audit", str(n)],
    ],
    "demo": [lambda n, t: ["demo", "--keep"], lambda n, t: ["demo", "--nope"]],
    "bench": [lambda n, t: ["bench", "--txs", "many"], lambda n, t: ["bench", "--policy", "XOR"]],
    "contract": [
        lambda n, t: ["contract"],
        lambda n, t: ["contract", "package"],
        lambda n, t: ["contract", "package", str(t / "nowhere")],
        lambda n, t: ["contract", "package", str(_impure_contract(t))],
        lambda n, t: ["contract", "show", str(t / "nowhere.zip")],
        lambda n, t: ["contract", "show", str(ROOT / "README.md")],
        lambda n, t: ["contract", "install", str(n), "peer0.org1", str(ROOT / "README.md")],
        lambda n, t: ["contract", "install", str(n), "peer9", str(ROOT / "README.md")],
        lambda n, t: ["contract", "list", str(n), "peer0.org1"],
    ],
    "channel": [
        lambda n, t: ["channel"],
        lambda n, t: ["channel", "update", str(n), "trades", "-c", "admin.org1"],
        lambda n, t: ["channel", "update", str(n), "trades", "--sign", str(t / "no.update")],
        lambda n, t: ["channel", "update", str(n), "trades", "-o", str(t / "u"), "-c", "nobody"],
        lambda n, t: ["channel", "update", str(n), "nochannel", "-o", str(t / "u"), "-c",
                      "admin.org1"],
        lambda n, t: ["channel", "update", str(n), "trades", "-o", str(t / "u"), "-c",
                      "admin.org1"],
        lambda n, t: ["channel", "update", str(n), "trades", "--submit", str(t / "no.update"),
                      "-c", "admin.org1"],
        lambda n, t: ["channel", "join", str(n), "trades", "peer9"],
        lambda n, t: ["channel", "join", str(n), "trades", "peer0.org1"],
        lambda n, t: ["channel", "create", str(n), "c", "--member", "Org1", "--orderer", "o"],
        lambda n, t: ["channel", "create", str(n), "c", "-d", str(ROOT / "README.md"),
                      "--member", "Org1", "--orderer", "orderer0"],
    ],
    "org": [
        lambda n, t: ["org"],
        lambda n, t: ["org", "add", str(n), "trades", "Org9", "-o", str(t / "u"), "-c",
                      "admin.org1"],
        lambda n, t: ["org", "remove", str(n), "trades", "Org2", "-o", str(t / "u"), "-c",
                      "admin.org1"],
        lambda n, t: ["org", "init"],
        lambda n, t: ["org", "init", str(t / "missing.toml"), "-o", str(t / "o3")],
        lambda n, t: ["org", "init", str(ROOT / "services/networks/two-org.toml"), "-o",
                      str(t / "o4")],
    ],
    "network-map": [
        lambda n, t: ["network-map"],
        lambda n, t: ["network-map", "create", str(t), "-d", str(t / "nowhere.json")],
    ],
    "cert": [
        lambda n, t: ["cert"],
        lambda n, t: ["cert", "revoke", str(n), "trades", str(t / "no.pem"), "-o",
                      str(t / "u"), "-c", "admin.org1"],
        lambda n, t: ["cert", "renew", str(n), "ghost"],
        lambda n, t: ["cert", "issue", str(n), "Org1", "user1.org1"],
        lambda n, t: ["cert", "issue", str(t / "nowhere"), "Org1", "x"],
    ],
    "vault": [
        lambda n, t: ["vault"],
        lambda n, t: ["vault", "recover", str(n)],
        lambda n, t: ["vault", "recover", str(n), "peer9"],
        lambda n, t: ["vault", "recover", str(n), "peer0.org1"],  # the network is not running
        lambda n, t: ["vault", "recover", str(t / "nowhere"), "peer0.org1"],
    ],
    "private": [
        lambda n, t: ["private"],
        lambda n, t: ["private", "group", "create", str(n), "trades", "g"],
        lambda n, t: ["private", "group", "add", str(n), "trades", "g", "Org2", "-c", "nobody"],
        lambda n, t: ["private", "group", "call", str(n), "trades", "g", "kv", "get", "k",
                      "-c", "user1.org1"],  # the network is not running
        lambda n, t: ["private", "group", "create", str(t / "nowhere"), "trades", "g", "Org1",
                      "-c", "user1.org1"],
    ],
}  # fmt: skip
GLOBAL: list[Args] = [lambda n, t: ["--nope"], lambda n, t: ["nosuchcommand"]]


def _misspelt(tmp: Path) -> Path:
    path = tmp / "misspelt.toml"
    text = (ROOT / "services/networks/two-org.toml").read_text()
    path.write_text(text.replace("endorsement_policy", "endorsment_policy"))
    return path


def _impure_contract(tmp: Path) -> Path:
    path = tmp / "impure"
    path.mkdir()
    (path / "contract.json").write_text('{"name": "c", "version": "1", "entry": "contract:C"}')
    (path / "contract.py").write_text("import time\n")
    return path


@pytest.fixture(scope="module")
def stopped_network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = tmp_path_factory.mktemp("cli") / "net"
    init_network(ROOT / "services/networks/two-org.toml", net)
    return net


def _dltmw(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DLTMW), *argv], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_table_covers_every_command() -> None:
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert commands == set(BAD)


CASES = [(cmd, i, make) for cmd, makers in BAD.items() for i, make in enumerate(makers)]
CASES += [("(global)", i, make) for i, make in enumerate(GLOBAL)]


@pytest.mark.parametrize(("command", "case", "make"), CASES, ids=[f"{c}-{i}" for c, i, _ in CASES])
def test_bad_arguments_get_a_message_and_a_non_zero_status_without_traceback(
    stopped_network: Path, tmp_path: Path, command: str, case: int, make: Args
) -> None:
    argv = make(stopped_network, tmp_path)
    done = _dltmw(argv)
    output = done.stdout + done.stderr
    assert done.returncode != 0, f"dltmw {' '.join(argv)} succeeded:\n{output}"
    assert "Traceback" not in output, f"dltmw {' '.join(argv)}:\n{output}"
    assert output.strip(), f"dltmw {' '.join(argv)} said nothing"


def test_debug_shows_the_traceback(stopped_network: Path) -> None:
    done = _dltmw(
        ["--debug", "query", str(stopped_network), "trades", "bank", "f", "-c", "user1.org1"]
    )
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "is not running" in done.stderr


def test_version() -> None:
    done = _dltmw(["--version"])
    assert done.returncode == 0 and done.stdout.startswith("dltmw ")


def test_every_argument_and_option_has_help() -> None:
    group = typer.main.get_command(app)
    missing = [
        f"{name} {param.name}"
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    missing += [f"(global) {p.name}" for p in group.params if not (getattr(p, "help", "") or "")]
    assert missing == []
