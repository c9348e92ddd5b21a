"""save / load with real archives: Shipyard's own, `docker save`'s, skopeo's, hostile ones."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import SHIPYARD, Shipyard, write

APP = 'FROM busybox:local\nRUN echo saved > /saved.txt\nCMD ["cat", "/saved.txt"]\n'


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc


def _raw(sy: Shipyard, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """The CLI with binary stdin/stdout (for `save` to stdout and `load` from stdin)."""
    env = dict(os.environ, SHIPYARD_ROOT=str(sy.root), SHIPYARD_RUNTIME=sy.runtime)
    kwargs.setdefault("capture_output", True)
    return subprocess.run(SHIPYARD + list(args), env=env, timeout=120, **kwargs)


def _docker() -> str:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no docker daemon is running (scripts/services.sh starts one)")
    return docker


def _inspect(sy: Shipyard, ref: str) -> dict:
    return json.loads(sy.run("inspect", ref).stdout)[0]


def _read_local(sy: Shipyard, tmp_path: Path, dockerfile: str, path: str) -> str:
    """Build `dockerfile` and return the content of `path` in the result."""
    ctx = write(tmp_path / f"ctx-{uuid.uuid4().hex[:6]}" / "Dockerfile", dockerfile).parent
    out = ctx.parent / (ctx.name + "-out")
    sy.build(ctx, "--output", f"type=local,dest={out}")
    return (out / path.lstrip("/")).read_text()


def test_save_then_load_round_trips_byte_for_byte(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    sy = runc_shipyard
    _, meta = sy.build(write(tmp_path / "ctx" / "Dockerfile", APP).parent, "-t", "app:1")
    original = _inspect(sy, "app:1")
    archive = tmp_path / "app.tar"
    sy.run("save", "-o", str(archive), "app:1", "busybox:local")

    fresh = Shipyard(tmp_path / "fresh", "runc")
    assert fresh.run("load", "-i", str(archive)).stdout == "Loaded image: app:1\nLoaded image: busybox:local\n"
    loaded = _inspect(fresh, "app:1")
    assert loaded["Descriptor"]["digest"] == meta["containerimage.digest"]
    assert loaded["Id"] == meta["containerimage.config.digest"] == original["Id"]
    assert loaded["RootFS"] == original["RootFS"]
    again = tmp_path / "again.tar"
    fresh.run("save", "-o", str(again), "app:1", "busybox:local")
    assert again.read_bytes() == archive.read_bytes()
    child = 'FROM app:1\nRUN cat /saved.txt /saved.txt > /twice.txt\n'
    assert _read_local(fresh, tmp_path, child, "/twice.txt") == "saved\nsaved\n"

    # OCI layout tar through stdout and stdin, into a third state directory
    oci = _raw(sy, "save", "--format", "oci", "app")  # a repository name: all its tags
    assert oci.returncode == 0, oci.stderr
    with tarfile.open(fileobj=io.BytesIO(oci.stdout)) as tar:
        index = json.load(tar.extractfile("index.json"))
        assert "manifest.json" not in tar.getnames()
    assert [m["digest"] for m in index["manifests"]] == [meta["containerimage.digest"]]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1"
    third = Shipyard(tmp_path / "third", "runc")
    proc = _raw(third, "load", input=oci.stdout)
    assert proc.returncode == 0 and proc.stdout == b"Loaded image: app:1\n", proc.stderr
    assert _inspect(third, "app:1")["Descriptor"]["digest"] == meta["containerimage.digest"]


def test_docker_save_archive_loads_and_builds(runc_shipyard: Shipyard, busybox_tar: Path, tmp_path: Path) -> None:
    docker = _docker()
    repo = f"shipyard-e2e-{uuid.uuid4().hex[:10]}"
    try:
        _run(docker, "import", str(busybox_tar), f"{repo}:base")
        dockerfile = f'FROM {repo}:base\nRUN echo from-docker > /d.txt\nCMD ["cat", "/d.txt"]\n'
        _run(docker, "build", "-q", "-t", f"{repo}:child", "-", input=dockerfile, env=dict(os.environ, DOCKER_BUILDKIT="0"))
        archive = tmp_path / "docker.tar"
        _run(docker, "save", "-o", str(archive), f"{repo}:child", f"{repo}:base")
        ids = _run(docker, "inspect", "-f", "{{.Id}}", f"{repo}:child", f"{repo}:base").stdout.split()
    finally:
        subprocess.run([docker, "rmi", "-f", f"{repo}:child", f"{repo}:base"], capture_output=True)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert "manifest.json" in names and "index.json" not in names  # docker 20.10's legacy layout
        assert any(m.issym() and m.name.endswith("/layer.tar") for m in tar.getmembers())  # the shared base layer

    loaded = runc_shipyard.run("load", "-i", str(archive)).stdout
    # in manifest.json's order, which docker 20.10 does not keep stable across saves
    assert sorted(loaded.splitlines()) == [f"Loaded image: {repo}:base", f"Loaded image: {repo}:child"]
    assert [_inspect(runc_shipyard, f"{repo}:{t}")["Id"] for t in ("child", "base")] == ids
    assert _read_local(runc_shipyard, tmp_path, f"FROM {repo}:child\nRUN cp /d.txt /e.txt\n", "/e.txt") == "from-docker\n"
    # the same archive again: nothing changes, the images are the same ones
    assert runc_shipyard.run("load", "-i", str(archive)).stdout == loaded


def test_skopeo_oci_archive_loads(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    sy = runc_shipyard
    saved = tmp_path / "busybox.tar"
    sy.run("save", "-o", str(saved), "busybox:local")
    named, bare = tmp_path / "named.tar", tmp_path / "bare.tar"
    _run("skopeo", "copy", "-q", f"docker-archive:{saved}", f"oci-archive:{named}:skopeo/img:1")
    _run("skopeo", "copy", "-q", f"docker-archive:{saved}", f"oci-archive:{bare}:latest")
    manifest = _run("skopeo", "inspect", "--raw", f"oci-archive:{named}:skopeo/img:1").stdout.encode()

    fresh = Shipyard(tmp_path / "fresh", "runc")
    assert fresh.run("load", "-i", str(named)).stdout == "Loaded image: skopeo/img:1\n"
    info = _inspect(fresh, "skopeo/img:1")
    assert info["Descriptor"]["digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert info["RootFS"] == _inspect(sy, "busybox:local")["RootFS"]

    other = Shipyard(tmp_path / "other", "runc")
    out = other.run("load", "-i", str(bare)).stdout  # `latest` alone is no image name
    assert out == f"Loaded image ID: {info['Id']}\n"
    listing = other.run("images").stdout.splitlines()
    assert listing[1].split()[:3] == ["<none>", "<none>", info["Id"][7:19]]
    other.run("tag", info["Id"][7:19], "named:1")
    assert [line.split()[0] for line in other.run("images").stdout.splitlines()[1:]] == ["named"]


def test_saved_image_loads_and_runs_in_docker(runc_shipyard: Shipyard, tmp_path: Path) -> None:
    docker = _docker()
    sy = runc_shipyard
    name = f"shipyard-e2e-{uuid.uuid4().hex[:10]}:1"
    _, meta = sy.build(write(tmp_path / "ctx" / "Dockerfile", APP).parent, "-t", name)
    archive = tmp_path / "for-docker.tar"
    sy.run("save", "-o", str(archive), name)
    try:
        assert f"Loaded image: {name}" in _run(docker, "load", "-i", str(archive)).stdout
        assert _run(docker, "run", "--rm", name).stdout == "saved\n"
        assert _run(docker, "inspect", "-f", "{{.Id}}", name).stdout.strip() == meta["containerimage.config.digest"]
    finally:
        subprocess.run([docker, "rmi", "-f", name], capture_output=True)


def _tar(path: Path, members: list[tuple[str, bytes | None, str]]) -> Path:
    """(name, data or None for a symlink, link target)."""
    with tarfile.open(path, "w") as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"") for p in sorted(root.rglob("*"))}


def test_hostile_and_foreign_archives_are_refused(runc_shipyard: Shipyard, busybox_tar: Path, tmp_path: Path) -> None:
    sy = runc_shipyard
    host = tmp_path / "host"
    (host / "victim").mkdir(parents=True)
    (host / "secret.txt").write_text("keep out\n")
    before = _tree(host)
    saved = tmp_path / "good.tar"
    sy.run("save", "-o", str(saved), "busybox:local")
    with tarfile.open(saved) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(tampered, "w") as tar:
        for member, data in members:
            if data is not None and member.size > 100_000:  # the layer: same size, one byte changed
                data = data[:-600] + bytes([data[-600] ^ 1]) + data[-599:]
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    slip = json.dumps([{"Config": "c.json", "RepoTags": ["slip:1"], "Layers": ["../../host/victim/layer.tar"]}]).encode()
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(os.urandom(4096))
    cases = {
        _tar(tmp_path / "dotdot.tar", [("manifest.json", b"[]", ""), (f"../../{host.name}/victim/pwn", b"x", "")]): 'has a ".." path component',
        _tar(tmp_path / "absolute.tar", [(str(host / "victim" / "pwn"), b"x", "")]): "has an absolute path",
        _tar(tmp_path / "link.tar", [("index.json", None, str(host / "secret.txt"))]): "outside the archive",
        _tar(tmp_path / "slip.tar", [("manifest.json", slip, ""), ("c.json", b"{}", "")]): "leads outside the archive",
        busybox_tar: "not an image archive",
        garbage: "not a readable tar archive",
        tampered: "digest mismatch",
    }
    fresh = Shipyard(tmp_path / "fresh", "runc")  # holds none of the layers: every blob is read
    for archive, message in cases.items():
        proc = fresh.run("load", "-i", str(archive), check=False)
        assert proc.returncode != 0 and message in proc.stderr, (archive.name, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert _tree(host) == before
    assert fresh.run("images", "-q").stdout == ""
    assert list((fresh.root / "tmp").iterdir()) == []


def test_save_and_load_refuse_a_terminal(runc_shipyard: Shipyard) -> None:
    primary, secondary = pty.openpty()
    try:
        save = _raw(runc_shipyard, "save", "busybox:local", stdout=secondary, stderr=subprocess.PIPE, capture_output=False)
        assert save.returncode == 2 and b"cowardly refusing to save to a terminal" in save.stderr
        load = _raw(runc_shipyard, "load", stdin=secondary, capture_output=True)
        assert load.returncode == 2 and b"stdin is a terminal" in load.stderr
    finally:
        os.close(primary)
        os.close(secondary)
