"""The TOML config (buildkitd.toml's registry form) and how it turns into endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.configfile import default_config_path
from engine.registry.client import RegistryClient
from engine.registry.config import (
    HostConfig,
    KeyPair,
    Mirror,
    canonical_registry,
    is_loopback,
    load_config,
    parse_config,
)
from engine.registry.errors import RegistryConfigError

BUILDKITD = """
debug = true
root = "/var/lib/buildkit"

[worker.oci]
  enabled = true

[registry."docker.io"]
  mirrors = ["127.0.0.1:5000", "https://mirror.example.com/hub"]

[registry."127.0.0.1:5000"]
  http = true

[registry."insecure.example.com:443"]
  insecure = true
  ca = ["/etc/certs/ca.pem"]
  [[registry."insecure.example.com:443".keypair]]
    key = "/etc/certs/client.key"
    cert = "/etc/certs/client.crt"
"""


def test_buildkitd_toml_registry_sections_are_read_and_the_rest_ignored() -> None:
    config = parse_config(BUILDKITD, "buildkitd.toml")
    assert config.mirrors("docker.io") == (Mirror("127.0.0.1:5000"), Mirror("mirror.example.com", "/hub", "https"))
    assert config.mirrors("index.docker.io") == config.mirrors("docker.io")
    assert config.host("127.0.0.1:5000") == HostConfig(http=True)
    insecure = config.host("https://insecure.example.com:443/")
    assert insecure.insecure and insecure.ca == ("/etc/certs/ca.pem",)
    assert insecure.keypairs == (KeyPair("/etc/certs/client.key", "/etc/certs/client.crt"),)
    assert config.host("elsewhere.example.com") == HostConfig()


@pytest.mark.parametrize(
    "text, message",
    [
        ('[registry."docker.io"]\nmirror = ["x"]\n', 'registry."docker.io".mirror: unknown key'),
        ('[registry."docker.io"]\nmirrors = "a b"\n', "invalid mirror 'a b'"),
        ('[registry."docker.io"]\nmirrors = [1]\n', 'registry."docker.io".mirrors: expected a list of strings'),
        ('[registry."r.example.com"]\nhttp = "yes"\n', 'registry."r.example.com".http: expected true or false'),
        ("[registry]\nx = 1\n", "registry.x: expected a table"),
        ('[registry."r"\n', "invalid TOML"),
    ],
)
def test_config_errors_name_the_file_and_key(text: str, message: str) -> None:
    with pytest.raises(RegistryConfigError) as info:
        parse_config(text, "/etc/shipyard/config.toml")
    assert str(info.value).startswith("/etc/shipyard/config.toml: ")
    assert message in str(info.value)


def test_config_path_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPYARD_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert default_config_path() == tmp_path / "xdg" / "shipyard" / "config.toml"
    assert load_config().hosts == {}  # a missing default file is an empty config
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_config_path() == Path("/etc/shipyard/config.toml")
    chosen = tmp_path / "mine.toml"
    monkeypatch.setenv("SHIPYARD_CONFIG", str(chosen))
    assert default_config_path() == chosen
    with pytest.raises(RegistryConfigError, match="mine.toml does not exist"):
        load_config()
    chosen.write_text('[registry."docker.io"]\nmirrors = ["127.0.0.1:5000"]\n')
    config = load_config()
    assert config.source == str(chosen) and config.mirrors("docker.io") == (Mirror("127.0.0.1:5000"),)


def test_names_are_canonical_and_loopback_is_recognized() -> None:
    assert canonical_registry("https://index.docker.io/v1/") == "docker.io"
    assert canonical_registry("registry-1.docker.io") == "docker.io"
    assert canonical_registry("http://LocalHost:5000/") == "localhost:5000"
    for host in ("localhost", "localhost:5000", "127.0.0.1:5000", "127.3.2.1", "[::1]:5000"):
        assert is_loopback(host), host
    for host in ("10.0.0.1:5000", "registry.example.com", "[2001:db8::1]:443", "localhost.example.com"):
        assert not is_loopback(host), host


def test_endpoints_mirrors_first_then_the_registry_itself() -> None:
    config = parse_config(BUILDKITD + '\n[registry."mirror.example.com"]\ninsecure = true\n')
    with RegistryClient(config) as client:
        pull = client.endpoints("docker.io")
        assert [(e.scheme, e.host, e.prefix, e.mirror) for e in pull] == [
            ("http", "127.0.0.1:5000", "", True),
            ("https", "mirror.example.com", "/hub", True),  # the explicit scheme wins over insecure
            ("https", "registry-1.docker.io", "", False),
        ]
        assert [e.host for e in client.endpoints("docker.io", pull=False)] == ["registry-1.docker.io"]
        (loop,) = client.endpoints("localhost:5001")
        assert loop.scheme == "http"  # loopback: plain HTTP without any config
        (insecure,) = client.endpoints("insecure.example.com:443")
        assert insecure.scheme == "https" and insecure.http_fallback
        assert isinstance(insecure.verify, bool) and insecure.verify is False
        (plain,) = client.endpoints("registry.example.com")
        assert plain.scheme == "https" and plain.verify is True and not plain.http_fallback
