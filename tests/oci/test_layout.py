"""OCI layouts and docker archives, read back by skopeo, umoci and the real docker daemon."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from engine.errors import ExportError
from engine.fs.layertar import write_layer_tar
from engine.oci import mediatypes
from engine.oci.compress import compressor
from engine.oci.image import Descriptor, HistoryEntry, Image, ImageConfig, Manifest, Timestamp
from engine.oci.layout import ExportImage, write_docker_archive, write_oci_layout

DOCKER = "/usr/bin/docker"
HELLO = "hello from a shipyard layout\n"


class StoreBlobs:
    """Blobs as files named by digest: a real BlobSource (no content store needed here)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, data_path: Path) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data_path.read_bytes()).hexdigest()
        shutil.copy(data_path, self.root / digest.split(":")[1])
        return digest, data_path.stat().st_size

    def open_blob(self, digest: str) -> BinaryIO:
        return open(self.root / digest.split(":")[1], "rb")


class CorruptBlobs(StoreBlobs):
    """Serves wrong bytes for one digest (a damaged store)."""

    def __init__(self, root: Path, bad: str) -> None:
        super().__init__(root)
        self.bad = bad

    def open_blob(self, digest: str) -> BinaryIO:
        if digest == self.bad:
            data = bytearray(super().open_blob(digest).read())
            data[-100] ^= 0xFF
            return io.BytesIO(bytes(data))
        return super().open_blob(digest)


@dataclass(frozen=True)
class Built:
    blobs: StoreBlobs
    oci: ExportImage
    docker: ExportImage
    docker_uncompressed: ExportImage
    config: Image


def _layer(blobs: StoreBlobs, layer_dir: Path, work: Path, compression: str, whiteouts: str) -> tuple[Descriptor, str]:
    tar_path = work / f"{layer_dir.name}.tar"
    with open(tar_path, "wb") as out:
        write_layer_tar(str(layer_dir), out, whiteouts=whiteouts, source_date_epoch=0)  # type: ignore[arg-type]
    diff_id = "sha256:" + hashlib.sha256(tar_path.read_bytes()).hexdigest()
    blob_path = tar_path
    if compression == "gzip":
        blob_path = work / f"{layer_dir.name}.tar.gz"
        with open(tar_path, "rb") as src, open(blob_path, "wb") as out:
            writer = compressor("gzip", out)
            shutil.copyfileobj(src, writer)
            writer.close()
    digest, size = blobs.add(blob_path)
    return Descriptor("", digest, size), diff_id


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Built:
    work = tmp_path_factory.mktemp("layout-image")
    blobs = StoreBlobs(work / "store")
    base = work / "base"
    shutil.copytree(busybox_rootfs, base, symlinks=True)
    (base / "hello.txt").write_text(HELLO)
    (base / "doomed.txt").write_text("deleted by the second layer")
    top = work / "top"  # an OCI-form layer dir: deletes doomed.txt, adds /extra
    top.mkdir()
    (top / ".wh.doomed.txt").write_text("")
    (top / "extra").write_text("extra\n")

    config_for: dict[str, bytes] = {}

    def image(oci: bool, compression: str) -> ExportImage:
        layers, diff_ids = [], []
        for layer_dir, whiteouts in ((base, "overlay"), (top, "oci")):
            descriptor, diff_id = _layer(blobs, layer_dir, work, compression, whiteouts)
            media = mediatypes.layer_media_type(compression, oci=oci)  # type: ignore[arg-type]
            layers.append(Descriptor(media, descriptor.digest, descriptor.size))
            diff_ids.append(diff_id)
        created = Timestamp.from_seconds(0)
        config = Image(
            created=created,
            config=ImageConfig(env=("PATH=/bin:/usr/bin",), cmd=("sh",), working_dir="/"),
            diff_ids=tuple(diff_ids),
            history=(HistoryEntry(created=created, created_by="busybox"), HistoryEntry(created=created, created_by="top")),
        ).to_json()
        manifest = Manifest(
            config=Descriptor.of(mediatypes.config_media_type(oci=oci), config),
            layers=tuple(layers),
            media_type=mediatypes.manifest_media_type(oci=oci),
        ).to_json()
        config_for[compression] = config
        return ExportImage(manifest=manifest, config=config)

    oci = image(True, "gzip")
    docker = image(False, "gzip")
    docker_uncompressed = image(False, "uncompressed")
    return Built(blobs, oci, docker, docker_uncompressed, Image.from_json(config_for["gzip"]))


def _named(image: ExportImage, *names: str) -> ExportImage:
    return ExportImage(image.manifest, image.config, names)


def _run(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result


def _leftovers(parent: Path) -> list[str]:
    return [name for name in os.listdir(parent) if name.endswith((".tmp", ".old"))]


# --------------------------------------------------------------------------- OCI layout


def test_oci_layout_directory_for_skopeo_and_umoci(built: Built, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(str(layout), [_named(built.oci, "busybox-test:v1")], built.blobs, as_tar=False)
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    assert index["mediaType"] == mediatypes.OCI_INDEX
    assert entry["annotations"] == {
        "io.containerd.image.name": "docker.io/library/busybox-test:v1",
        "org.opencontainers.image.ref.name": "v1",
    }
    assert entry["digest"] == "sha256:" + hashlib.sha256(built.oci.manifest).hexdigest()
    assert _run("skopeo", "inspect", "--raw", f"oci:{layout}:v1").stdout.encode() == built.oci.manifest
    assert _run("skopeo", "inspect", "--config", "--raw", f"oci:{layout}:v1").stdout.encode().strip() == built.oci.config
    bundle = tmp_path / "bundle"
    _run("umoci", "unpack", "--image", f"{layout}:v1", str(bundle))
    rootfs = bundle / "rootfs"
    assert (rootfs / "hello.txt").read_text() == HELLO
    assert (rootfs / "extra").read_text() == "extra\n"
    assert not (rootfs / "doomed.txt").exists(), "umoci applied our whiteout"
    assert (rootfs / "bin" / "busybox").is_file() and os.readlink(rootfs / "bin" / "sh") == "/bin/busybox"
    assert json.loads((bundle / "config.json").read_text())["process"]["args"] == ["sh"]


def test_oci_layout_tar_is_deterministic_and_read_by_skopeo(built: Built, tmp_path: Path) -> None:
    first, second = tmp_path / "one.tar", tmp_path / "two.tar"
    images = [_named(built.oci, "busybox-test:v1", "localhost:5000/team/app:2.0")]
    write_oci_layout(str(first), images, built.blobs, as_tar=True)
    write_oci_layout(str(second), images, built.blobs, as_tar=True)
    assert first.read_bytes() == second.read_bytes()
    assert _run("skopeo", "inspect", "--raw", f"oci-archive:{first}:v1").stdout.encode() == built.oci.manifest
    assert _run("skopeo", "inspect", "--raw", f"oci-archive:{first}:2.0").stdout.encode() == built.oci.manifest
    with tarfile.open(first) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert names[:2] == ["blobs", "blobs/sha256"] and names[-2:] == ["index.json", "oci-layout"]
    assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == [
        "docker.io/library/busybox-test:v1",
        "localhost:5000/team/app:2.0",
    ]
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- docker archive


def test_docker_archive_for_skopeo(built: Built, tmp_path: Path) -> None:
    for image in (built.docker, built.docker_uncompressed):
        archive = tmp_path / "docker.tar"
        write_docker_archive(str(archive), [_named(image, "busybox", "reg.example.com:5000/team/app:1.0")], built.blobs)
        with tarfile.open(archive) as tar:
            manifest_json = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            names = set(tar.getnames())
        (entry,) = manifest_json
        assert entry["RepoTags"] == ["busybox:latest", "reg.example.com:5000/team/app:1.0"]
        assert entry["Config"] == "blobs/sha256/" + hashlib.sha256(image.config).hexdigest()
        assert set(entry["Layers"]) | {entry["Config"], "index.json", "oci-layout"} <= names
        inspected = json.loads(_run("skopeo", "inspect", f"docker-archive:{archive}").stdout)
        assert len(inspected["Layers"]) == 2
        assert inspected["Env"] == ["PATH=/bin:/usr/bin"]
        config = _run("skopeo", "inspect", "--config", "--raw", f"docker-archive:{archive}").stdout.encode().strip()
        assert config == image.config


def test_docker_load_and_run(built: Built, tmp_path: Path) -> None:
    info = subprocess.run([DOCKER, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.fail(f"docker daemon unusable ({DOCKER} info failed): {info.stderr.strip() or info.stdout.strip()}")
    tag = f"shipyard-layout-test:{uuid.uuid4().hex[:12]}"
    archive = tmp_path / "docker.tar"
    write_docker_archive(str(archive), [_named(built.docker, tag)], built.blobs)
    loaded = _run(DOCKER, "load", "-i", str(archive))
    try:
        assert f"Loaded image: {tag}" in loaded.stdout
        assert _run(DOCKER, "run", "--rm", tag, "cat", "/hello.txt").stdout == HELLO
        assert _run(DOCKER, "run", "--rm", tag, "sh", "-c", "test ! -e /doomed.txt && cat /extra").stdout == "extra\n"
        image_id = _run(DOCKER, "image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
        assert image_id == "sha256:" + hashlib.sha256(built.docker.config).hexdigest()
    finally:
        subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True, timeout=120)


# --------------------------------------------------------------------------- failures


def test_corrupt_blob_leaves_nothing_behind(built: Built, tmp_path: Path) -> None:
    bad_layer = Manifest.from_json(built.oci.manifest).layers[1].digest
    corrupt = CorruptBlobs(built.blobs.root, bad_layer)
    image = [_named(built.oci, "x:1")]
    for as_tar in (True, False):
        dest = tmp_path / ("out.tar" if as_tar else "out")
        with pytest.raises(ExportError, match=bad_layer):
            write_oci_layout(str(dest), image, corrupt, as_tar=as_tar)
        assert not dest.exists()
        assert _leftovers(tmp_path) == []
    with pytest.raises(ExportError, match=bad_layer):
        write_docker_archive(str(tmp_path / "d.tar"), image, corrupt)
    assert not (tmp_path / "d.tar").exists()
    # an earlier good export stays as it was
    good = tmp_path / "good"
    write_oci_layout(str(good), image, built.blobs, as_tar=False)
    before = (good / "index.json").read_bytes()
    with pytest.raises(ExportError):
        write_oci_layout(str(good), [_named(built.oci, "y:2")], corrupt, as_tar=False)
    assert (good / "index.json").read_bytes() == before
    # and a good export replaces it
    write_oci_layout(str(good), [_named(built.oci, "y:2")], built.blobs, as_tar=False)
    assert b'"y:2"' not in before and b"docker.io/library/y:2" in (good / "index.json").read_bytes()
    assert _leftovers(tmp_path) == []


def test_refuses_to_replace_a_directory_that_is_not_a_layout(built: Built, tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ExportError, match="not an OCI layout"):
        write_oci_layout(str(precious), [built.oci], built.blobs, as_tar=False)
    assert (precious / "thesis.tex").read_text() == "years of work"
    with pytest.raises(ExportError, match="is a directory"):
        write_docker_archive(str(precious), [built.docker], built.blobs)


def test_inconsistent_images_are_refused(built: Built, tmp_path: Path) -> None:
    wrong_config = ExportImage(built.oci.manifest, built.oci.config + b" ", ())
    with pytest.raises(ExportError, match="config"):
        write_oci_layout(str(tmp_path / "a"), [wrong_config], built.blobs, as_tar=False)
    with pytest.raises(ExportError, match="needs a tag"):
        write_oci_layout(str(tmp_path / "a"), [_named(built.oci, "x@sha256:" + "a" * 64)], built.blobs, as_tar=False)
    with pytest.raises(ExportError, match="invalid image name"):
        write_oci_layout(str(tmp_path / "a"), [_named(built.oci, "UPPER/Case")], built.blobs, as_tar=False)
    manifest = Manifest.from_json(built.docker.manifest)
    zstd = Manifest(
        config=manifest.config,
        layers=tuple(Descriptor(mediatypes.OCI_LAYER_ZSTD, layer.digest, layer.size) for layer in manifest.layers),
        media_type=manifest.media_type,
    )
    with pytest.raises(ExportError, match="zstd"):
        write_docker_archive(str(tmp_path / "z.tar"), [ExportImage(zstd.to_json(), built.docker.config)], built.blobs)
    one_layer = Manifest(config=manifest.config, layers=manifest.layers[:1], media_type=manifest.media_type)
    with pytest.raises(ExportError, match="2 diff_ids but the manifest has 1"):
        write_docker_archive(str(tmp_path / "n.tar"), [ExportImage(one_layer.to_json(), built.docker.config)], built.blobs)
    with pytest.raises(ExportError, match="no images"):
        write_oci_layout(str(tmp_path / "e"), [], built.blobs, as_tar=True)
    assert not any(tmp_path.iterdir())
