"""Image config / manifest / index JSON against what docker, BuildKit and skopeo write."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from engine.fs.layertar import write_layer_tar
from engine.oci import mediatypes
from engine.oci.image import (
    Descriptor,
    Healthcheck,
    HistoryEntry,
    Image,
    ImageConfig,
    ImageFormatError,
    Index,
    Manifest,
    Platform,
    Timestamp,
    go_json,
)

DOCKER = "/usr/bin/docker"
BASE = "busybox:local"


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:  # type: ignore[type-arg, no-untyped-def]
    result = subprocess.run(args, capture_output=True, timeout=180, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result


@pytest.fixture(scope="module")
def docker_ready(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The real daemon, with the busybox:local base image (imported from busybox-static if absent)."""
    info = subprocess.run([DOCKER, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.fail(f"the docker daemon must be running for this test: docker info says: {info.stderr.strip()}")
    if subprocess.run([DOCKER, "image", "inspect", BASE], capture_output=True).returncode == 0:
        return
    layer = tmp_path_factory.mktemp("busybox-import") / "layer.tar"
    with open(layer, "wb") as out:
        write_layer_tar(str(busybox_rootfs), out)
    _run(DOCKER, "import", "--change", 'CMD ["sh"]', str(layer), BASE)


# --------------------------------------------------------------------------- JSON and time basics


def test_go_json_escaping() -> None:
    assert go_json({"k": "<a>&\u2028\u2029é\x01\n\b\x7f\"\\"}) == (
        b'{"k":"\\u003ca\\u003e\\u0026\\u2028\\u2029\xc3\xa9\\u0001\\n\\b\x7f\\"\\\\"}'
    )
    assert go_json([1, True, None]) == b"[1,true,null]"


@pytest.mark.parametrize(
    "text, formatted",
    [
        ("2024-01-02T03:04:05.123456789Z", "2024-01-02T03:04:05.123456789Z"),
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
        ("2024-01-02T03:04:05.500000000Z", "2024-01-02T03:04:05.5Z"),
        ("2024-01-02T03:04:05.1234567891234Z", "2024-01-02T03:04:05.123456789Z"),
        ("2024-01-02T04:34:05.000000001+01:30", "2024-01-02T03:04:05.000000001Z"),
        ("2024-01-01T23:00:00-05:00", "2024-01-02T04:00:00Z"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
    ],
)
def test_timestamps_like_go(text: str, formatted: str) -> None:
    assert Timestamp.parse(text).format() == formatted


def test_timestamp_helpers() -> None:
    assert Timestamp.from_seconds(0).format() == "1970-01-01T00:00:00Z"
    late = Timestamp.parse("2030-01-01T00:00:00Z")
    epoch = Timestamp.from_seconds(1_700_000_000)
    assert late.clamp(epoch) == epoch and epoch.clamp(late) == epoch and late.clamp(None) == late
    for bad in ("2024-13-01T00:00:00Z", "2024-01-02 03:04:05Z", "yesterday", "2024-01-02T03:04:05"):
        with pytest.raises(ImageFormatError):
            Timestamp.parse(bad)


# --------------------------------------------------------------------------- omitempty


def test_empty_values_are_omitted_like_go() -> None:
    assert ImageConfig().to_dict() == {}
    assert ImageConfig(entrypoint=(), cmd=(), args_escaped=False).to_json() == b"{}"
    assert ImageConfig(healthcheck=Healthcheck()).to_json() == b'{"Healthcheck":{}}'
    assert HistoryEntry(empty_layer=False, created_by="").to_dict() == {}
    # config is a struct in Go: omitempty never drops it; rootfs has no omitempty
    assert Image().to_json() == (
        b'{"architecture":"amd64","config":{},"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    )


def test_full_config_field_order() -> None:
    config = ImageConfig(
        user="app",
        exposed_ports=("8080/tcp", "53/udp", "8080/tcp"),
        env=("B=2", "A=1"),
        entrypoint=("/bin/sh",),
        cmd=("-c", "x"),
        volumes=("/z", "/a"),
        working_dir="/w",
        labels={"z": "1", "a": "<2>"},  # type: ignore[arg-type]
        stop_signal="SIGINT",
        args_escaped=True,
        healthcheck=Healthcheck(test=("CMD", "true"), interval=5_000_000_000, retries=3),
        on_build=("RUN x",),
        shell=("/bin/bash", "-c"),
    )
    assert config.to_json() == (
        b'{"User":"app","ExposedPorts":{"53/udp":{},"8080/tcp":{}},"Env":["B=2","A=1"],'
        b'"Entrypoint":["/bin/sh"],"Cmd":["-c","x"],"Volumes":{"/a":{},"/z":{}},"WorkingDir":"/w",'
        b'"Labels":{"a":"\\u003c2\\u003e","z":"1"},"StopSignal":"SIGINT","ArgsEscaped":true,'
        b'"Healthcheck":{"Test":["CMD","true"],"Interval":5000000000,"Retries":3},'
        b'"OnBuild":["RUN x"],"Shell":["/bin/bash","-c"]}'
    )
    assert ImageConfig.from_json(config.to_json()) == config
    image = Image(
        created=Timestamp.parse("2024-05-06T07:08:09.1Z"),
        author="me",
        variant="v8",
        os_version="10.0",
        os_features=("win32k",),
        config=config,
        diff_ids=("sha256:" + "a" * 64,),
        history=(HistoryEntry(created=Timestamp.from_seconds(1), created_by="RUN x", author="a", comment="c", empty_layer=True),),
    )
    raw = image.to_json()
    assert list(json.loads(raw)) == sorted(json.loads(raw)), "top-level keys sorted, as BuildKit writes them"
    assert b'"history":[{"created":"1970-01-01T00:00:01Z","created_by":"RUN x","author":"a","comment":"c","empty_layer":true}]' in raw
    assert Image.from_json(raw) == image


def test_parsing_errors_are_clear() -> None:
    with pytest.raises(ImageFormatError, match=r"image config\.config\.Env: expected a list of strings"):
        Image.from_json(b'{"architecture":"amd64","os":"linux","config":{"Env":"A=1"}}')
    with pytest.raises(ImageFormatError, match="invalid JSON"):
        Image.from_json(b"{nope")
    with pytest.raises(ImageFormatError, match="diff_ids"):
        Image.from_json(b'{"rootfs":{"type":"layers","diff_ids":["sha256:short"]}}')
    with pytest.raises(ImageFormatError, match="schemaVersion"):
        Manifest.from_json(b'{"schemaVersion":1,"name":"x"}')
    with pytest.raises(ImageFormatError, match="index"):
        Manifest.from_json(Index(manifests=()).to_json())
    with pytest.raises(ImageFormatError, match="not an image manifest"):
        Manifest.from_json(b'{"schemaVersion":2,"manifests":[]}')
    with pytest.raises(ImageFormatError, match="size"):
        Manifest.from_json(b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:' + b"a" * 64 + b'","size":-1},"layers":[]}')


def test_go_case_insensitive_keys_and_nulls() -> None:
    image = Image.from_json(b'{"Architecture":"arm64","OS":"linux","config":{"user":"x","Env":null,"cmd":["a"]},"history":null}')
    assert (image.architecture, image.os, image.config.user, image.config.cmd, image.history) == ("arm64", "linux", "x", ("a",), ())


# --------------------------------------------------------------------------- against real tools


def test_docker_config_of_busybox_local(docker_ready: None) -> None:
    raw = _run("skopeo", "inspect", "--config", "--raw", f"docker-daemon:{BASE}").stdout.strip()
    image = Image.from_json(raw)
    original = json.loads(raw)
    assert image.config.cmd == tuple(original["config"]["Cmd"])
    assert image.diff_ids == tuple(original["rootfs"]["diff_ids"])
    assert image.created == Timestamp.parse(original["created"])
    # What BuildKit would write for it: Docker-only keys dropped, nulls omitted, keys sorted.
    ours = json.loads(image.to_json())
    assert "container_config" not in ours and "docker_version" not in ours
    assert ours["config"] == {k: v for k, v in original["config"].items() if k == "Cmd"}
    assert Image.from_json(image.to_json()) == image
    # docker inspect's Config (Docker's container.Config shape) parses to the same config
    inspected = json.loads(_run(DOCKER, "image", "inspect", BASE).stdout)[0]
    assert ImageConfig.from_json(json.dumps(inspected["Config"])) == image.config
    assert Timestamp.parse(inspected["Created"]) == image.created


DOCKERFILE = """\
FROM busybox:local
ENV A=b PATH=/usr/bin:/bin
LABEL x="<y>&z" b="é"
EXPOSE 80 53/udp
VOLUME /data
WORKDIR /w
USER 1000:1000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=2 CMD ["true"]
SHELL ["/bin/sh", "-c"]
ONBUILD RUN echo hi
ENTRYPOINT ["/bin/sh", "-c"]
"""
# No CMD and an ONBUILD on purpose: docker 20.10 embeds BuildKit 0.8, whose image struct
# differs from today's in two ways — CMD always sets ArgsEscaped (written after
# Healthcheck; today it follows StopSignal, from image-spec v1.1) and an empty OnBuild
# is written as null (today omitempty). Everything else is the same struct.


def test_buildkit_written_config_round_trips_byte_for_byte(docker_ready: None, tmp_path: Path) -> None:
    """docker's BuildKit writes the config; parsing and re-writing it gives the same bytes."""
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    tag = f"shipyard-test-image-json:{uuid.uuid4().hex[:12]}"
    _run(DOCKER, "build", "-q", "-t", tag, str(tmp_path), env={"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin"})
    try:
        raw = _run("skopeo", "inspect", "--config", "--raw", f"docker-daemon:{tag}").stdout.strip()
    finally:
        _run(DOCKER, "rmi", "-f", tag)
    image = Image.from_json(raw)
    assert image.config.healthcheck == Healthcheck(("CMD", "true"), 5_000_000_000, 3_000_000_000, 1_000_000_000, 0, 2)
    assert image.config.label("x") == "<y>&z" and image.config.shell == ("/bin/sh", "-c")
    assert image.config.on_build == ("RUN echo hi",) and image.config.cmd == ()
    assert [h.empty_layer for h in image.history].count(False) == len(image.diff_ids)
    assert image.to_json() == raw


def test_skopeo_written_oci_manifest_and_index_round_trip(docker_ready: None, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    _run("skopeo", "copy", "-q", f"docker-daemon:{BASE}", f"oci:{layout}:t")
    index_raw = (layout / "index.json").read_bytes().strip()
    index = Index.from_json(index_raw)
    assert index.to_json() == index_raw
    (entry,) = index.manifests
    assert entry.annotation(mediatypes.ANNOTATION_REF_NAME) == "t"
    manifest_raw = (layout / "blobs" / "sha256" / entry.digest.split(":")[1]).read_bytes()
    manifest = Manifest.from_json(manifest_raw)
    assert manifest.to_json() == manifest_raw
    assert manifest.media_type == mediatypes.OCI_MANIFEST
    assert mediatypes.layer_compression(manifest.layers[0].media_type) == "gzip"
    config_raw = (layout / "blobs" / "sha256" / manifest.config.digest.split(":")[1]).read_bytes()
    assert Image.from_json(config_raw).diff_ids == Image.from_json(
        _run("skopeo", "inspect", "--config", "--raw", f"docker-daemon:{BASE}").stdout
    ).diff_ids


def test_docker_schema2_manifest_parses(docker_ready: None) -> None:
    raw = _run("skopeo", "inspect", "--raw", f"docker-daemon:{BASE}").stdout
    manifest = Manifest.from_json(raw)
    assert manifest.media_type == mediatypes.DOCKER_MANIFEST
    assert manifest.config.media_type == mediatypes.DOCKER_CONFIG
    assert json.loads(manifest.to_json()) == json.loads(raw), "same document (field order is OCI's)"
    assert manifest.to_json().startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.docker')
    assert b'"digest":"sha256:' in manifest.to_json().split(b'"size"')[0]


def test_descriptor_and_index_fields() -> None:
    blob = b'{"a":1}'
    descriptor = Descriptor.of(
        mediatypes.OCI_MANIFEST,
        blob,
        annotations={"z": "1", "a": "2"},  # type: ignore[arg-type]
        platform=Platform("arm64", "linux", variant="v8"),
    )
    index = Index(manifests=(descriptor,), annotations=(("k", "v"),))
    raw = index.to_json()
    assert raw == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":'
        b'"application/vnd.oci.image.manifest.v1+json","digest":"' + descriptor.digest.encode() + b'","size":7,'
        b'"annotations":{"a":"2","z":"1"},"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}],'
        b'"annotations":{"k":"v"}}'
    )
    assert Index.from_json(raw) == index
    assert str(descriptor.platform) == "linux/arm64/v8"
    assert mediatypes.layer_media_type("gzip", oci=False) == mediatypes.DOCKER_LAYER_GZIP
    assert mediatypes.layer_media_type("zstd", oci=False) == mediatypes.OCI_LAYER_ZSTD
    assert mediatypes.is_index(mediatypes.DOCKER_MANIFEST_LIST) and not mediatypes.is_manifest(mediatypes.OCI_INDEX)
