"""Credentials in docker's config.json and through real docker-credential-* helper programs."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from engine.registry.auth import parse_www_authenticate
from engine.registry.credentials import Credential, DockerCredentials, server_address
from engine.registry.errors import RegistryConfigError

HELPER = r'''#!{python}
"""A credential helper speaking docker's protocol, keeping its secrets in a JSON file."""
import json, os, sys
path = os.environ["TEST_HELPER_DB"]
db = json.load(open(path)) if os.path.exists(path) else {{}}
action = sys.argv[1]
data = sys.stdin.read()
if action == "get":
    entry = db.get(data.strip())
    if entry is None:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": data.strip(), "Username": entry[0], "Secret": entry[1]}}))
elif action == "store":
    doc = json.loads(data)
    db[doc["ServerURL"]] = [doc["Username"], doc["Secret"]]
    json.dump(db, open(path, "w"))
elif action == "erase":
    db.pop(data.strip(), None)
    json.dump(db, open(path, "w"))
'''


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`docker-credential-testhelper` on PATH, with its database file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    program = bindir / "docker-credential-testhelper"
    program.write_text(HELPER.format(python=sys.executable))
    program.chmod(0o755)
    db = tmp_path / "helper-db.json"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TEST_HELPER_DB", str(db))
    return db


def write_config(directory: Path, doc: dict) -> DockerCredentials:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    return DockerCredentials(directory)


def test_auths_entries_in_every_form_docker_writes(tmp_path: Path) -> None:
    creds = write_config(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hubuser:hub:pw").decode()},
                "http://127.0.0.1:5000": {"username": "u", "password": "p"},
                "registry.example.com": {"identitytoken": "refresh-token"},
            },
            "psFormat": "table",
        },
    )
    assert creds.get("docker.io") == Credential("hubuser", "hub:pw")
    assert creds.get("index.docker.io") == Credential("hubuser", "hub:pw")
    assert creds.get("127.0.0.1:5000") == Credential("u", "p")
    assert creds.get("registry.example.com") == Credential(identity_token="refresh-token")
    assert creds.get("other.example.com") is None
    assert "hub:pw" not in repr(creds.get("docker.io"))


def test_a_missing_or_broken_config(tmp_path: Path) -> None:
    assert DockerCredentials(tmp_path / "none").get("docker.io") is None
    broken = write_config(tmp_path / "broken", {})
    broken.path.write_text("{not json")
    with pytest.raises(RegistryConfigError, match="cannot read docker config"):
        broken.get("docker.io")
    bad_auth = write_config(tmp_path / "bad", {"auths": {"r.example.com": {"auth": base64.b64encode(b"nocolon").decode()}}})
    with pytest.raises(RegistryConfigError, match="not base64 of user:password"):
        bad_auth.get("r.example.com")


def test_store_and_erase_keep_everything_else(tmp_path: Path) -> None:
    creds = write_config(tmp_path, {"auths": {"other.example.com": {"auth": "eDp5"}}, "currentContext": "default"})
    assert creds.store("docker.io", Credential("me", "secret")) == str(creds.path)
    assert creds.store("127.0.0.1:5000", Credential("me", "pw")) == str(creds.path)
    doc = json.loads(creds.path.read_text())
    assert doc["currentContext"] == "default"
    assert set(doc["auths"]) == {"other.example.com", "https://index.docker.io/v1/", "127.0.0.1:5000"}
    assert base64.b64decode(doc["auths"]["https://index.docker.io/v1/"]["auth"]) == b"me:secret"
    assert stat.S_IMODE(creds.path.stat().st_mode) == 0o600
    assert creds.get("registry-1.docker.io") == Credential("me", "secret")
    assert creds.erase("docker.io") is True
    assert creds.erase("docker.io") is False
    assert creds.get("docker.io") is None
    assert creds.get("127.0.0.1:5000") == Credential("me", "pw")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".config.json.")]


def test_creds_store_helper_is_used_for_get_store_and_erase(tmp_path: Path, helper: Path) -> None:
    creds = write_config(tmp_path / "docker", {"credsStore": "testhelper", "auths": {}})
    assert creds.get("127.0.0.1:5000") is None  # "credentials not found" is not an error
    assert creds.store("127.0.0.1:5000", Credential("alice", "wonderland")) == "docker-credential-testhelper"
    assert json.loads(helper.read_text()) == {"127.0.0.1:5000": ["alice", "wonderland"]}
    assert "wonderland" not in creds.path.read_text()
    assert creds.get("127.0.0.1:5000") == Credential("alice", "wonderland")
    creds.store("docker.io", Credential(identity_token="tok"))
    assert json.loads(helper.read_text())[server_address("docker.io")] == ["<token>", "tok"]
    assert creds.get("docker.io") == Credential(identity_token="tok")
    assert creds.erase("127.0.0.1:5000") is True
    assert creds.get("127.0.0.1:5000") is None


def test_cred_helpers_per_registry_win_over_auths(tmp_path: Path, helper: Path) -> None:
    helper.write_text(json.dumps({"registry.example.com": ["helped", "pw"]}))
    creds = write_config(
        tmp_path / "docker",
        {
            "credHelpers": {"registry.example.com": "testhelper", "gone.example.com": "nonexistent"},
            "auths": {"registry.example.com": {"username": "file", "password": "x"}, "gone.example.com": {"username": "f", "password": "y"}},
        },
    )
    assert creds.get("registry.example.com") == Credential("helped", "pw")
    assert creds.get("gone.example.com") == Credential("f", "y")  # a helper that is not installed: config.json
    with pytest.raises(RegistryConfigError, match="docker-credential-nonexistent is not on PATH"):
        creds.store("gone.example.com", Credential("a", "b"))


def test_www_authenticate_parsing() -> None:
    (bearer,) = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push"'
    )
    assert bearer.scheme == "bearer"
    assert bearer.param("realm") == "https://auth.docker.io/token"
    assert bearer.param("scope") == "repository:library/busybox:pull,push"
    basic, second = parse_www_authenticate('Basic realm="a \\"quoted\\" realm", Bearer realm=http://x/token, service=s')
    assert (basic.scheme, basic.param("realm")) == ("basic", 'a "quoted" realm')
    assert (second.scheme, second.param("realm"), second.param("service")) == ("bearer", "http://x/token", "s")
    assert parse_www_authenticate("") == []
