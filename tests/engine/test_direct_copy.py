"""Direct COPY planning against a base tree, and the file-reuse oracle."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cache.index import CacheIndex
from engine.fs.selection import select_sources
from engine.graph.ops import CopyAction
from engine.solver.direct_copy import LayerReuse, lineage_of, plan_direct


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    base, ctx = tmp_path / "base", tmp_path / "ctx"
    (base / "opt").mkdir(parents=True)
    (base / "app" / "conf").mkdir(parents=True)
    os.chmod(base / "app" / "conf", 0o700)
    (base / "app" / "requirements.txt").write_text("flask\n")
    (base / "etc").mkdir()
    os.symlink("/opt", base / "link")
    (base / "file").write_text("x")
    (ctx / "conf").mkdir(parents=True)
    (ctx / "conf" / "a.ini").write_text("a")
    (ctx / "main.py").write_text("print()")
    return base, ctx


def _plan(base: Path, ctx: Path, src: str, dest: str):  # type: ignore[no-untyped-def]
    action = CopyAction(1, (src,), dest)
    return plan_direct(str(base), action, select_sources(str(ctx), src))


def test_new_destination_recreates_existing_ancestors(trees: tuple[Path, Path]) -> None:
    base, ctx = trees
    plan = _plan(base, ctx, "/", "/opt/service/")
    assert plan is not None
    assert [(p.path, p.above_dest) for p in plan] == [("/opt", False)]  # /opt gains a child: not restored


def test_existing_destination_with_matching_dirs_is_direct(trees: tuple[Path, Path]) -> None:
    base, ctx = trees
    plan = _plan(base, ctx, "/", "/app/")
    assert plan is not None
    assert {p.path for p in plan} == {"/app", "/app/conf"}  # conf keeps the base's 0700


def test_symlink_or_file_on_the_way_falls_back(trees: tuple[Path, Path]) -> None:
    base, ctx = trees
    assert _plan(base, ctx, "/", "/link/sub/") is None
    assert _plan(base, ctx, "/", "/file/sub/") is None


def test_type_conflict_under_the_destination_falls_back(trees: tuple[Path, Path]) -> None:
    base, ctx = trees
    (base / "app" / "main.py").mkdir()  # base has a dir where the copy puts a file
    assert _plan(base, ctx, "/", "/app/") is None


def test_file_onto_file_is_direct_but_file_onto_dir_is_not(trees: tuple[Path, Path]) -> None:
    base, ctx = trees
    assert _plan(base, ctx, "/main.py", "/file") == []
    assert _plan(base, ctx, "/main.py", "/etc") is not None  # an existing dir: lands in it
    assert [p.path for p in _plan(base, ctx, "/main.py", "/etc")] == ["/etc"]


def test_reuse_only_untouched_and_settled_sources(tmp_path: Path) -> None:
    index = CacheIndex(tmp_path / "index.db")
    index.add_snapshot(None, "layerdir", "overlay")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    old, fresh = ctx / "old.txt", ctx / "fresh.txt"
    old.write_text("old")
    fresh.write_text("fresh")
    past = time.time_ns() - 10**10
    os.utime(old, ns=(past, past))
    lineage = lineage_of(CopyAction(1, ("/",), "/src/"), str(ctx))
    first = LayerReuse(index, str(tmp_path / "layers"), lineage, str(ctx))
    for path in (old, fresh):
        first.copied(str(path), "/layers/layerdir/fs/src/" + path.name, os.stat(path))
    first.started_ns = time.time_ns() + 10**9  # pretend the copy happened a second later
    layer_id = index.snapshot(1).layer.id
    first.record("/layers/layerdir/fs", layer_id)
    second = LayerReuse(index, str(tmp_path / "layers"), lineage, str(ctx))
    assert second.candidate(str(old), os.stat(old)) == str(tmp_path / "layers" / "layerdir" / "fs" / "src" / "old.txt")
    old.write_text("OLD")  # touched: never reused
    assert second.candidate(str(old), os.stat(old)) is None
    # recorded while the file was freshly written (within the granularity): not trusted
    racy = LayerReuse(index, str(tmp_path / "layers"), lineage, str(ctx))
    racy._previous = {k: (*v[:-1], os.stat(fresh).st_ctime_ns) for k, v in second._previous.items()}
    assert racy.candidate(str(fresh), os.stat(fresh)) is None
