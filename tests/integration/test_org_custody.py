"""Each organisation keeps its own keys: three organisations run `dltmw org init` into three
separate directories (nothing shared between them), exchange only their definitions, the
orderer organisation runs `dltmw channel create` and hands out block 0, every organisation
lists it for its nodes, and a transaction endorsed by both member organisations commits; each
builds the UTXO network map from the same definitions, and Org1's vault issues cash to Org2's,
notarised by OrdererOrg's notary, each reaching the others by their advertised endpoints. The
directories are then scanned: none holds a private key of another organisation. A definition
whose certificates are not its organisation's is refused and no block is written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dltmw.client import GatewayClient
from dltmw.client.utxo import PartyFiles, VaultClient, holdings_of
from dltmw.net.keyfile import read_key
from dltmw.net.ports import plan_port
from dltmw.ops.supervisor import Supervisor
from dltmw.pki.org import load_definition, to_json
from dltmw.v1 import transaction_pb2

pytestmark = pytest.mark.integration
VALID = transaction_pb2.TX_VALIDATION_CODE_VALID
DLTMW = str(Path(sys.executable).parent / "dltmw")
HOSTS = {"OrdererOrg": "127.0.0.2", "Org1": "127.0.0.3", "Org2": "127.0.0.4"}


def org_topology(org: str) -> str:
    """One organisation's own topology: OrdererOrg runs the orderer and a notary, Org1 and
    Org2 a peer that is also a UTXO vault, and a client."""
    host = HOSTS[org]

    def node(nid: str, roles: str) -> str:
        endpoint = f"{host}:{plan_port(host)}"
        return f'[[nodes]]\nid = "{nid}"\norg = "{org}"\nroles = {roles}\nendpoint = "{endpoint}"\n'

    head = f'name = "{org.lower()}"\n[[orgs]]\nid = "{org}"\n'
    if org == "OrdererOrg":
        return head + node("orderer0", '["orderer"]') + node("notary0", '["notary"]')
    n = org[-1]
    client = f'[[clients]]\nid = "user1.org{n}"\norg = "{org}"\n'
    return head + node(f"peer0.org{n}", '["peer", "gateway", "vault"]') + client


def dltmw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DLTMW, *args], check=False, capture_output=True, text=True, timeout=120)


def list_block(org_dir: Path, block: Path) -> None:
    """What an organisation does with block 0 it received: keep it in its own directory and
    list it in each of its nodes' node.toml (or join running nodes: `dltmw channel join`)."""
    (org_dir / "channels").mkdir(exist_ok=True)
    mine = org_dir / "channels" / block.name
    if not mine.exists():
        shutil.copy(block, mine)
    for node_toml in org_dir.glob("nodes/*/node.toml"):
        doc = tomllib.loads(node_toml.read_text())
        if not {"peer", "orderer"} & set(doc["node"]["roles"]):
            continue  # a notary serves no channel
        doc["channels"] = {"genesis": [str(mine)]}
        node_toml.write_text(tomli_w.dumps(doc))


def private_keys(org_dir: Path) -> dict[Path, bytes]:
    """Every private key file under a directory, as its public key's DER."""
    found = {}
    for path in org_dir.rglob("*"):
        if path.is_file() and b"PRIVATE KEY-----" in path.read_bytes():
            key = serialization.load_pem_private_key(read_key(path), None)
            raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            found[path] = key.public_key().public_bytes(*raw)
    return found


async def test_three_organisations_with_their_own_keys_make_a_channel(tmp_path: Path) -> None:
    dirs = {org: tmp_path / org for org in HOSTS}
    for org, out in dirs.items():
        (tmp_path / f"{org}.toml").write_text(org_topology(org))
        done = dltmw("org", "init", str(tmp_path / f"{org}.toml"), "--out", str(out))
        assert done.returncode == 0, done.stderr
    definitions = {org: out / f"{org}.org.json" for org, out in dirs.items()}

    bad = load_definition(definitions["Org2"])  # Org2's nodes, but Org1's root CA
    bad.organization.root_certificate_pem = (dirs["Org1"] / "orgs/Org1/ca.pem").read_bytes()
    (tmp_path / "bad.org.json").write_text(to_json(bad))
    create = ["channel", "create", str(dirs["OrdererOrg"]), "trades", "--orderer", "orderer0"]
    create += ["--member", "Org1", "--member", "Org2", "--endorsement-policy"]
    create += ["AND(Org1.peer, Org2.peer)", "--max-tx-count", "10", "--timeout-ms", "50"]
    refused = dltmw(*create, "-d", str(definitions["OrdererOrg"]), "-d", str(definitions["Org1"]),
                    "-d", str(tmp_path / "bad.org.json"))  # fmt: skip
    said = " ".join(refused.stderr.split())  # the console wraps long lines
    assert refused.returncode == 1 and "not issued by the root CA of 'Org2'" in said, said
    assert not (dirs["OrdererOrg"] / "channels").exists()  # nothing written

    made = dltmw(*create, *(a for d in definitions.values() for a in ("-d", str(d))))
    assert made.returncode == 0, made.stderr
    block = dirs["OrdererOrg"] / "channels" / "trades.block"
    sups = []
    try:
        for out in dirs.values():
            list_block(out, block)
            all_defs = (a for d in definitions.values() for a in ("-d", str(d)))
            mapped = dltmw("network-map", "create", str(out), *all_defs)  # each its own copy
            assert mapped.returncode == 0, mapped.stderr
            sups.append(Supervisor(out))
            sups[-1].up(timeout_s=60)
        async with await GatewayClient.connect(dirs["Org1"], "user1.org1") as client:
            done = await client.submit_transaction("trades", "bank", "open", "A", "100")
            assert done.status.result == VALID  # endorsed by both organisations' peers
        # the notarised UTXO flow across the directories: Org1's vault issues cash to Org2's
        # vault, notarised by OrdererOrg's notary; Org2 holds it
        org1 = await VaultClient.connect(PartyFiles.load(dirs["Org1"], "user1.org1"), "peer0.org1")
        org2 = await VaultClient.connect(PartyFiles.load(dirs["Org2"], "user1.org2"), "peer0.org2")
        issued = await org1.issue("cash", org1.identity_of("peer0.org2"), "JPY", 500)
        assert issued.tx_id
        assert holdings_of(await org2.query()) == {("cash", "JPY"): 500}
    finally:
        codes = [c for sup in sups for c in sup.stop_all().values()]
    assert all(c == 0 for c in codes), codes

    keys = {org: private_keys(out) for org, out in dirs.items()}
    for org, found in keys.items():
        assert found and not (
            set(found.values())
            & {k for other, ks in keys.items() if other != org for k in ks.values()}
        )
        for path in found:  # every key sits next to a certificate of ITS organisation
            cert_path = path.with_suffix(".pem")
            if cert_path.exists():
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                names = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
                assert [n.value for n in names] == [org], path
        assert sorted(p.name for p in (dirs[org] / "orgs").iterdir()) == [org]
