"""The bake executor on real runc: one solve, parallel targets, result trees, outputs, entitlements."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import pytest

from engine.bake.executor import (
    BakeOptions,
    EntitlementNotGranted,
    open_engine,
    run_bake,
)
from engine.progress.events import BuildPlanned, EventBus, VertexStarted
from frontends.yaml.model import BakeFile, OutputSpec, StepSpec, TargetSpec
from tests.e2e.conftest import make_shipyard


@pytest.fixture
def root(tmp_path: Path, busybox_tar: Path) -> Path:
    make_shipyard(tmp_path / "state", busybox_tar, "runc")
    return tmp_path / "state"


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import subprocess

    from tests.helpers import make_busybox_rootfs

    rootfs = make_busybox_rootfs(tmp_path_factory.mktemp("bbroot-bake") / "rootfs")
    tar = rootfs.parent / "busybox.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
    return tar


def steps(*items: str | tuple[str, object]) -> tuple[StepSpec, ...]:
    out = [StepSpec("from", "busybox:local", location="build.yaml:1:1")]
    for i, item in enumerate(items, start=2):
        kind, value = item if isinstance(item, tuple) else ("run", item)
        out.append(StepSpec(kind, value, location=f"build.yaml:{i}:9"))
    return tuple(out)


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def __call__(self, event: object) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]


def bake(root: Path, bakefile: BakeFile, *names: str, **options) -> tuple[dict, Recorder]:  # type: ignore[no-untyped-def]
    engine = open_engine(root, "runc")
    bus = EventBus()
    recorder = Recorder()
    bus.subscribe(recorder)
    try:
        result = run_bake(bakefile, BakeOptions(names=names, cwd=str(root.parent), **options), engine, bus)
    finally:
        engine.close()
    return result.metadata(), recorder


def bakefile(tmp_path: Path, *targets: TargetSpec) -> BakeFile:
    return BakeFile((str(tmp_path / "build.yaml"),), {t.name: t for t in targets}, {"default": tuple(t.name for t in targets)}, {})


def test_independent_targets_build_in_parallel_in_one_solve(root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    targets = [TargetSpec(f"t{i}", str(ctx), steps=steps(f"sleep 1 && echo {i} > /out")) for i in range(3)]
    started = time.monotonic()
    meta, events = bake(root, bakefile(tmp_path, *targets))
    elapsed = time.monotonic() - started
    assert len(events.of(BuildPlanned)) == 1 and len(events.of(VertexStarted)) == 3
    assert elapsed < 2.5, f"three independent 1 s targets took {elapsed:.1f}s"
    assert all(not m.get("shipyard.skipped") for m in meta.values())


def test_result_trees_export_as_directories_and_tars_and_missing_outputs_rebuild(root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    reports, tarball = tmp_path / "reports", tmp_path / "out" / "tree.tar"
    target = TargetSpec(
        "tests",
        str(ctx),
        steps=steps("mkdir -p /out/sub && echo ok > /out/sub/report.txt && echo top > /out/top"),
        result="/out",
        outputs=(OutputSpec("local", (("dest", str(reports)), ("from", "/sub"))), OutputSpec("tar", (("dest", str(tarball)),))),
    )
    meta, _ = bake(root, bakefile(tmp_path, target))
    assert meta["tests"]["shipyard.result"] == "/out"
    assert (reports / "report.txt").read_text() == "ok\n" and not (reports / "top").exists()
    with tarfile.open(tarball) as tar:
        assert sorted(tar.getnames()) == ["sub", "sub/report.txt", "top"]
    again, _ = bake(root, bakefile(tmp_path, target))
    assert again["tests"]["shipyard.skipped"] is True
    (reports / ".shipyard-bake-stamp").unlink()
    rebuilt, events = bake(root, bakefile(tmp_path, target))
    assert "shipyard.skipped" not in rebuilt["tests"] and events.of(VertexStarted) == []  # re-exported from the cache
    assert (reports / ".shipyard-bake-stamp").exists()


def test_image_outputs_names_and_no_cache(root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("hello\n")
    archive = tmp_path / "img.tar"
    target = TargetSpec(
        "img",
        str(ctx),
        steps=steps(("copy", {"src": ["f.txt"], "dest": "/"}), "cat /f.txt > /g.txt", ("cmd", ["cat", "/g.txt"])),
        tags=("img:one",),
        outputs=(OutputSpec("image", (("name", "img:two"),)), OutputSpec("docker", (("dest", str(archive)),))),
    )
    meta, _ = bake(root, bakefile(tmp_path, target))
    digest = meta["img"]["containerimage.digest"]
    from cache.index import CacheIndex

    index = CacheIndex(root / "index.db")
    assert index.get_image("docker.io/library/img:one").manifest == digest  # type: ignore[union-attr]
    assert index.get_image("docker.io/library/img:two").manifest == digest  # type: ignore[union-attr]
    index.close()
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames()
    assert bake(root, bakefile(tmp_path, target))[0]["img"]["shipyard.skipped"] is True
    forced, events = bake(root, bakefile(tmp_path, target), no_cache=True)
    assert "shipyard.skipped" not in forced["img"] and len(events.of(VertexStarted)) == 2


def test_a_run_needing_an_entitlement_must_be_requested_and_granted(root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    host = StepSpec("run", "true", network="host", location="build.yaml:7:9")
    quiet = TargetSpec("quiet", str(ctx), steps=steps() + (host,))
    with pytest.raises(EntitlementNotGranted, match=r'^build.yaml:7:9: target quiet: RUN --network=host needs the "network.host" entitlement \(add network.host to the target'):
        bake(root, bakefile(tmp_path, quiet), allow=frozenset({"network.host"}))
    asks = TargetSpec("asks", str(ctx), steps=steps() + (host,), entitlements=("network.host",), location="build.yaml:5:3")
    with pytest.raises(EntitlementNotGranted, match="target asks requests network.host, which the command line did not grant"):
        bake(root, bakefile(tmp_path, asks))
    meta, _ = bake(root, bakefile(tmp_path, asks), allow=frozenset({"network.host"}))
    assert not meta["asks"]["shipyard.steps"][-1]["cached"]


def test_a_platform_that_cannot_run_here_is_refused_before_anything_runs(root: Path, tmp_path: Path) -> None:
    target = TargetSpec("arm", str(tmp_path), steps=steps("true"), platforms=("linux/arm64",), location="build.yaml:3:3")
    with pytest.raises(Exception, match=r"^build.yaml:3:3: target arm: platform linux/arm64 cannot be built here"):
        bake(root, bakefile(tmp_path, target))


def test_needs_runs_a_target_only_after_the_one_it_needs_succeeded(root: Path, tmp_path: Path) -> None:
    from engine.bake.executor import build_waves
    from engine.bake.graph import target_graph
    from engine.errors import BuildStepError

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    gate = TargetSpec("gate", str(ctx), steps=steps("sleep 0.3 && exit 3"))
    after = TargetSpec("after", str(ctx), steps=steps("echo after > /after"), needs=("gate",))
    free = TargetSpec("free", str(ctx), steps=steps("echo free > /free"))
    bf = bakefile(tmp_path, gate, after, free)
    assert build_waves(target_graph(bf, []), ["gate", "after", "free"]) == [["gate", "free"], ["after"]]
    engine = open_engine(root, "runc")
    bus = EventBus()
    recorder = Recorder()
    bus.subscribe(recorder)
    try:
        with pytest.raises(BuildStepError, match="exit code 3"):
            run_bake(bf, BakeOptions(cwd=str(tmp_path)), engine, bus)
    finally:
        engine.close()
    started = [e.name for e in recorder.of(VertexStarted)]
    assert any("gate" in n for n in started) and not any("after" in n for n in started)


def test_a_no_cache_target_always_runs_its_own_steps(root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    base = TargetSpec("base", str(ctx), steps=steps("echo base > /base"))
    fresh = TargetSpec("fresh", str(ctx), steps=(StepSpec("from", "base"), StepSpec("run", "date +%s%N > /now")), contexts=(("base", "target:base"),), no_cache=True)
    bake(root, bakefile(tmp_path, base, fresh))
    meta, events = bake(root, bakefile(tmp_path, base, fresh))
    assert meta["base"]["shipyard.skipped"] is True and "shipyard.skipped" not in meta["fresh"]
    assert [e.name for e in events.of(VertexStarted)] == ["[fresh 2/2] RUN date +%s%N > /now"]
