"""Connection profiles: a client's identity, TLS files and gateways, independent of the
`dltmw init` layout; bad profiles are refused with the key path, never half-loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from dltmw.pki.network import init_network
from dltmw.sdk.network import DEFAULT_TOPOLOGY
from dltmw.sdk.profile import Profile, ProfileError

GOOD = {
    "client_id": "app",
    "identity": {"org": "Org1", "cert": "id.pem", "key": "id.key"},
    "tls": {"cert": "tls.pem", "key": "tls.key", "roots": "/etc/roots.pem"},
    "gateways": [
        {"name": "peer0.org1", "address": "10.0.0.1:7051"},
        {"name": "peer1.org1", "address_book": "run/endpoints"},
    ],
}


def test_relative_paths_are_relative_to_the_profile(tmp_path: Path) -> None:
    profile = Profile.from_dict(GOOD, base=tmp_path)
    assert profile.identity.cert == tmp_path / "id.pem"
    assert profile.tls.roots == Path("/etc/roots.pem")
    assert profile.gateways[1].address_book == tmp_path / "run" / "endpoints"
    assert [g.name for g in profile.gateways] == ["peer0.org1", "peer1.org1"]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["gateways"][0].update(adress="x"), "gateways.0.adress"),
        (lambda d: d["identity"].pop("key"), "identity.key"),
        (lambda d: d.update(gateways=[]), "gateways"),
        (lambda d: d["gateways"][0].pop("address"), "gateways.0"),
        (lambda d: d.update(extra=1), "extra"),
    ],
)
def test_bad_profile_is_refused_with_its_key_path(change, path: str) -> None:  # type: ignore[no-untyped-def]
    import copy

    raw = copy.deepcopy(GOOD)
    change(raw)
    with pytest.raises(ProfileError, match=path.replace(".", r"\.")):
        Profile.from_dict(raw)


def test_toml_profile_loads_and_missing_file_is_a_profile_error(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(
        'client_id = "app"\n[identity]\norg = "Org1"\ncert = "a"\nkey = "b"\n'
        '[tls]\ncert = "c"\nkey = "d"\nroots = "e"\n[[gateways]]\nname = "g"\naddress = "h:1"\n'
    )
    assert Profile.load(tmp_path / "p.toml").gateways[0].address == "h:1"
    with pytest.raises(ProfileError, match=r"nope\.toml"):
        Profile.load(tmp_path / "nope.toml")
    with pytest.raises(ProfileError, match="app"):
        Profile.load(tmp_path / "p.toml").signer()  # its key files do not exist


def test_profile_from_an_init_directory(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text(DEFAULT_TOPOLOGY)
    init_network(tmp_path / "t.toml", tmp_path / "net")
    profile = Profile.from_network(tmp_path / "net", "user1.org2")
    assert [g.name for g in profile.gateways] == ["peer0.org2"]  # its org's gateways only
    assert profile.signer().org_id == "Org2"
    profile.tls_material()
    with pytest.raises(ProfileError, match="nobody"):
        Profile.from_network(tmp_path / "net", "nobody")
