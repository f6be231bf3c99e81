"""JetStream ordering across hosts, and a network partition of one nats-server (issue 17).

Each of the three nats-servers runs on a host of its own (a network namespace, `netlab.py`),
at the address the topology names (`[jetstream] hosts`); the two orderers, the two peers and
the client run on a fourth host. Under a steady load, the host of the server orderer0 is
connected to is cut off the network (its process keeps running and says nothing: a pulled
cable). Then:
- ordering goes on, and on BOTH orderers: the other two servers keep the stream's quorum (and
  elect a new leader if the lost one led), and orderer0 leaves its silent server within a few
  pings (`[jetstream] ping_interval_ms`) and a TLS close bounded in time
  (`runtime/roles/orderer/nats_transport.py`), instead of TCP's minutes: with nats-py's
  default 2-minute pings, or its unbounded TLS close (~35 s), it cuts nothing within LEAVE_S
  (the negative controls, run by hand);
- after the heal the cut-off server rejoins and holds the same stream as the others;
- no acknowledged transaction is lost or committed twice, both orderers and both peers hold
  one chain.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dltmw.ops.supervisor import Supervisor
from dltmw.pki.network import init_network

from .netlab import NetLab, namespaces_possible
from .test_jetstream_ordering import ORDERERS, PEERS, _hashes, _valid_tx_ids

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent
TOPOLOGY = (HERE.parents[1] / "services/networks/jetstream-three.toml").read_text()
SERVERS = ["n0", "n1", "n2"]
APP = "app"
why_not = namespaces_possible()
needs_namespaces = pytest.mark.skipif(bool(why_not), reason=why_not or "namespaces available")
JSZ = "/jsz?accounts=true&streams=true"
# orderer0 leaves its silent server after two 2 s pings and a TLS close bounded to 1 s (~5 s
# here); nats-py alone waited ~35 s (its TLS close waits for an answer that cannot come)
LEAVE_S = 25
FETCH = (
    "import sys, urllib.request\n"
    "try:\n"
    "    print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())\n"
    "except OSError as exc:\n"
    "    sys.exit(str(exc))\n"
)


def _topology(lab: NetLab) -> str:
    hosts = ", ".join(f'"{lab.address(s)}"' for s in SERVERS)
    text = TOPOLOGY.replace("replicas = 3\n", f"replicas = 3\nhosts = [{hosts}]\n", 1)
    assert "hosts = [" in text
    return text


def _stream(lab: NetLab, server: str) -> dict[str, Any] | None:
    """The channel's stream as `server` reports it (its monitoring endpoint, asked on its own
    host), or None when it does not answer."""
    url = f"http://{lab.address(server)}:8222{JSZ}"
    cmd = [*lab.exec_prefix(server), sys.executable, "-c", FETCH, url]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        return None
    for account in json.loads(done.stdout).get("account_details", []):
        for stream in account.get("stream_detail", []):
            if stream["name"].startswith("DLTMW_"):
                return dict(stream)
    return None


def _server_of(lab: NetLab, orderer: str) -> str:
    """The nats-server `orderer` is connected to (each server's `/connz`, on its own host)."""
    deadline = time.monotonic() + 30
    while True:
        for server in SERVERS:
            url = f"http://{lab.address(server)}:8222/connz"
            cmd = [*lab.exec_prefix(server), sys.executable, "-c", FETCH, url]
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
            names = [
                c.get("name", "") for c in json.loads(done.stdout or "{}").get("connections", [])
            ]
            if any(n.startswith(f"{orderer}/") for n in names):
                return server
        assert time.monotonic() < deadline, f"{orderer} is connected to no nats-server"
        time.sleep(0.2)


def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Load:
    """The load script running on the app host; `committed` follows its progress lines."""

    def __init__(self, lab: NetLab, net: Path) -> None:
        cmd = [*lab.exec_prefix(APP), sys.executable, str(HERE / "ns_jetstream_load.py")]
        self.proc = subprocess.Popen(
            [*cmd, str(net), "user1.org1", "p"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.committed = 0
        self.result: dict[str, list[str]] | None = None

    def wait_for(self, count: int, timeout_s: float, what: str) -> None:
        """Read progress until `count` commits (bounded: the script ends by itself in 150 s)."""
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while self.committed < count:
            assert time.monotonic() < deadline, f"{what}: {self.committed}/{count} commits"
            line = self.proc.stdout.readline()
            assert line, (
                f"the load ended early: {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
            if line.startswith("committed "):
                self.committed = int(line.split()[1])

    def stop(self) -> dict[str, list[str]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        out, err = self.proc.communicate(timeout=180)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert lines, f"no result from the load: {err[-2000:]}"
        return dict(json.loads(lines[-1].removeprefix("RESULT ")))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@needs_namespaces
def test_a_partitioned_nats_server_is_left_then_rejoins(tmp_path: Path) -> None:
    with NetLab([*SERVERS, APP]) as lab:
        (tmp_path / "topology.toml").write_text(_topology(lab))
        net = tmp_path / "net"
        init_network(tmp_path / "topology.toml", net)
        launch = {nid: lab.exec_prefix(APP) for nid in [*ORDERERS, *PEERS]}
        launch |= {server: lab.exec_prefix(server) for server in SERVERS}
        sup = Supervisor(net, launch=launch)
        load: Load | None = None
        try:
            sup.up(timeout_s=90)
            load = Load(lab, net)
            load.wait_for(20, 90, "commits before the partition")
            cut = _server_of(lab, ORDERERS[0])
            leader = ((_stream(lab, cut) or {}).get("cluster") or {}).get("leader")
            lab.partition(cut)
            heights = {o: len(_hashes(net, o, "orderer")) for o in ORDERERS}
            load.wait_for(load.committed + 40, 90, f"commits while {cut} is cut off")
            for orderer, height in heights.items():  # every orderer goes on cutting
                _until(  # within seconds: two pings, a bounded TLS close, a reconnect
                    lambda o=orderer, h=height: len(_hashes(net, o, "orderer")) >= h + 3,
                    LEAVE_S,
                    f"{orderer} to cut blocks while {cut} is cut off",
                )
            others = [s for s in SERVERS if s != cut]
            now_leading = ((_stream(lab, others[0]) or {}).get("cluster") or {}).get("leader")
            assert now_leading in others, f"{now_leading} leads, not one of {others} ({leader} did)"
            lab.heal(cut)
            load.wait_for(load.committed + 20, 90, "commits after the heal")
            result = load.stop()
            assert not result["lost"], f"acknowledged, never committed: {result['lost'][:3]}"
            assert not result["unacknowledged"], result["unacknowledged"][:3]

            def same_stream() -> bool:
                states = [(_stream(lab, s) or {}).get("state", {}) for s in SERVERS]
                seqs = {(st.get("last_seq"), st.get("messages")) for st in states}
                return len(seqs) == 1 and None not in next(iter(seqs))

            _until(same_stream, 60, f"{cut} to catch up with the stream")
            _until(
                lambda: len({tuple(_hashes(net, o, "orderer")) for o in ORDERERS}) == 1,
                60,
                "the orderers to agree",
            )
            chain = _hashes(net, ORDERERS[0], "orderer")
            for peer in PEERS:
                _until(lambda p=peer: len(_hashes(net, p, "peer")) >= len(chain), 60, peer)
                assert _hashes(net, peer, "peer")[: len(chain)] == chain, f"{peer} diverged"
                valid = _valid_tx_ids(net, peer)
                assert len(valid) == len(set(valid)), "a transaction was committed twice"
                assert set(result["committed"]) <= set(valid), "an acknowledged tx was lost"
        finally:
            if load is not None:
                load.kill()
            codes = sup.stop_all()
        assert all(c == 0 for c in codes.values()), f"unclean stop: {codes}"
