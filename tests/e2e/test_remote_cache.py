"""Remote build cache: one state dir exports, a fresh one imports and runs nothing.

Real parts: real builds with runc, a real `docker-registry` on 127.0.0.1, OCI layout
directories on disk. The base image comes from an OCI layout through a named context
(`--build-context base=oci-layout://…`), so both state dirs resolve the very same
base manifest, as two CI machines pulling one tag would. State dir B builds from a
copy of the context at another path: cache keys must not depend on where it lives.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import Shipyard, make_shipyard, write
from tests.helpers import require_root

DOCKERFILE = """\
FROM base AS builder
COPY app/ /src/
RUN cat /src/*.txt > /built.txt && echo built >> /built.txt

FROM base AS other
RUN echo other > /other.txt

FROM base
COPY --from=builder /built.txt /final/built.txt
COPY --from=other /other.txt /final/other.txt
RUN ls /final > /final/list.txt
"""

# The same build with one new step early in the final stage: everything after it
# misses, so the intermediate stages are needed again.
CHANGED = DOCKERFILE.replace("FROM base\nCOPY --from", "FROM base\nRUN echo changed > /changed\nCOPY --from")

BUILDER_RUN = "[builder 3/3] RUN cat /src/*.txt > /built.txt && echo built >> /built.txt"
OTHER_RUN = "[other 2/2] RUN echo other > /other.txt"
FINAL_RUN = "[stage-2 4/4] RUN ls /final > /final/list.txt"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base_layout(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    """busybox as an OCI layout, made once: the shared base image of every build here."""
    work = tmp_path_factory.mktemp("base")
    sy = make_shipyard(work / "state", busybox_tar, "runc")
    ctx = write(work / "ctx" / "Dockerfile", "FROM busybox:local\n").parent
    layout = work / "layout"
    sy.build(ctx, "-o", f"type=oci,dest={layout},tar=false")
    return layout


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real distribution registry on a free loopback port; yields HOST:PORT."""
    require_root()
    work = tmp_path_factory.mktemp("registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = work / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(work / "log", "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError("docker-registry did not start:\n" + (work / "log").read_text())
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No user config or credentials leak into the tests."""
    (tmp_path / "shipyard.toml").write_text("")
    (tmp_path / "docker").mkdir()
    return {"SHIPYARD_CONFIG": str(tmp_path / "shipyard.toml"), "DOCKER_CONFIG": str(tmp_path / "docker")}


def _project(where: Path, dockerfile: str = DOCKERFILE) -> Path:
    write(where / "Dockerfile", dockerfile)
    write(where / "app" / "a.txt", "hello\n")
    write(where / "app" / "b.txt", "world\n")
    return where


def _state(tmp_path: Path, name: str, env: dict[str, str]) -> Shipyard:
    require_root()
    return Shipyard(tmp_path / name, "runc", env)


def _build(sy: Shipyard, ctx: Path, layout: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    return sy.build(ctx, "--build-context", f"base=oci-layout://{layout}", *extra)


def _steps(meta: dict) -> dict[str, dict]:
    return {s["name"]: s for s in meta["shipyard.steps"]}


def _executed(meta: dict) -> list[str]:
    return [s["name"] for s in meta["shipyard.steps"] if not s["cached"]]


def _cache_config(layout: Path, tag: str = "latest") -> dict:
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag)
    manifest = json.loads((layout / "blobs" / "sha256" / entry["digest"][7:]).read_text())
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.shipyard.cacheconfig.v0+json"
    return json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())


def _record_blobs(config: dict, key: str) -> list[str]:
    """The blobs of the chain a cache config records for `key`, bottom first."""
    top = next(r.get("layer", -1) for r in config["records"] if r["key"] == key)
    chain = []
    while top >= 0:
        chain.append(config["layers"][top]["blob"])
        top = config["layers"][top]["parent"]
    return chain[::-1]


def _stored(sy: Shipyard, digest: str) -> bool:
    return (sy.root / "blobs" / "sha256" / digest[7:]).exists()


# --------------------------------------------------------------------------- tests


def test_local_cache_max_gives_fresh_state_an_all_cached_build(tmp_path: Path, base_layout: Path, env: dict[str, str]) -> None:
    a, b = _state(tmp_path, "A", env), _state(tmp_path, "B", env)
    ctx = _project(tmp_path / "ctx")
    cache = tmp_path / "cache"
    _, first = _build(a, ctx, base_layout, "-t", "app:1")
    assert BUILDER_RUN in _executed(first)
    # a fully cached rebuild (the whole-build memo would answer it) still exports every record
    _, meta_a = _build(a, ctx, base_layout, "-t", "app:1", "--cache-to", f"type=local,dest={cache},mode=max")
    assert _executed(meta_a) == []
    config = _cache_config(cache)
    keys_a = {s["name"]: s["cache_key"] for s in meta_a["shipyard.steps"]}
    recorded = {r["key"] for r in config["records"]}
    assert {keys_a[BUILDER_RUN], keys_a[OTHER_RUN], keys_a[FINAL_RUN]} <= recorded

    ctx_b = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(ctx, ctx_b)
    proc, meta_b = _build(b, ctx_b, base_layout, "-t", "app:1", "--cache-from", f"type=local,src={cache}")
    assert _executed(meta_b) == [], proc.stderr
    assert "importing cache from local:" in proc.stderr
    steps_b = _steps(meta_b)
    assert {n: s["cache_key"] for n, s in steps_b.items()} == keys_a  # keys do not depend on the context's path
    assert steps_b[FINAL_RUN]["cache_source"] == f"local:{cache}"
    assert steps_b[BUILDER_RUN]["cache_source"] == "skipped"  # below a hit: never fetched
    assert meta_b["containerimage.digest"] == meta_a["containerimage.digest"]
    assert meta_b["containerimage.config.digest"] == meta_a["containerimage.config.digest"]
    # lazily: only the final result's layers were fetched, not the builder stage's
    final_blobs = set(_record_blobs(config, keys_a[FINAL_RUN]))
    builder_only = set(_record_blobs(config, keys_a[BUILDER_RUN])) - final_blobs
    assert builder_only and not any(_stored(b, d) for d in builder_only)
    assert all(_stored(b, d) for d in final_blobs)

    out = tmp_path / "out"
    _, again = _build(b, ctx_b, base_layout, "-o", f"type=local,dest={out}")
    assert _executed(again) == [] and _steps(again)[FINAL_RUN]["cache_source"] == "state"  # now a local hit
    assert (out / "final" / "built.txt").read_text() == "hello\nworld\nbuilt\n"
    assert (out / "final" / "list.txt").read_text() == "built.txt\nlist.txt\nother.txt\n"


def test_mode_min_exports_only_the_final_stage(tmp_path: Path, base_layout: Path, env: dict[str, str]) -> None:
    a = _state(tmp_path, "A", env)
    ctx = _project(tmp_path / "ctx")
    _, meta = _build(
        a, ctx, base_layout,
        "--cache-to", f"type=local,dest={tmp_path / 'min'}",  # mode=min is the default
        "--cache-to", f"type=local,dest={tmp_path / 'max'},mode=max",
    )
    keys = {s["name"]: s["cache_key"] for s in meta["shipyard.steps"]}
    in_min = {r["key"] for r in _cache_config(tmp_path / "min")["records"]}
    in_max = {r["key"] for r in _cache_config(tmp_path / "max")["records"]}
    assert keys[FINAL_RUN] in in_min and keys[FINAL_RUN] in in_max
    assert keys[BUILDER_RUN] not in in_min and keys[BUILDER_RUN] in in_max

    changed = _project(tmp_path / "changed", CHANGED)
    for mode in ("min", "max"):
        fresh = _state(tmp_path, f"fresh-{mode}", env)
        proc, meta = _build(fresh, changed, base_layout, "--cache-from", f"type=local,src={tmp_path / mode}")
        executed = _executed(meta)
        assert "[stage-2 2/5] RUN echo changed > /changed" in executed, proc.stderr
        if mode == "max":  # the intermediate stages come from the cache
            assert BUILDER_RUN not in executed and OTHER_RUN not in executed
            assert _steps(meta)[BUILDER_RUN]["cache_source"] == f"local:{tmp_path / 'max'}"
        else:
            assert BUILDER_RUN in executed and OTHER_RUN in executed


def test_same_content_from_a_changed_stage_hits_the_imported_cache(tmp_path: Path, base_layout: Path, env: dict[str, str]) -> None:
    """A COPY --from whose source stage re-ran and produced the same file: its content key hits remotely."""
    a, b = _state(tmp_path, "A", env), _state(tmp_path, "B", env)
    cache = tmp_path / "cache"
    _build(a, _project(tmp_path / "ctx"), base_layout, "--cache-to", f"type=local,dest={cache},mode=max")
    same_output = DOCKERFILE.replace("echo built >> /built.txt", "echo built >> /built.txt && true")
    proc, meta = _build(b, _project(tmp_path / "ctx2", same_output), base_layout, "--cache-from", f"type=local,src={cache}")
    steps = _steps(meta)
    assert not steps[BUILDER_RUN + " && true"]["cached"], proc.stderr
    copy = steps["[stage-2 2/4] COPY --from=builder /built.txt /final/built.txt"]
    assert copy["cached"] and copy["cache_source"] == f"local:{cache}", proc.stderr
    assert steps["[builder 2/3] COPY app/ /src/"]["cache_source"] == f"local:{cache}"


def test_registry_cache(tmp_path: Path, base_layout: Path, env: dict[str, str], registry: str) -> None:
    a, b = _state(tmp_path, "A", env), _state(tmp_path, "B", env)
    ctx = _project(tmp_path / "ctx")
    ref = f"{registry}/team/app:buildcache"
    proc, meta_a = _build(a, ctx, base_layout, "--cache-to", f"type=registry,ref={ref},mode=max")
    assert f"exporting cache to registry:{ref} done" in proc.stderr
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True, text=True, check=True
    ).stdout
    manifest = json.loads(raw)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"  # what ECR-like registries accept
    assert manifest["config"]["mediaType"] == "application/vnd.shipyard.cacheconfig.v0+json"

    proc, meta_b = _build(b, _project(tmp_path / "other-checkout"), base_layout, "--cache-from", f"type=registry,ref={ref}")
    assert _executed(meta_b) == [], proc.stderr
    assert _steps(meta_b)[FINAL_RUN]["cache_source"] == f"registry:{ref}"
    assert meta_b["containerimage.digest"] == meta_a["containerimage.digest"]

    # buildx's short form, and a re-export from B: the cache stays complete
    again = f"{registry}/team/app:again"
    _, meta_c = _build(b, ctx, base_layout, "--cache-from", ref, "--cache-to", f"type=registry,ref={again},mode=max")
    c = _state(tmp_path, "C", env)
    _, meta_c = _build(c, _project(tmp_path / "third", CHANGED), base_layout, "--cache-from", again)
    assert BUILDER_RUN not in _executed(meta_c) and OTHER_RUN not in _executed(meta_c)


def test_inline_cache_from_an_oci_layout(tmp_path: Path, base_layout: Path, env: dict[str, str]) -> None:
    a, b = _state(tmp_path, "A", env), _state(tmp_path, "B", env)
    ctx = _project(tmp_path / "ctx")
    image, archive = tmp_path / "image", tmp_path / "image.tar"
    _, meta_a = _build(
        a, ctx, base_layout, "--cache-to", "type=inline",
        "-o", f"type=oci,dest={image},tar=false", "-o", f"type=oci,dest={archive},name=app:inline",
    )
    index = json.loads((image / "index.json").read_text())
    manifest = json.loads((image / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((image / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    assert {r["key"] for r in config["shipyard.cache.v0"]["records"]} >= {_steps(meta_a)[FINAL_RUN]["cache_key"]}

    proc, meta_b = _build(
        b, ctx, base_layout, "--cache-from", f"type=local,src={image}", "--cache-to", "type=inline", "-t", "app:inline"
    )
    assert _executed(meta_b) == [], proc.stderr
    assert _steps(meta_b)[FINAL_RUN]["cache_source"] == f"local:{image}"
    # the same image, inline cache included: nothing about B's machine leaked into it
    assert meta_b["containerimage.config.digest"] == meta_a["containerimage.config.digest"]

    # an image of the local store works as a cache source too (docker-image://): loaded, not built here
    c = _state(tmp_path, "C", env)
    c.run("load", "-i", str(archive))
    proc, meta_c = _build(c, ctx, base_layout, "--cache-from", "docker-image://app:inline")
    assert _executed(meta_c) == [], proc.stderr
    assert _steps(meta_c)[FINAL_RUN]["cache_source"] == "image:app:inline"


def test_corrupt_blob_is_refused_and_the_step_runs(tmp_path: Path, base_layout: Path, env: dict[str, str]) -> None:
    a, b = _state(tmp_path, "A", env), _state(tmp_path, "B", env)
    ctx = _project(tmp_path / "ctx")
    cache = tmp_path / "cache"
    _, meta_a = _build(a, ctx, base_layout, "--cache-to", f"type=local,dest={cache},mode=max")
    config = _cache_config(cache)
    keys = {s["name"]: s["cache_key"] for s in meta_a["shipyard.steps"]}
    top_blob = _record_blobs(config, keys[FINAL_RUN])[-1]
    path = cache / "blobs" / "sha256" / top_blob[7:]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))

    out = tmp_path / "out"
    proc, meta_b = _build(b, ctx, base_layout, "--cache-from", f"type=local,src={cache}", "-o", f"type=local,dest={out}")
    assert _executed(meta_b) == [FINAL_RUN], proc.stderr
    assert "WARNING: cache from local:" in proc.stderr and top_blob in proc.stderr
    assert _steps(meta_b)["[stage-2 3/4] COPY --from=other /other.txt /final/other.txt"]["cache_source"] == f"local:{cache}"
    assert not _stored(b, top_blob)  # nothing stored under the digest it did not match
    assert (out / "final" / "list.txt").read_text() == "built.txt\nlist.txt\nother.txt\n"


def test_bad_cache_flags_are_usage_errors(tmp_path: Path, env: dict[str, str]) -> None:
    sy = _state(tmp_path, "A", env)
    ctx = _project(tmp_path / "ctx")
    for flag, value, message in (
        ("--cache-to", "type=inline,mode=max", "mode=max"),
        ("--cache-to", "type=local", "dest="),
        ("--cache-from", "type=s3,bucket=x", "type must be"),
    ):
        proc = sy.run("build", flag, value, str(ctx), check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    # a cache that is not there is a warning, not a failure (as in buildx)
    scratch = write(tmp_path / "scratch" / "Dockerfile", "FROM scratch\nCOPY Dockerfile /\n").parent
    proc, meta = sy.build(scratch, "--cache-from", f"type=local,src={tmp_path / 'missing'}")
    assert "WARNING: cache local:" in proc.stderr and "not imported" in proc.stderr
    assert _executed(meta) == ["[2/2] COPY Dockerfile /"]
