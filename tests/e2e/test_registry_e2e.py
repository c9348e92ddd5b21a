"""Registries end to end, through the CLI: push, pull, FROM via a docker.io mirror, login, faults.

Every server is real and on 127.0.0.1: Debian's `docker-registry` (plain, and with
htpasswd auth), skopeo as an independent client, and a fault-injecting TCP proxy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import SHIPYARD, Shipyard, make_shipyard, steps, write
from tests.registry.servers import FaultProxy, Registry, htpasswd_auth, start_registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    server = start_registry(tmp_path_factory.mktemp("e2e-registry"))
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Isolated config: no /etc/shipyard/config.toml, no ~/.docker/config.json."""
    config = tmp_path / "shipyard.toml"
    config.write_text("")
    return {"SHIPYARD_CONFIG": str(config), "DOCKER_CONFIG": str(tmp_path / "docker")}


def sy_in(root: Path, env: dict[str, str]) -> Shipyard:
    return Shipyard(root, "runc", env)


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def blob_gets(registry: Registry, since: int) -> list[str]:
    return [r for r in registry.requests()[since:] if r.startswith("GET ") and "/blobs/" in r]


def test_push_pull_and_rebuild_without_downloading_again(
    registry: Registry, env: dict[str, str], tmp_path: Path, busybox_tar: Path
) -> None:
    builder = make_shipyard(tmp_path / "state1", busybox_tar, "runc", env)
    ctx = write(tmp_path / "ctx" / "Dockerfile", "FROM busybox:local\nRUN echo built > /built\nCMD [\"cat\", \"/built\"]\n").parent
    name = f"{registry.host}/e2e/app:v1"
    proc, meta = builder.build(ctx, "-t", name, "--push")
    pushed = meta["containerimage.digest"]
    assert f"digest: {pushed}" in proc.stderr
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}"))
    assert inspected["Digest"] == pushed and len(inspected["Layers"]) == 2
    skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{tmp_path / 'copied'}:v1")  # verifies every blob

    # A fresh state directory pulls it, then builds FROM it.
    puller = sy_in(tmp_path / "state2", env)
    out = puller.run("pull", "--progress", "plain", name).stdout
    assert f"Digest: {pushed}" in out and out.strip().endswith(name)
    listed = json.loads(puller.run("images", "--format", "json").stdout)
    assert [image["digest"] for image in listed] == [pushed]
    child = write(tmp_path / "child" / "Dockerfile", f'FROM {name}\nRUN test "$(cat /built)" = built && echo ok > /ok\n').parent
    _, first = puller.build(child, "-t", "child")
    assert not steps(first)["[2/2] RUN test \"$(cat /built)\" = built && echo ok > /ok"]
    mark = len(registry.requests())
    _, second = puller.build(child, "-t", "child")
    assert all(steps(second).values())
    assert registry.requests()[mark:] == ["HEAD /v2/e2e/app/manifests/v1 200"]  # one HEAD, nothing downloaded

    # The pulled image pushes back as the same bytes, its blobs mounted from the repository they came from.
    missing = puller.run("push", f"{registry.host}/e2e/copy:v1", check=False)
    assert missing.returncode == 1 and "an image does not exist locally with the tag" in missing.stderr
    puller.run("tag", name, f"{registry.host}/e2e/copy:v1")
    mark = len(registry.requests())
    out = puller.run("push", "--progress", "plain", f"{registry.host}/e2e/copy:v1")
    assert f"digest: {pushed}" in out.stdout
    assert "mounted" in out.stderr and not [r for r in registry.requests()[mark:] if r.startswith(("PUT /v2/e2e/copy/blobs", "PATCH"))]


def test_from_busybox_and_python_through_a_docker_io_mirror(
    registry: Registry, env: dict[str, str], tmp_path: Path, busybox_tar: Path
) -> None:
    seeder = sy_in(tmp_path / "seed", env)
    seeder.run("import", str(busybox_tar), "-t", f"{registry.host}/library/busybox:latest", "-t", f"{registry.host}/library/python:3.11-slim")
    seeder.run("push", f"{registry.host}/library/busybox:latest")
    seeder.run("push", f"{registry.host}/library/python:3.11-slim")  # a stand-in: the same busybox layers, mounted
    Path(env["SHIPYARD_CONFIG"]).write_text(f'[registry."docker.io"]\nmirrors = ["{registry.host}"]\n')
    sy = sy_in(tmp_path / "fresh", env)
    ctx = write(tmp_path / "ctx" / "Dockerfile", "FROM python:3.11-slim AS py\nRUN echo py > /py\nFROM busybox\nCOPY --from=py /py /py\nRUN cat /py\n").parent
    mark = len(registry.requests())
    proc, first = sy.build(ctx, "-t", "app")
    assert "pull docker.io/library/busybox:latest" in proc.stderr and "pull docker.io/library/python:3.11-slim" in proc.stderr
    got = registry.requests()[mark:]
    assert "GET /v2/library/busybox/manifests/latest 200" in got and "GET /v2/library/python/manifests/3.11-slim 200" in got
    assert len(blob_gets(registry, mark)) == 2  # config once, the shared layer once
    names = {image["repository"] + ":" + image["tag"] for image in json.loads(sy.run("images", "--format", "json").stdout)}
    assert {"busybox:latest", "python:3.11-slim", "app:latest"} <= names
    mark = len(registry.requests())
    _, second = sy.build(ctx, "-t", "app")
    assert all(steps(second).values())
    assert sorted(registry.requests()[mark:]) == [
        "HEAD /v2/library/busybox/manifests/latest 200",
        "HEAD /v2/library/python/manifests/3.11-slim 200",
    ]


def test_an_image_skopeo_pushed_is_pulled_with_the_same_digest(
    registry: Registry, env: dict[str, str], tmp_path: Path, busybox_tar: Path
) -> None:
    sy = make_shipyard(tmp_path / "state", busybox_tar, "runc", env)
    ctx = write(tmp_path / "ctx" / "Dockerfile", "FROM busybox:local\nRUN echo from-skopeo > /s\n").parent
    layout = tmp_path / "layout"
    sy.build(ctx, "--output", f"type=oci,dest={layout},tar=false", "-t", "s:1")
    name = f"{registry.host}/skopeo/docker-format:1"
    skopeo("copy", "--dest-tls-verify=false", "--format", "v2s2", f"oci:{layout}:1", f"docker://{name}")
    digest = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}"))["Digest"]
    fresh = sy_in(tmp_path / "fresh", env)
    assert f"Digest: {digest}" in fresh.run("pull", name).stdout
    raw = json.loads(fresh.run("inspect", name).stdout)
    assert digest in json.dumps(raw)


def test_a_tampered_blob_fails_the_pull_and_stores_nothing(env: dict[str, str], tmp_path: Path, busybox_tar: Path) -> None:
    registry = start_registry(tmp_path / "tamper-registry")
    try:
        sy = sy_in(tmp_path / "state", env)
        name = f"{registry.host}/tamper/busybox:1"
        sy.run("import", str(busybox_tar), "-t", name)
        sy.run("push", name)
        manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}"))
        layer = manifest["layers"][0]["digest"]
        data = registry.blob_data(layer)
        data.write_bytes(data.read_bytes()[:-10] + b"0123456789")
        fresh = sy_in(tmp_path / "fresh", env)
        proc = fresh.run("pull", name, check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith(f"ERROR: blob {layer} of {name.rsplit(':', 1)[0]}")
        assert "digest mismatch" in proc.stderr
        assert json.loads(fresh.run("images", "--format", "json").stdout) == []
        assert not (tmp_path / "fresh" / "blobs" / "sha256" / layer.split(":")[1]).exists()
        assert not list((tmp_path / "fresh" / "tmp").glob("blob-*"))
    finally:
        registry.stop()


def test_login_logout_with_an_htpasswd_registry(env: dict[str, str], tmp_path: Path, busybox_tar: Path) -> None:
    work = tmp_path / "basic"
    registry = start_registry(work, auth=htpasswd_auth(work, {"alice": "wonderland"}))
    try:
        sy = sy_in(tmp_path / "state", env)
        name = f"{registry.host}/private/busybox:1"
        sy.run("import", str(busybox_tar), "-t", name)
        refused = sy.run("push", name, check=False)
        assert refused.returncode == 1 and f"{registry.host} requires a login" in refused.stderr
        bad = sy.run("login", "-u", "alice", "--password-stdin", registry.host, input="nope\n", check=False)
        assert bad.returncode == 1 and f"logging in to {registry.host}: 401" in bad.stderr
        ok = sy.run("login", "-u", "alice", "--password-stdin", registry.host, input="wonderland\n")
        assert "Login Succeeded" in ok.stdout
        config = json.loads((Path(env["DOCKER_CONFIG"]) / "config.json").read_text())
        assert registry.host in config["auths"]
        digest = sy.run("push", "-q", name).stdout.strip()
        assert digest.startswith("sha256:")
        assert f"Removing login credentials for {registry.host}" in sy.run("logout", registry.host).stdout
        assert "Not logged in" in sy.run("logout", registry.host).stdout
        assert "requires a login" in sy_in(tmp_path / "other", env).run("pull", name, check=False).stderr
    finally:
        registry.stop()


def test_a_push_killed_half_way_completes_when_repeated(
    registry: Registry, env: dict[str, str], tmp_path: Path, busybox_tar: Path
) -> None:
    proxy = FaultProxy(registry.host)
    proxy.stall_upload_after = 1 << 20
    try:
        sy = make_shipyard(tmp_path / "state", busybox_tar, "runc", env)
        ctx = write(tmp_path / "ctx" / "Dockerfile", "FROM busybox:local\nRUN head -c 6000000 /dev/urandom > /big\n").parent
        via_proxy, direct = f"{proxy.host}/killed/app:v1", f"{registry.host}/killed/app:v1"
        sy.build(ctx, "-t", via_proxy, "-t", direct)
        child = subprocess.Popen(
            [*SHIPYARD, "push", "--progress", "plain", via_proxy],
            env=dict(os.environ, SHIPYARD_ROOT=str(sy.root), **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            assert proxy.stalled.wait(60), "the upload never reached the proxy"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        with pytest.raises(AssertionError):
            skopeo("inspect", "--tls-verify=false", f"docker://{direct}")
        out = sy.run("push", direct).stdout
        digest = out.split("digest: ")[1].split()[0]
        assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{direct}"))["Digest"] == digest
        skopeo("copy", "--src-tls-verify=false", f"docker://{direct}", f"oci:{tmp_path / 'check'}:v1")
    finally:
        proxy.stop()
