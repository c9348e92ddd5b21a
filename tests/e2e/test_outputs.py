"""Build outputs read by real consumers: skopeo, umoci, docker load."""

from __future__ import annotations

import json
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, write

DOCKERFILE = """\
FROM busybox:local AS build
RUN mkdir -p /out && echo built > /out/artifact && echo gone > /out/tmpfile
RUN rm /out/tmpfile

FROM busybox:local
COPY --from=build /out/ /app/
RUN rm /etc/group && echo hello > /hello.txt
CMD ["cat", "/hello.txt"]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write(tmp_path / "ctx" / "Dockerfile", DOCKERFILE).parent


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc


def test_oci_layout_read_by_skopeo_and_unpacked_by_umoci(runc_shipyard: Shipyard, project: Path, tmp_path: Path) -> None:
    tar = tmp_path / "image.tar"
    layout = tmp_path / "layout"
    _, meta = runc_shipyard.build(project, "-t", "app:1.0", "--output", f"type=oci,dest={tar}")
    runc_shipyard.build(project, "-t", "app:1.0", "--output", f"type=oci,dest={layout},tar=false")
    raw = json.loads(_run("skopeo", "inspect", "--raw", f"oci-archive:{tar}:1.0").stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in raw["layers"])
    import hashlib

    manifest_bytes = _run("skopeo", "inspect", "--raw", f"oci:{layout}:1.0").stdout.encode()
    assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == meta["containerimage.digest"]
    config = json.loads(_run("skopeo", "inspect", "--config", f"oci:{layout}:1.0").stdout)
    assert config["config"]["Cmd"] == ["cat", "/hello.txt"]
    bundle = tmp_path / "bundle"
    _run("umoci", "unpack", "--image", f"{layout}:1.0", str(bundle))
    rootfs = bundle / "rootfs"
    assert (rootfs / "app" / "artifact").read_text() == "built\n"
    assert not (rootfs / "app" / "tmpfile").exists()  # deleted in a later layer of the build stage
    assert not (rootfs / "etc" / "group").exists()  # a whiteout applied by umoci
    assert (rootfs / "etc" / "passwd").exists()
    assert (rootfs / "hello.txt").read_text() == "hello\n"


def test_docker_archive_has_what_docker_load_reads(runc_shipyard: Shipyard, project: Path, tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    _, meta = runc_shipyard.build(project, "-t", "app:1.0", "--output", f"type=docker,dest={archive}")
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest[0]["RepoTags"] == ["app:1.0"]
        config = tar.extractfile(manifest[0]["Config"]).read()
        import hashlib

        assert "sha256:" + hashlib.sha256(config).hexdigest() == meta["containerimage.config.digest"]
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        assert len(diff_ids) == len(manifest[0]["Layers"])
        for name, diff_id in zip(manifest[0]["Layers"], diff_ids):
            data = tar.extractfile(name).read()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id  # uncompressed layer tars
            tarfile.open(fileobj=__import__("io").BytesIO(data)).getmembers()
    inspected = json.loads(_run("skopeo", "inspect", f"docker-archive:{archive}").stdout)
    assert inspected["Layers"] and inspected["Architecture"] == "amd64"


def test_docker_loads_and_runs_the_image(runc_shipyard: Shipyard, project: Path, tmp_path: Path) -> None:
    """docker 20.10 (started by scripts/services.sh) loads our archive and runs it."""
    docker = "/usr/bin/docker"
    info = subprocess.run([docker, "info"], capture_output=True, text=True)
    if info.returncode != 0:
        pytest.skip("no docker daemon on this machine (scripts/services.sh starts one)")
    tag = f"shipyard-e2e:{uuid.uuid4().hex[:10]}"
    archive = tmp_path / "image.tar"
    _, meta = runc_shipyard.build(project, "-t", tag, "--output", f"type=docker,dest={archive}")
    try:
        _run(docker, "load", "-i", str(archive))
        assert _run(docker, "run", "--rm", tag).stdout == "hello\n"
        assert _run(docker, "run", "--rm", tag, "cat", "/app/artifact").stdout == "built\n"
        image_id = _run(docker, "image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
        assert image_id == meta["containerimage.config.digest"]
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
